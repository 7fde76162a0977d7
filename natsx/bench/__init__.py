"""natsx-bench: the bundled benchmark for natsx, the Go nats-server or any NATS URL.

``cli`` is the command line; ``workloads`` the measured scenarios; ``loops`` the socket
loops around the compiled hot path (``natsx._speedups.benchclient``); ``conn`` the
handshake and slow path; ``servers`` starts the servers ``--compare`` measures; ``results``,
``histogram`` and ``report`` hold and present what was measured.
"""
