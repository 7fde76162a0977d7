"""Subject mappings and transforms: Go's server/subject_transform.go and Account mappings.

Theory of operation
-------------------
A ``Transform`` rewrites a subject that matches its source onto its destination. The
destination is a list of tokens, each a literal, a wildcard reference (``$N`` or
``{{wildcard(N)}}``) or a function of the source's wildcard tokens: ``partition``
(FNV-1a hash of tokens modulo N), ``splitFromLeft``/``splitFromRight`` (split one token in
two at a position), ``sliceFromLeft``/``sliceFromRight`` (cut a token in slices of a size),
``split`` (split a token on a delimiter), ``left``/``right`` (keep the first/last N bytes)
and ``random`` (a random number below N). Everything works on bytes, as Go's strings do.
The errors are Go's, word for word (``MappingError``).

A ``Mapping`` is one account ``mappings`` entry: a source and its weighted destinations
(Go's AddWeightedMappings: weights at most 100 in total, the source itself added for what
is left unless it is listed explicitly, in which case the rest is dropped). Entries scoped
to a ``cluster`` are kept apart; a server without a cluster name uses the others (Go's
selectMappedSubject falls back to them).

``Mappings`` is an account's ordered list. ``plan(subject)`` is what the compiled core
caches per distinct subject (``Mapper`` in natsx._speedups._core and its twin): None when
no mapping applies, the mapped subject when the choice is fixed, else ``(weights, outs)``
with cumulative weights and, per destination, the mapped subject or (for ``random()``) a
callable evaluated per message. A destination no weight selects maps to ``b""``: the
message then reaches nobody, as in Go. ``select`` is the reference the plan must agree
with. Nothing here does I/O.
"""
from __future__ import annotations

import random as _random
import re
from typing import Iterable

import attrs

from natsx.sublist import is_subset_match, is_valid_subject

__all__ = ["MappingError", "Transform", "MapDest", "Mapping", "Mappings", "validate_mapping",
           "new_transform", "parse_function"]

# Transform types (Go's enum), in its order.
NO_TRANSFORM, BAD, PARTITION, WILDCARD, SPLIT_LEFT, SPLIT_RIGHT, SLICE_LEFT, SLICE_RIGHT, \
    SPLIT, LEFT, RIGHT, RANDOM = range(12)

ERR_BAD_SUBJECT = "invalid subject"
_E = "invalid mapping destination"
ERR_INVALID_TRANSFORM = _E + ": invalid transform"
ERR_NOT_ALL_WILDCARDS = _E + ": not using all of the token wildcard(s)"
ERR_UNKNOWN_FUNCTION = _E + ": unknown function"
ERR_INDEX_OUT_OF_RANGE = _E + ": wildcard index out of range"
ERR_NOT_ENOUGH_ARGS = _E + ": not enough arguments passed to the function"
ERR_INVALID_ARG = _E + ": function argument is invalid or in the wrong format"
ERR_TOO_MANY_ARGS = _E + ": too many arguments passed to the function"
ERR_NOT_FOR_IMPORT = (_E + ": the only mapping function allowed for import transforms is "
                      "{{Wildcard()}}")

_INT32_MAX = (1 << 31) - 1


class MappingError(ValueError):
    """Go's mappingDestinationErr (``<err> in <token>``) or a plain error text."""

    def __init__(self, err: str, token: str = "") -> None:
        self.err = err
        self.token = token
        super().__init__(f"{err} in {token}" if token else err)


def _fn(name: str) -> re.Pattern:
    # Go: `{{\s*[pP]artition\s*\((.*)\)\s*}}` — only the first letter of each word may
    # change case; matched anywhere in the token.
    pat = "".join(f"[{c.lower()}{c.upper()}]" if c.isupper() or i == 0 else c
                  for i, c in enumerate(name))
    return re.compile(r"\{\{\s*" + pat + r"\s*\((.*)\)\s*\}\}")


_RE = {
    "wildcard": _fn("wildcard"),
    "partition": _fn("partition"),
    "splitFromLeft": _fn("splitFromLeft"),
    "splitFromRight": _fn("splitFromRight"),
    "sliceFromLeft": _fn("sliceFromLeft"),
    "sliceFromRight": _fn("sliceFromRight"),
    "split": _fn("split"),
    "left": _fn("left"),
    "right": _fn("right"),
    "random": _fn("random"),
}
_COMMA = re.compile(r",\s*")
_ATOI = re.compile(r"[+-]?[0-9]+\Z")


def _args(name: str, token: str) -> list[str] | None:
    m = _RE[name].search(token)
    return None if m is None else _COMMA.split(m.group(1))


