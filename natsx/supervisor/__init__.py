"""The supervisor process (the arbiter) that owns the listeners and the children."""
