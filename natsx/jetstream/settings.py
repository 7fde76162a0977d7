"""Server-wide JetStream settings: the ``jetstream {}`` block resolved as Go resolves it.

Theory of operation
-------------------
``Settings.from_options`` turns ``Options.jetstream_config`` (parsed by
``natsx.server.config_options._jetstream``) into what Go keeps in ``JetStreamConfig`` and
``JSLimitOpts`` (server/jetstream.go ``dynJetStreamConfig``): the store directory, the
server's memory and file limits (when not configured, 75% of the machine's memory and 75% of
the disk space available under the store directory, as in Go), the domain, the sync policy
and the server limits that cap consumers and streams of every account (``max_ack_pending``,
``max_request_batch``, ``duplicate_window``) and atomic batches (``batch {}``). Pure data: nothing here does I/O except reading
the machine's memory size and the free space once.

natsx syncs every commit by default (``sync_always``), unlike Go's two-minute lazy sync:
an explicit ``sync_interval: <duration>`` is the only way to trade durability for speed.
"""
from __future__ import annotations

import os
import tempfile

import attrs

MAX_STORE_DEFAULT = 1 << 40         # Go JetStreamMaxStoreDefault (1TB), when statvfs fails
MAX_MEM_DEFAULT = 256 << 20         # Go JetStreamMaxMemDefault, when the RAM size is unknown


def system_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def disk_available(path: str) -> int:
    """Go's diskAvailable: 75% of the space available under ``path``."""
    try:
        os.makedirs(path, exist_ok=True)
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize // 4 * 3
    except OSError:
        return MAX_STORE_DEFAULT


@attrs.define
class ServerLimits:
    """Go's JSLimitOpts (0 = not set)."""

    max_ack_pending: int = 0
    max_request_batch: int = 0
    max_ha_assets: int = 0
    duplicates: int = 0              # ns
    # ``limits { batch {} }``: atomic batch publish (natsx.jetstream.batching).
    max_batch_inflight_per_stream: int = 0
    max_batch_inflight_total: int = 0
    max_batch_size: int = 0
    max_batch_timeout: int = 0       # ns


def _keyring(cfg: dict):
    """``key``/``prev_key``/``cipher`` as a Keyring (natsx.storage.crypt), or None."""
    if not cfg.get("key"):
        return None
    from natsx.storage.crypt import Keyring

    return Keyring(cfg["key"], cfg.get("cipher") or "chachapoly", cfg.get("prev_key") or "")


@attrs.define
class Settings:
    store_dir: str
    max_memory: int
    max_store: int
    domain: str = ""
    sync_always: bool = True
    sync_interval: int = 0           # ns; only used when not sync_always
    strict: bool = True
    # Go sets CompressOK only when both limits are configured (>0): otherwise its
    # dynJetStreamConfig builds the config afresh, without it.
    compress_ok: bool = False
    unique_tag: str = ""
    # The ingest queue of every stream and the API queues (natsx.jetstream.queues).
    max_buffered_msgs: int = 0
    max_buffered_size: int = 0
    request_queue_limit: int = 0
    info_queue_limit: int = 0
    limits: ServerLimits = attrs.Factory(ServerLimits)
    # Encryption at rest of file streams (natsx.storage.crypt), None when no key is set.
    keyring: object = attrs.field(default=None, repr=False)

    @classmethod
    def from_options(cls, options) -> "Settings":
        cfg = getattr(options, "jetstream_config", None) or {}
        base = options.store_dir or os.path.join(tempfile.gettempdir(), "nats")
        store_dir = os.path.join(base, "jetstream")
        compress_ok = (cfg.get("max_store") or 0) > 0 and (cfg.get("max_memory") or 0) > 0
        max_store = cfg.get("max_store", -1)
        if max_store is None or max_store < 0 or (max_store == 0 and "max_store" not in cfg):
            max_store = disk_available(store_dir)
        max_memory = cfg.get("max_memory", -1)
        if max_memory is None or max_memory < 0 or (max_memory == 0 and "max_memory" not in cfg):
            mem = system_memory()
            max_memory = mem // 4 * 3 if mem > 0 else MAX_MEM_DEFAULT
        lim = cfg.get("limits") or {}
        sync_always = cfg.get("sync_always", True)
        interval = cfg.get("sync_interval", 0) or 0
        if not sync_always and interval <= 0:
            sync_always = True
        return cls(store_dir=store_dir, max_memory=max_memory, max_store=max_store,
                   domain=cfg.get("domain", "") or "", sync_always=sync_always,
                   sync_interval=interval, strict=cfg.get("strict", True),
                   compress_ok=compress_ok,
                   unique_tag=cfg.get("unique_tag", "") or "",
                   max_buffered_msgs=cfg.get("max_buffered_msgs", 0) or 0,
                   max_buffered_size=cfg.get("max_buffered_size", 0) or 0,
                   request_queue_limit=cfg.get("request_queue_limit", 0) or 0,
                   info_queue_limit=cfg.get("info_queue_limit", 0) or 0,
                   limits=ServerLimits(max_ack_pending=lim.get("max_ack_pending", 0) or 0,
                                       max_request_batch=lim.get("max_request_batch", 0) or 0,
                                       max_ha_assets=lim.get("max_ha_assets", 0) or 0,
                                       duplicates=lim.get("duplicate_window", 0) or 0,
                                       max_batch_inflight_per_stream=lim.get(
                                           "batch_max_inflight_per_stream", 0) or 0,
                                       max_batch_inflight_total=lim.get(
                                           "batch_max_inflight_total", 0) or 0,
                                       max_batch_size=lim.get("batch_max_msgs", 0) or 0,
                                       max_batch_timeout=lim.get("batch_timeout", 0) or 0),
                   keyring=_keyring(cfg))

    def to_json(self) -> dict:
        """Go's JetStreamConfig JSON (``/jsz`` ``config``, ``$SYS`` JetStream info)."""
        out = {"max_memory": self.max_memory, "max_storage": self.max_store,
               "store_dir": self.store_dir}
        if not self.sync_always and self.sync_interval:
            out["sync_interval"] = self.sync_interval
        else:
            out["sync_always"] = True
        if self.domain:
            out["domain"] = self.domain
        if self.compress_ok:
            out["compress_ok"] = True
        if self.unique_tag:
            out["unique_tag"] = self.unique_tag
        if self.strict:
            out["strict"] = True
        return out

    def limits_json(self) -> dict:
        """Go's JSLimitOpts JSON (``/jsz`` ``limits``): every key omitted when zero."""
        lim = self.limits
        out = {"max_request_batch": lim.max_request_batch,
               "max_ack_pending": lim.max_ack_pending, "max_ha_assets": lim.max_ha_assets,
               "max_duplicate_window": lim.duplicates,
               "max_batch_inflight_per_stream": lim.max_batch_inflight_per_stream,
               "max_batch_inflight_total": lim.max_batch_inflight_total,
               "max_batch_size": lim.max_batch_size, "max_batch_timeout": lim.max_batch_timeout}
        return {k: v for k, v in out.items() if v}