def _atoi(s: str) -> int | None:
    # strconv.Atoi after strings.Trim(s, " ")
    s = s.strip(" ")
    if not _ATOI.match(s):
        return None
    v = int(s)
    return v if -(1 << 63) <= v < (1 << 63) else None


def _index_int(token: str, args: list[str], kind: int) -> tuple:
    if len(args) < 2:
        raise MappingError(ERR_NOT_ENOUGH_ARGS, token)
    if len(args) > 2:
        raise MappingError(ERR_TOO_MANY_ARGS, token)
    i = _atoi(args[0])
    n = _atoi(args[1])
    if i is None or n is None or not -(1 << 31) <= n <= _INT32_MAX:
        raise MappingError(ERR_INVALID_ARG, token)
    return kind, [i], n, ""


def parse_function(token: str) -> tuple:
    """Go's indexPlaceHolders: (type, wildcard indexes, int arg, string arg)."""
    n = len(token)
    if n > 1:
        if token[0] == "$":
            tp = _atoi(token[1:]) if token[1:] == token[1:].strip(" ") else None
            if tp is None:
                return NO_TRANSFORM, [-1], -1, ""
            return WILDCARD, [tp], -1, ""
        if n > 4 and token.startswith("{{") and token.endswith("}}"):
            args = _args("wildcard", token)
            if args is not None:
                if len(args) == 1 and args[0] == "":
                    raise MappingError(ERR_NOT_ENOUGH_ARGS, token)
                if len(args) == 1:
                    i = _atoi(args[0])
                    if i is None:
                        raise MappingError(ERR_INVALID_ARG, token)
                    return WILDCARD, [i], -1, ""
                raise MappingError(ERR_TOO_MANY_ARGS, token)
            args = _args("partition", token)
            if args is not None:
                count = _atoi(args[0])
                if count is None or count > _INT32_MAX:
                    raise MappingError(ERR_INVALID_ARG, token)
                idx = []
                for a in args[1:]:
                    i = _atoi(a)
                    if i is None:
                        raise MappingError(ERR_INVALID_ARG, token)
                    idx.append(i)
                return PARTITION, idx, count, ""
            for name, kind in (("splitFromLeft", SPLIT_LEFT), ("splitFromRight", SPLIT_RIGHT),
                               ("sliceFromLeft", SLICE_LEFT), ("sliceFromRight", SLICE_RIGHT),
                               ("right", RIGHT), ("left", LEFT)):
                args = _args(name, token)
                if args is not None:
                    return _index_int(token, args, kind)
            args = _args("split", token)
            if args is not None:
                if len(args) < 2:
                    raise MappingError(ERR_NOT_ENOUGH_ARGS, token)
                if len(args) > 2:
                    raise MappingError(ERR_TOO_MANY_ARGS, token)
                i = _atoi(args[0])
                if i is None or " " in args[1] or "." in args[1]:
                    raise MappingError(ERR_INVALID_ARG, token)
                return SPLIT, [i], -1, args[1]
            args = _args("random", token)
            if args is not None:
                if len(args) != 1:
                    raise MappingError(ERR_NOT_ENOUGH_ARGS, token)
                count = _atoi(args[0])
                if count is None or count > _INT32_MAX:
                    raise MappingError(ERR_INVALID_ARG, token)
                return RANDOM, [], count, ""
            raise MappingError(ERR_UNKNOWN_FUNCTION, token)
    return NO_TRANSFORM, [-1], -1, ""


def _subject_info(subject: str) -> tuple[bool, list[str], int, bool]:
    if not subject:
        return False, [], 0, False
    npwcs = 0
    fwc = False
    tokens = subject.split(".")
    for t in tokens:
        if not t or fwc:
            return False, [], 0, False
        if t == ">":
            fwc = True
        elif t == "*":
            npwcs += 1
    return True, tokens, npwcs, fwc


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


