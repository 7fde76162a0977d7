"""The raft process: JetStream's single LMDB writer, and the workers' channel to it.

``server`` is the process (forked by the supervisor when JetStream is on), ``client`` the
worker's end, ``protocol`` the frames between them. The consensus core is ``natsx.raft``.
"""
