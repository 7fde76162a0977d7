"""The worker runtime: one complete NATS server for the connections a worker accepted."""