class Transform:
    """Go's subjectTransform: ``src`` onto ``dest`` (``new_transform`` builds one)."""

    __slots__ = ("src", "dest", "dtoks", "stoks", "types", "indexes", "ints", "strs",
                 "has_random", "_dest_b")

    def __init__(self, src: str, dest: str, dtoks, stoks, types, indexes, ints, strs) -> None:
        self.src = src
        self.dest = dest
        self.dtoks = [t.encode() for t in dtoks]
        self.stoks = stoks
        self.types = types
        self.indexes = indexes
        self.ints = ints
        self.strs = [s.encode() for s in strs]
        self.has_random = RANDOM in types
        self._dest_b = dest.encode()

    def __repr__(self) -> str:
        return f"Transform({self.src!r} -> {self.dest!r})"

    def match(self, subject: bytes) -> bytes | None:
        """Go's Match: the mapped subject, or None when ``subject`` is not a literal
        subject matching the source."""
        if self.src in (">", "") and self.dest in (">", ""):
            return subject
        tokens = subject.split(b".")
        if any(not t or t in (b"*", b">") or any(c in t for c in b" \t\r\n\x0c")
               for t in tokens):
            return None
        if self.src in ("", ">") or is_subset_match(subject, self.src.encode()):
            return self.transform_tokens(tokens)
        return None

    def transform(self, subject: bytes) -> bytes:
        return self.transform_tokens(subject.split(b"."))

    def transform_tokens(self, tokens: list) -> bytes:
        """Go's TransformTokenizedSubject (``tokens`` matched the source)."""
        types = self.types
        if not types:
            return self._dest_b
        out = bytearray()
        last = len(types) - 1
        ntok = len(tokens)
        for i, kind in enumerate(types):
            if kind == NO_TRANSFORM:
                if self.dtoks[i] == b">":
                    break
                out += self.dtoks[i]
            elif kind == PARTITION:
                idx = self.indexes[i]
                key = b"".join(tokens[j] for j in idx) if idx else b".".join(tokens)
                n = self.ints[i]
                out += b"0" if n == 0 else b"%d" % (_fnv32a(key) % (n & 0xFFFFFFFF))
            elif kind == WILDCARD:
                idx = self.indexes[i]
                if idx and idx[0] < ntok:
                    out += tokens[idx[0]]
            elif kind == RANDOM:
                n = self.ints[i]
                out += b"0" if n == 0 else b"%d" % (_random.getrandbits(31) % abs(n))
            else:
                tok = tokens[self.indexes[i][0]]
                out += _apply(kind, tok, self.ints[i], self.strs[i])
            if i < last:
                out += b"."
        if self.dtoks[-1] == b">":
            first = len(self.stoks) - 1
            out += b".".join(tokens[first:])
        return bytes(out)


def _apply(kind: int, tok: bytes, n: int, sep: bytes) -> bytes:
    size = len(tok)
    if kind == SPLIT_LEFT:
        return tok[:n] + b"." + tok[n:] if 0 < n < size else tok
    if kind == SPLIT_RIGHT:
        return tok[:size - n] + b"." + tok[size - n:] if 0 < n < size else tok
    if kind == SLICE_LEFT:
        if not 0 < n < size:
            return tok
        out = bytearray()
        i = 0
        while i + n <= size:
            if i:
                out += b"."
            out += tok[i:i + n]
            if i + n != size and i + n + n > size:
                out += b"." + tok[i + n:]
                break
            i += n
        return bytes(out)
    if kind == SLICE_RIGHT:
        if not 0 < n < size:
            return tok
        out = bytearray()
        rem = size % n
        if rem:
            out += tok[:rem] + b"."
        i = rem
        while i + n <= size:
            out += tok[i:i + n]
            if i + n < size:
                out += b"."
            i += n
        return bytes(out)
    if kind == SPLIT:
        parts = tok.split(sep) if sep else [tok]
        out = bytearray()
        for j, part in enumerate(parts):
            out += part
            if j < len(parts) - 1 and parts[j + 1] and not (j == 0 and not part):
                out += b"."
        return bytes(out)
    if kind == LEFT:
        return tok[:n] if 0 < n < size else tok
    if kind == RIGHT:
        return tok[size - n:] if 0 < n < size else tok
    return b""


