"""JetStream message storage: the stream stores, consumer state and their value types.

``MemStore`` keeps a stream in memory, ``LmdbStore`` in an LMDB environment per stream (durable,
group-committed, readable from other processes through ``LmdbReader``). Both implement the
same ``StreamStore`` API, which mirrors the Go server's ``StreamStore`` interface
(server/store.go) method by method; see base.py for the shared semantics.
``RaftLmdbStore`` (raftlmdb.py) is the worker's LMDB store when the raft process writes:
same layout, writes proposed to the raft process, reads from LMDB overlaid with them. The reads
of that layout are written once, in lmdbread.py; crypt.py is encryption at rest of file
streams (``jetstream { key, cipher, prev_key }``).
"""

from .base import StorageUpdateHandler, StreamStore
from .consumerstore import ConsumerStore
from .lmdbstore import DEFAULT_MAP_SIZE, LmdbReader, LmdbStore
from .memstore import MemStore
from .types import (
    ACK_ALL,
    ACK_EXPLICIT,
    ACK_FLOW_CONTROL,
    ACK_NONE,
    DISCARD_NEW,
    DISCARD_OLD,
    FILE_STORAGE,
    MEMORY_STORAGE,
    ConsumerState,
    ConsumerStoreConfig,
    ErrBadConsumerState,
    ErrMaxBytes,
    ErrMaxMsgs,
    ErrMaxMsgsPerSubject,
    ErrMsgTooLarge,
    ErrNoAckPolicy,
    ErrSequenceMismatch,
    ErrStoreClosed,
    ErrStoreEOF,
    ErrStoreMsgNotFound,
    ErrStoreOldUpdate,
    ErrTooManyResults,
    Pending,
    SequencePair,
    SimpleState,
    StoreConfig,
    StoredMsg,
    StoreError,
    StreamState,
    file_store_msg_size,
    mem_store_msg_size,
)

__all__ = [
    "ACK_ALL",
    "ACK_EXPLICIT",
    "ACK_FLOW_CONTROL",
    "ACK_NONE",
    "DEFAULT_MAP_SIZE",
    "DISCARD_NEW",
    "DISCARD_OLD",
    "FILE_STORAGE",
    "MEMORY_STORAGE",
    "ConsumerState",
    "ConsumerStore",
    "ConsumerStoreConfig",
    "ErrBadConsumerState",
    "ErrMaxBytes",
    "ErrMaxMsgs",
    "ErrMaxMsgsPerSubject",
    "ErrMsgTooLarge",
    "ErrNoAckPolicy",
    "ErrSequenceMismatch",
    "ErrStoreClosed",
    "ErrStoreEOF",
    "ErrStoreMsgNotFound",
    "ErrStoreOldUpdate",
    "ErrTooManyResults",
    "LmdbReader",
    "LmdbStore",
    "MemStore",
    "Pending",
    "SequencePair",
    "SimpleState",
    "StorageUpdateHandler",
    "StoreConfig",
    "StoreError",
    "StoredMsg",
    "StreamState",
    "StreamStore",
    "file_store_msg_size",
    "mem_store_msg_size",
]
