"""Consumer state storage: delivered and ack-floor sequences, pending acks and redelivery counts.

One ``ConsumerStore`` per consumer, obtained from ``StreamStore.consumer_store(name)``. The
bookkeeping is Go's ``consumerMemStore`` (memstore.go) rule for rule: deliveries add pending
entries (except with ack policy none, where the ack floor follows delivery), acks remove them
and move the ack floor, ack-all acks everything up to the sequence, and replays older than the
ack floor are ignored so a restarted leader can re-apply its log.

Every mutation runs through the owning stream store's write path, so with the LMDB store it is
part of a write transaction (the caller's batch, when one is open) and the encoded state is
written once per transaction. ``encode_consumer``/``decode_consumer`` are that encoding.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Optional

import cbor2

from .types import (
    ACK_ALL,
    ACK_FLOW_CONTROL,
    ACK_NONE,
    ConsumerState,
    ConsumerStoreConfig,
    ErrBadConsumerState,
    ErrNoAckPolicy,
    ErrStoreClosed,
    ErrStoreMsgNotFound,
    ErrStoreOldUpdate,
    Pending,
    SequencePair,
)

if TYPE_CHECKING:
    from .base import StreamStore

__all__ = ["ConsumerStore", "decode_consumer", "encode_consumer"]


def _mutation(fn):
    """Run a consumer mutation inside the stream store's write path."""

    @functools.wraps(fn)
    def method(self: "ConsumerStore", *args, **kwargs):
        if self._closed:
            raise ErrStoreClosed()
        return self._stream._write_call(fn, self, args, kwargs)

    return method


