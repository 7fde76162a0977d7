"""The NATS client protocol without I/O: parsers that turn bytes into events, encoders
that turn frames into bytes, headers and subject rules."""
