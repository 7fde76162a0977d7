"""NATS message headers: ``NATS/1.0[ <code>[ <description>]]\\r\\n(Key: Value\\r\\n)*\\r\\n``."""
from __future__ import annotations

import attrs

PREFIX = b"NATS/1.0"


@attrs.frozen
class Headers:
    status: int | None = None
    description: str = ""
    fields: tuple = ()        # ((key, value), ...) in wire order; keys keep their case

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.fields:
            if k == key:
                return v
        lk = key.lower()
        for k, v in self.fields:
            if k.lower() == lk:
                return v
        return default

    def get_all(self, key: str) -> list[str]:
        return [v for k, v in self.fields if k == key]


def parse(block: bytes) -> Headers:
    """Parses a header block; raises ValueError when it does not start with NATS/1.0."""
    if not block.startswith(PREFIX):
        raise ValueError("header block does not start with NATS/1.0")
    lines = block.split(b"\r\n")
    first = lines[0][len(PREFIX):].strip()
    status = None
    desc = ""
    if first:
        code, _, rest = first.partition(b" ")
        if len(code) == 3 and code.isdigit():
            status = int(code)
            desc = rest.strip().decode("utf-8", "replace")
    fields = []
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(b":")
        if not sep:
            continue
        fields.append((key.strip().decode("utf-8", "replace"), value.strip().decode("utf-8", "replace")))
    return Headers(status, desc, tuple(fields))


def encode(fields=(), status: int | None = None, description: str = "") -> bytes:
    """Builds a header block from ``(key, value)`` pairs or a mapping."""
    if isinstance(fields, dict):
        fields = fields.items()
    head = PREFIX
    if status is not None:
        head += b" %d" % status
        if description:
            head += b" " + description.encode()
    out = [head]
    for k, v in fields:
        out.append(f"{k}: {v}".encode())
    return b"\r\n".join(out) + b"\r\n\r\n"
