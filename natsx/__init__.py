"""natsx: a NATS server."""

__version__ = "0.1.0"
#: The nats-server release whose client-visible behaviour natsx follows.
SERVER_VERSION = "2.12.0"