def new_transform(src: str, dest: str, strict: bool = False) -> Transform | None:
    """Go's NewSubjectTransformWithStrict; None for an empty destination.

    Raises:
        MappingError: Go's error.
    """
    if dest == "":
        return None
    if src == "":
        src = ">"
    sv, stokens, npwcs, has_fwc = _subject_info(src)
    dv, dtokens, dnpwcs, d_fwc = _subject_info(dest)
    if not sv or not dv or dnpwcs > 0 or has_fwc != d_fwc:
        raise MappingError(ERR_BAD_SUBJECT)
    types: list = []
    indexes: list = []
    ints: list = []
    strs: list = []
    if npwcs > 0 or has_fwc:
        sti = {}
        for i, t in enumerate(stokens):
            if t == "*":
                sti[len(sti) + 1] = i
        nphs = 0
        for token in dtokens:
            kind, widx, n, s = parse_function(token)
            if strict and kind not in (NO_TRANSFORM, WILDCARD):
                raise MappingError(ERR_NOT_FOR_IMPORT, token)
            if kind == NO_TRANSFORM:
                types.append(NO_TRANSFORM), indexes.append([-1]), ints.append(-1), strs.append("")
            elif kind == RANDOM:
                types.append(RANDOM), indexes.append([]), ints.append(n), strs.append("")
            else:
                nphs += len(widx)
                stis = []
                for w in widx:
                    if w > npwcs:
                        raise MappingError(ERR_INDEX_OUT_OF_RANGE, f"{token}: [{w}]")
                    stis.append(sti.get(w, 0))
                types.append(kind), indexes.append(stis), ints.append(n), strs.append(s)
        if strict and nphs < npwcs:
            raise MappingError(ERR_NOT_ALL_WILDCARDS, dest)
    else:
        for token in dtokens:
            kind, _w, n, _s = parse_function(token)
            if kind == NO_TRANSFORM:
                types.append(NO_TRANSFORM), indexes.append([-1]), ints.append(-1), strs.append("")
            elif kind in (RANDOM, PARTITION):
                types.append(kind), indexes.append([]), ints.append(n), strs.append("")
            else:
                raise MappingError(ERR_INDEX_OUT_OF_RANGE, token)
    return Transform(src, dest, dtokens, stokens, types, indexes, ints, strs)


_VALIDATED = ("partition", "wildcard", "splitFromLeft", "splitFromRight", "sliceFromLeft",
              "sliceFromRight", "split", "random")


def validate_mapping(src: str, dest: str) -> None:
    """Go's ValidateMapping (sublist.go). Note that, as in Go, ``left()`` and ``right()``
    are not in its list of functions, so account mappings refuse them.

    Raises:
        MappingError
    """
    if dest == "":
        return
    fwc = False
    for t in dest.split("."):
        n = len(t)
        if n == 0 or fwc:
            raise MappingError(ERR_INVALID_TRANSFORM, t)
        if n > 4 and t.startswith("{{") and t.endswith("}}"):
            if not any(_RE[name].search(t) for name in _VALIDATED):
                raise MappingError(ERR_UNKNOWN_FUNCTION, t)
            continue
        if t == ">":
            fwc = True
        elif any(c in t for c in "\t\n\f\r "):
            raise MappingError(ERR_INVALID_TRANSFORM)
    new_transform(src, dest)


def _tokenize_wildcards(subject: str) -> str:
    # Go's transformTokenize: "foo.*.*" -> "foo.$1.$2"
    out = []
    i = 1
    for t in subject.split("."):
        if t == "*":
            out.append(f"${i}")
            i += 1
        else:
            out.append(t)
    return ".".join(out)


@attrs.frozen
class MapDest:
    """One destination of a mapping (Go's MapDest)."""

    subject: str
    weight: int = 100
    cluster: str = ""


class Mapping:
    """One source and its destinations, weights made cumulative (Go's mapping)."""

    __slots__ = ("src", "src_b", "wc", "dests", "cdests")

    def __init__(self, src: str, dests: Iterable[MapDest]) -> None:
        """Go's AddWeightedMappings.

        Raises:
            MappingError
        """
        if not is_valid_subject(src.encode()):
            raise MappingError(ERR_BAD_SUBJECT)
        self.src = src
        self.src_b = src.encode()
        self.wc = any(t in ("*", ">") for t in src.split("."))
        seen: set = set()
        totals: dict = {}
        plain: list = []
        scoped: dict = {}
        for d in dests:
            if d.subject in seen:
                raise MappingError(f"duplicate entry for {_go_quote(d.subject)}")
            seen.add(d.subject)
            if d.weight > 100:
                raise MappingError("individual weights need to be <= 100")
            totals[d.cluster] = totals.get(d.cluster, 0) + d.weight
            if totals[d.cluster] > 100:
                raise MappingError("total weight needs to be <= 100")
            validate_mapping(src, d.subject)
            tr = new_transform(src, d.subject)
            (plain if not d.cluster else scoped.setdefault(d.cluster, [])).append([tr, d.weight])

        def finish(entries: list) -> list:
            total = sum(w for _t, w in entries)
            if total != 100 and src not in seen:
                dest = _tokenize_wildcards(src) if self.wc else src
                entries.append([new_transform(src, dest), 100 - total if entries else 100])
            entries.sort(key=lambda e: e[1])
            acc = 0
            for e in entries:
                e[1] += acc
                acc = e[1]
            return [(w, tr) for tr, w in entries]

        self.dests = finish(plain)
        self.cdests = {c: finish(e) for c, e in scoped.items()}

    def destinations(self, cluster: str = "") -> list:
        if self.cdests:
            return self.cdests.get(cluster) or self.dests
        return self.dests