class ConsumerStore:
    """The stored state of one consumer. Not thread-safe: the stream's owner drives it."""

    def __init__(self, stream: "StreamStore", name: str, cfg: ConsumerStoreConfig,
                 state: Optional[ConsumerState] = None) -> None:
        self.name = name
        self._stream = stream
        self._cfg = cfg
        self._state = state.copy() if state is not None else ConsumerState()
        self._closed = False

    @property
    def config(self) -> ConsumerStoreConfig:
        return self._cfg

    # -- reads ----------------------------------------------------------------------------------

    def state(self) -> ConsumerState:
        """A copy of the current state."""
        if self._closed:
            raise ErrStoreClosed()
        return self._state.copy()

    def has_state(self) -> bool:
        s = self._state
        return s.delivered.consumer != 0 or s.delivered.stream != 0

    # -- mutations ------------------------------------------------------------------------------

    @_mutation
    def update_config(self, cfg: ConsumerStoreConfig) -> None:
        self._cfg = cfg
        self._changed()

    @_mutation
    def set_starting(self, sseq: int) -> None:
        s = self._state
        s.delivered = SequencePair(s.delivered.consumer, sseq)
        s.ack_floor = SequencePair(s.ack_floor.consumer, sseq)
        self._changed()

    @_mutation
    def update_starting(self, sseq: int) -> None:
        s = self._state
        if sseq > s.delivered.stream:
            s.delivered = SequencePair(s.delivered.consumer, sseq)
            # With ack none nothing is ever pending, so the floor moves with delivery.
            if self._cfg.ack_policy == ACK_NONE:
                s.ack_floor = SequencePair(s.ack_floor.consumer, sseq)
            self._changed()

    @_mutation
    def reset(self, sseq: int) -> None:
        self._state = ConsumerState(SequencePair(0, sseq), SequencePair(0, sseq))
        self._changed()

    @_mutation
    def update_delivered(self, dseq: int, sseq: int, dc: int, ts: int) -> None:
        """Record delivery ``dseq`` of stream message ``sseq`` (delivery count ``dc``) at ``ts``."""
        s, cfg = self._state, self._cfg
        if dc != 1 and cfg.ack_policy == ACK_NONE:
            raise ErrNoAckPolicy()
        # A leader replaying its log after a restart may hand us deliveries already acked.
        if dseq <= s.ack_floor.consumer:
            return
        if cfg.ack_policy != ACK_NONE:
            if sseq <= s.delivered.stream:
                p = s.pending.get(sseq)
                if p is not None:
                    # A redelivery keeps the original consumer sequence, only the time moves.
                    s.pending[sseq] = Pending(p.sequence, ts)
            else:
                s.pending[sseq] = Pending(dseq, ts)
            if dseq > s.delivered.consumer or sseq > s.delivered.stream:
                s.delivered = SequencePair(max(dseq, s.delivered.consumer),
                                           max(sseq, s.delivered.stream))
            if dc > 1:
                if 0 < cfg.max_deliver < dc:
                    s.pending.pop(sseq, None)
                if s.redelivered.get(sseq, 0) < dc - 1:
                    s.redelivered[sseq] = dc - 1
        else:
            dc_, ds_ = s.delivered.consumer, s.delivered.stream
            ac_, as_ = s.ack_floor.consumer, s.ack_floor.stream
            if dseq > dc_:
                dc_ = ac_ = dseq
            if sseq > ds_:
                ds_ = as_ = sseq
            s.delivered = SequencePair(dc_, ds_)
            s.ack_floor = SequencePair(ac_, as_)
        self._changed()

    @_mutation
    def update_acks(self, dseq: int, sseq: int) -> None:
        """Record the ack of delivery ``dseq`` (stream sequence ``sseq``)."""
        s, cfg = self._state, self._cfg
        if cfg.ack_policy == ACK_NONE:
            raise ErrNoAckPolicy()
        # Go drops the redelivery count before anything else, even for an ack it then rejects.
        if s.redelivered.pop(sseq, None) is not None:
            self._changed()
        if dseq <= s.ack_floor.consumer:
            return
        if sseq not in s.pending:
            raise ErrStoreMsgNotFound()
        self._changed()

        if cfg.ack_policy in (ACK_ALL, ACK_FLOW_CONTROL):
            sgap = sseq - s.ack_floor.stream
            s.ack_floor = SequencePair(dseq, sseq)
            if sgap > len(s.pending):
                for seq in [q for q in s.pending if q <= sseq]:
                    del s.pending[seq]
                    s.redelivered.pop(seq, None)
            else:
                seq = sseq
                while seq > sseq - sgap and s.pending:
                    s.pending.pop(seq, None)
                    s.redelivered.pop(seq, None)
                    seq -= 1
            return

        p = s.pending.pop(sseq)
        if dseq > p.sequence > 0:
            dseq = p.sequence  # acks are credited to the original delivery
        if not s.pending:
            s.ack_floor = s.delivered
        elif dseq == s.ack_floor.consumer + 1:
            floor = SequencePair(dseq, sseq)
            if s.delivered.consumer > dseq:
                # The floor stops just below the oldest delivery still pending.
                later = [q for q in s.pending if q > sseq]
                if later:
                    nxt = min(later)
                    np = s.pending[nxt]
                    if np.sequence > 0:
                        floor = SequencePair(np.sequence - 1, nxt - 1)
            s.ack_floor = floor

    @_mutation
    def update(self, state: ConsumerState) -> None:
        """Replace the state, refusing one older than what is held (ErrStoreOldUpdate)."""
        self._check(state)
        s = self._state
        if state.delivered.consumer < s.delivered.consumer or \
                state.ack_floor.stream < s.ack_floor.stream:
            raise ErrStoreOldUpdate()
        self._state = state.copy()
        self._changed()

    @_mutation
    def force_update(self, state: ConsumerState) -> None:
        """Replace the state even if it is older than what is held."""
        self._check(state)
        self._state = state.copy()
        self._changed()

    @_mutation
    def remove_redelivered_below(self, seq: int) -> None:
        if seq == 0:
            return
        s = self._state
        for q in [q for q in s.redelivered if q < seq]:
            del s.redelivered[q]
        self._changed()

    def stop(self) -> None:
        """Close this handle; the stored state stays for the next ``consumer_store(name)``."""
        if not self._closed:
            self._stream._write_call(type(self)._detach, self, (False,), {})

    def delete(self) -> None:
        """Close this handle and forget the stored state."""
        if not self._closed:
            self._stream._write_call(type(self)._detach, self, (True,), {})

    # -- internals ------------------------------------------------------------------------------

    def _detach(self, delete: bool) -> None:
        self._closed = True
        self._stream._consumer_detached(self, delete)

    def _changed(self) -> None:
        self._stream._consumer_changed(self)

    def _restore(self, cfg: Optional[ConsumerStoreConfig], state: Optional[ConsumerState]) -> None:
        """Return to the committed state after the stream store rolled a transaction back."""
        if cfg is not None:
            self._cfg = cfg
        self._state = state.copy() if state is not None else ConsumerState()

    @staticmethod
    def _check(state: ConsumerState) -> None:
        if state.ack_floor.consumer > state.delivered.consumer:
            raise ErrBadConsumerState("bad ack floor for consumer")
        if state.ack_floor.stream > state.delivered.stream:
            raise ErrBadConsumerState("bad ack floor for stream")
        for seq in state.pending:
            if seq <= state.ack_floor.stream or seq > state.delivered.stream:
                raise ErrBadConsumerState(f"bad pending entry, sequence [{seq}] out of range")


def encode_consumer(cfg: ConsumerStoreConfig, state: ConsumerState) -> bytes:
    return cbor2.dumps({
        "ack_policy": cfg.ack_policy,
        "max_deliver": cfg.max_deliver,
        "delivered": [state.delivered.consumer, state.delivered.stream],
        "ack_floor": [state.ack_floor.consumer, state.ack_floor.stream],
        "pending": [[sseq, p.sequence, p.timestamp] for sseq, p in state.pending.items()],
        "redelivered": [[sseq, n] for sseq, n in state.redelivered.items()],
    })


def decode_consumer(data: bytes) -> tuple[ConsumerStoreConfig, ConsumerState]:
    d = cbor2.loads(data)
    cfg = ConsumerStoreConfig(d["ack_policy"], d["max_deliver"])
    state = ConsumerState(
        SequencePair(*d["delivered"]),
        SequencePair(*d["ack_floor"]),
        {sseq: Pending(dseq, ts) for sseq, dseq, ts in d["pending"]},
        {sseq: n for sseq, n in d["redelivered"]},
    )
    return cfg, state