def _go_quote(s: str) -> str:
    import json

    return json.dumps(s, ensure_ascii=False)


def _output(tr: Transform | None, tokens: list):
    """The mapped subject for ``tokens``, or a callable when it changes per message."""
    if tr is None:
        return b""
    if not tr.indexes:
        return tr._dest_b
    if tr.has_random:
        return lambda: tr.transform_tokens(tokens)
    return tr.transform_tokens(tokens)


class Mappings:
    """An account's mappings, in order; the first whose source matches applies."""

    def __init__(self, mappings: Iterable[Mapping] = (), cluster: str = "") -> None:
        self.mappings: list[Mapping] = []
        self.cluster = cluster
        for m in mappings:
            self.add(m)

    def __bool__(self) -> bool:
        return bool(self.mappings)

    def __len__(self) -> int:
        return len(self.mappings)

    def add(self, m: Mapping) -> None:
        for i, old in enumerate(self.mappings):
            if old.src == m.src:
                self.mappings[i] = m
                return
        self.mappings.append(m)

    def remove(self, src: str) -> bool:
        for i, old in enumerate(self.mappings):
            if old.src == src:
                del self.mappings[i]
                return True
        return False

    def _find(self, subject: bytes) -> tuple:
        # As Go's selectMappedSubject: a literal source equal to the subject is taken
        # without splitting the subject, and then the transform sees no tokens (this only
        # shows with partition() on a literal source, which then hashes an empty key).
        tokens = None
        for m in self.mappings:
            if not m.wc and m.src_b == subject:
                return m, tokens if tokens is not None else []
            if tokens is None:
                tokens = subject.split(b".")
            if is_subset_match(subject, m.src_b):
                return m, tokens
        return None, None

    def plan(self, subject: bytes):
        """What the core caches for ``subject``: see the module docstring."""
        m, tokens = self._find(subject)
        if m is None:
            return None
        dests = m.destinations(self.cluster)
        if len(dests) == 1 and dests[0][0] == 100:
            out = _output(dests[0][1], tokens)
            return out if isinstance(out, bytes) else ((100,), (out,))
        return (tuple(w for w, _t in dests), tuple(_output(t, tokens) for _w, t in dests))

    def select(self, subject: bytes, pick: int | None = None) -> tuple[bytes, bool]:
        """Go's selectMappedSubject: (subject to use, whether a mapping applied);
        ``pick`` (0..99) stands for the random draw among weighted destinations."""
        m, tokens = self._find(subject)
        if m is None:
            return subject, False
        dests = m.destinations(self.cluster)
        if len(dests) == 1 and dests[0][0] == 100:
            chosen = dests[0][1]
        else:
            w = _random.randrange(100) if pick is None else pick
            chosen = None
            for weight, tr in dests:
                if w < weight:
                    chosen = tr
                    break
            if chosen is None:
                return b"", True
        if not chosen.indexes:
            return chosen._dest_b, True
        return chosen.transform_tokens(tokens), True


def build(spec: Iterable[tuple[str, tuple]] | None, cluster: str = "") -> Mappings | None:
    """The ``Mappings`` of a config spec ((source, (MapDest, ...)), ...); None if empty."""
    if not spec:
        return None
    return Mappings((Mapping(src, dests) for src, dests in spec), cluster)


def from_jwt(claims_mappings) -> Mappings | None:
    """An account JWT's ``mappings`` claim ({source: [WeightedMapping, ...]}) as Go's
    updateAccountClaimsWithRefresh installs it: a weight of 0 means 100, and an entry that
    does not build is left out (Go ignores AddWeightedMappings' error there)."""
    out = []
    for src, entries in (claims_mappings or {}).items():
        dests = [MapDest(e.subject, e.effective_weight(), e.cluster) for e in entries]
        try:
            out.append(Mapping(src, dests))
        except MappingError:
            continue
    return Mappings(out) if out else None


def ext_map(mappings: Mappings | None) -> dict:
    """Go's ExtMap for /accountz: per source, its destinations as Go keeps them (sorted,
    weights cumulative, the source added for the rest), cluster-scoped ones after."""
    out: dict = {}
    for m in (mappings.mappings if mappings else ()):
        dests = [{"subject": t.dest if t is not None else "", "weight": w}
                 for w, t in m.dests]
        for cluster, cd in m.cdests.items():
            dests += [{"subject": t.dest if t is not None else "", "weight": w,
                       "cluster": cluster} for w, t in cd]
        out[m.src] = dests
    return dict(sorted(out.items()))
