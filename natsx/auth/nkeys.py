"""NATS nkeys: Ed25519 identities (and X25519 "xkeys") in the NATS text encoding.

Theory of operation
-------------------
An nkey is a 32-byte key with a role. Its text form is RFC 4648 base32 (upper case, no
padding) of ``prefix byte(s) || key || crc16``, where the CRC is CRC-16/XMODEM over everything
before it, stored little endian. The prefix byte is chosen so that the first base32 character
names the role: ``O`` operator, ``A`` account, ``U`` user, ``N`` server, ``C`` cluster,
``X`` curve (xkey), ``P`` private key. A seed spends two bytes on its prefix: five bits of
``S`` and then the five bits of the role, so a user seed reads ``SU...``.

The seed is the 32-byte Ed25519 seed (for ``X`` keys, the X25519 private scalar); everything
else is derived from it. Public keys are what the server sees: in CONNECT (``nkey``), as JWT
subjects and issuers, and as its own ``server_id``.

Decoding is strict in the same places as github.com/nats-io/nkeys: a bad base32 string,
a wrong CRC, an unknown role or a key of the wrong length is an :class:`NkeysError`, never a
silently different key. Nothing here does I/O; randomness comes from ``os.urandom`` unless the
caller passes its own bytes.

Costs: one Ed25519 verify is ~50 us in libsodium; decoding a public key is a base32 decode and
a 35-byte CRC.
"""

from __future__ import annotations

import base64
import binascii
import os

import attrs
import nacl.exceptions
import nacl.public
import nacl.signing

__all__ = [
    "PREFIX_BYTE_SEED", "PREFIX_BYTE_PRIVATE", "PREFIX_BYTE_SERVER", "PREFIX_BYTE_CLUSTER",
    "PREFIX_BYTE_OPERATOR", "PREFIX_BYTE_ACCOUNT", "PREFIX_BYTE_USER", "PREFIX_BYTE_CURVE",
    "PUBLIC_PREFIXES", "XKEY_VERSION_V1", "NkeysError", "InvalidEncodingError",
    "InvalidChecksumError", "InvalidPrefixError", "InvalidPublicKeyError", "InvalidSeedError",
    "CannotSignError", "DecryptError", "crc16", "encode", "decode", "encode_public",
    "decode_public", "encode_seed", "decode_seed", "prefix_of", "is_valid_public_key",
    "is_valid_public_operator_key", "is_valid_public_account_key", "is_valid_public_user_key",
    "is_valid_public_server_key", "is_valid_public_curve_key", "KeyPair", "CurveKeyPair",
    "from_seed", "decode_signature", "verify_signature", "new_server_id", "new_nonce",
]

# ---------------------------------------------------------------------------
# Prefix bytes (github.com/nats-io/nkeys strkey.go)
# ---------------------------------------------------------------------------

PREFIX_BYTE_SEED = 18 << 3  # 'S'
PREFIX_BYTE_PRIVATE = 15 << 3  # 'P'
PREFIX_BYTE_SERVER = 13 << 3  # 'N'
PREFIX_BYTE_CLUSTER = 2 << 3  # 'C'
PREFIX_BYTE_OPERATOR = 14 << 3  # 'O'
PREFIX_BYTE_ACCOUNT = 0  # 'A'
PREFIX_BYTE_USER = 20 << 3  # 'U'
PREFIX_BYTE_CURVE = 23 << 3  # 'X'

#: Roles a public key (and so a seed) may have.
PUBLIC_PREFIXES = frozenset(
    {
        PREFIX_BYTE_SERVER,
        PREFIX_BYTE_CLUSTER,
        PREFIX_BYTE_OPERATOR,
        PREFIX_BYTE_ACCOUNT,
        PREFIX_BYTE_USER,
        PREFIX_BYTE_CURVE,
    }
)
_ALL_PREFIXES = PUBLIC_PREFIXES | {PREFIX_BYTE_SEED, PREFIX_BYTE_PRIVATE}

_KEY_LEN = 32
_SIG_LEN = 64
#: Version tag that opens every sealed xkey message (nkeys xkeys.go).
XKEY_VERSION_V1 = b"xkv1"
_NONCE_LEN = 24

# Raw length of the INFO nonce challenge (server/nkey.go nonceRawLen).
_SERVER_NONCE_RAW_LEN = 11


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class NkeysError(ValueError):
    """An nkey, seed or signature could not be used."""


class InvalidEncodingError(NkeysError):
    """Not base32 in the nkey alphabet, or too short to hold a key."""


class InvalidChecksumError(NkeysError):
    """The CRC-16 at the end of the key does not match its contents."""


class InvalidPrefixError(NkeysError):
    """The key's role is not the expected one, or is not a known role."""


class InvalidPublicKeyError(NkeysError):
    """Not a public key of a known role, or not 32 bytes long."""


class InvalidSeedError(NkeysError):
    """Not a seed, or a seed of an unknown role or length."""


class CannotSignError(NkeysError):
    """The key pair holds no private key, or is of the wrong kind for the operation."""


class DecryptError(NkeysError):
    """A sealed xkey message is malformed or was not sealed for this key."""


# ---------------------------------------------------------------------------
# CRC-16/XMODEM (poly 0x1021, init 0), as nkeys crc16.go
# ---------------------------------------------------------------------------


def _crc16_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM of ``data``."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


# ---------------------------------------------------------------------------
# Text encoding
# ---------------------------------------------------------------------------


def _as_bytes(src: str | bytes | bytearray) -> bytes:
    if isinstance(src, str):
        try:
            return src.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidEncodingError("nkey contains non-ascii characters") from None
    return bytes(src)


def _b32decode(src: str | bytes | bytearray) -> bytes:
    """Decode base32 without padding and strip the verified CRC."""
    data = _as_bytes(src)
    # The Go decoder uses NoPadding: '=' is not part of the alphabet there either.
    if not data or b"=" in data:
        raise InvalidEncodingError("invalid nkey encoding")
    try:
        raw = base64.b32decode(data + b"=" * (-len(data) % 8))
    except (binascii.Error, ValueError):
        raise InvalidEncodingError("invalid nkey encoding") from None
    if len(raw) < 4:
        raise InvalidEncodingError("invalid nkey encoding")
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    if crc16(body) != crc:
        raise InvalidChecksumError("invalid nkey checksum")
    return body


def _b32encode(body: bytes) -> str:
    raw = body + crc16(body).to_bytes(2, "little")
    return base64.b32encode(raw).rstrip(b"=").decode("ascii")


def encode(prefix: int, src: bytes) -> str:
    """Encode ``src`` under a one-byte ``prefix`` (any role, including private keys).

    Raises:
        InvalidPrefixError: ``prefix`` is not a known role.
    """
    if prefix not in _ALL_PREFIXES:
        raise InvalidPrefixError("invalid prefix byte")
    return _b32encode(bytes([prefix]) + bytes(src))


def decode(expected_prefix: int, src: str | bytes) -> bytes:
    """Decode a key with a one-byte prefix, requiring that prefix; returns the raw key.

    Raises:
        InvalidEncodingError, InvalidChecksumError: ``src`` is not an nkey.
        InvalidPrefixError: the key has another role.
    """
    if expected_prefix not in _ALL_PREFIXES:
        raise InvalidPrefixError("invalid prefix byte")
    body = _b32decode(src)
    if body[0] != expected_prefix:
        raise InvalidPrefixError("invalid prefix byte")
    return body[1:]


def encode_public(prefix: int, raw: bytes) -> str:
    """Text form of the 32-byte public key ``raw`` with role ``prefix``.

    Raises:
        InvalidPrefixError: ``prefix`` is not a public role.
        InvalidPublicKeyError: ``raw`` is not 32 bytes.
    """
    if prefix not in PUBLIC_PREFIXES:
        raise InvalidPrefixError("invalid public prefix byte")
    if len(raw) != _KEY_LEN:
        raise InvalidPublicKeyError("public key must be 32 bytes")
    return _b32encode(bytes([prefix]) + bytes(raw))


def decode_public(src: str | bytes) -> tuple[int, bytes]:
    """Split a public key into ``(prefix, raw32)``.

    Raises:
        InvalidEncodingError, InvalidChecksumError: ``src`` is not an nkey.
        InvalidPublicKeyError: not a public role, or not a 32-byte key.
    """
    body = _b32decode(src)
    prefix = body[0]
    if prefix not in PUBLIC_PREFIXES:
        raise InvalidPublicKeyError("not a public nkey")
    raw = body[1:]
    if len(raw) != _KEY_LEN:
        raise InvalidPublicKeyError("public key must be 32 bytes")
    return prefix, raw


def encode_seed(prefix: int, raw: bytes) -> bytes:
    """Seed text (``S`` + role) for the 32-byte seed ``raw``; bytes, as nkeys returns it.

    Raises:
        InvalidPrefixError: ``prefix`` is not a public role.
        InvalidSeedError: ``raw`` is not 32 bytes.
    """
    if prefix not in PUBLIC_PREFIXES:
        raise InvalidPrefixError("invalid public prefix byte")
    if len(raw) != _KEY_LEN:
        raise InvalidSeedError("seed must be 32 bytes")
    # Five bits of 'S', then the role's five bits straddling the byte boundary.
    header = bytes([PREFIX_BYTE_SEED | (prefix >> 5), (prefix & 31) << 3])
    return _b32encode(header + bytes(raw)).encode("ascii")


def decode_seed(src: str | bytes) -> tuple[int, bytes]:
    """Split a seed into ``(role prefix, raw32)``.

    Raises:
        InvalidEncodingError, InvalidChecksumError: ``src`` is not an nkey.
        InvalidSeedError: not a seed, an unknown role, or not 32 bytes.
    """
    body = _b32decode(src)
    if len(body) < 2 or body[0] & 0xF8 != PREFIX_BYTE_SEED:
        raise InvalidSeedError("invalid seed")
    prefix = ((body[0] & 7) << 5) | ((body[1] & 0xF8) >> 3)
    if prefix not in PUBLIC_PREFIXES:
        raise InvalidSeedError("invalid seed")
    raw = body[2:]
    if len(raw) != _KEY_LEN:
        raise InvalidSeedError("invalid seed length")
    return prefix, raw


def prefix_of(src: str | bytes) -> int | None:
    """Role of a public key or seed, or None when ``src`` is neither."""
    try:
        return decode_public(src)[0]
    except NkeysError:
        pass
    try:
        return decode_seed(src)[0]
    except NkeysError:
        return None


def is_valid_public_key(src: str | bytes, prefix: int | None = None) -> bool:
    """True when ``src`` is a well-formed public key (of role ``prefix``, when given)."""
    try:
        role, _ = decode_public(src)
    except NkeysError:
        return False
    return prefix is None or role == prefix


def is_valid_public_operator_key(src: str | bytes) -> bool:
    return is_valid_public_key(src, PREFIX_BYTE_OPERATOR)


def is_valid_public_account_key(src: str | bytes) -> bool:
    return is_valid_public_key(src, PREFIX_BYTE_ACCOUNT)


def is_valid_public_user_key(src: str | bytes) -> bool:
    return is_valid_public_key(src, PREFIX_BYTE_USER)


def is_valid_public_server_key(src: str | bytes) -> bool:
    return is_valid_public_key(src, PREFIX_BYTE_SERVER)


def is_valid_public_curve_key(src: str | bytes) -> bool:
    return is_valid_public_key(src, PREFIX_BYTE_CURVE)


# ---------------------------------------------------------------------------
# Key pairs
# ---------------------------------------------------------------------------


@attrs.frozen(repr=False, eq=False)
class KeyPair:
    """An Ed25519 nkey: a full pair when built from a seed, verify-only from a public key.

    ``repr`` never shows the seed, so a key pair can be logged safely.
    """

    prefix: int
    _verify_key: bytes
    _signing_key: nacl.signing.SigningKey | None = None

    @classmethod
    def create(cls, prefix: int, entropy: bytes | None = None) -> KeyPair:
        """A new pair of role ``prefix`` (from ``entropy``, 32 bytes, or the OS RNG).

        Raises:
            InvalidPrefixError: ``prefix`` is not a signing role (use CurveKeyPair for xkeys).
        """
        if prefix not in PUBLIC_PREFIXES or prefix == PREFIX_BYTE_CURVE:
            raise InvalidPrefixError("invalid prefix byte for an ed25519 key pair")
        raw = os.urandom(_KEY_LEN) if entropy is None else bytes(entropy)
        if len(raw) != _KEY_LEN:
            raise InvalidSeedError("seed must be 32 bytes")
        sk = nacl.signing.SigningKey(raw)
        return cls(prefix, bytes(sk.verify_key), sk)

    @classmethod
    def from_seed(cls, seed: str | bytes) -> KeyPair:
        """The pair encoded by ``seed`` (``SU...``, ``SA...``, ...).

        Raises:
            InvalidSeedError (or another NkeysError): ``seed`` is not a usable seed.
        """
        prefix, raw = decode_seed(_as_bytes(seed).strip())
        if prefix == PREFIX_BYTE_CURVE:
            raise InvalidPrefixError("curve seed: use CurveKeyPair.from_seed")
        sk = nacl.signing.SigningKey(raw)
        return cls(prefix, bytes(sk.verify_key), sk)

    @classmethod
    def from_public_key(cls, public_key: str | bytes) -> KeyPair:
        """A verify-only pair for ``public_key``.

        Raises:
            InvalidPublicKeyError (or another NkeysError): not a usable public key.
        """
        prefix, raw = decode_public(public_key)
        if prefix == PREFIX_BYTE_CURVE:
            raise InvalidPublicKeyError("curve keys cannot verify signatures")
        return cls(prefix, raw)

    @property
    def public_key(self) -> str:
        return encode_public(self.prefix, self._verify_key)

    @property
    def raw_public_key(self) -> bytes:
        return self._verify_key

    @property
    def seed(self) -> bytes:
        """The encoded seed.

        Raises:
            CannotSignError: this pair was built from a public key.
        """
        if self._signing_key is None:
            raise CannotSignError("public key only")
        return encode_seed(self.prefix, bytes(self._signing_key))

    @property
    def private_key(self) -> str:
        """The ``P...`` form of the 64-byte Ed25519 private key, as nkeys PrivateKey()."""
        if self._signing_key is None:
            raise CannotSignError("public key only")
        # Go's ed25519.PrivateKey is seed || public key.
        return encode(PREFIX_BYTE_PRIVATE, bytes(self._signing_key) + self._verify_key)

    @property
    def can_sign(self) -> bool:
        return self._signing_key is not None

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``.

        Raises:
            CannotSignError: this pair was built from a public key.
        """
        if self._signing_key is None:
            raise CannotSignError("public key only")
        return self._signing_key.sign(bytes(data)).signature

    def verify(self, data: bytes, sig: bytes) -> bool:
        """True when ``sig`` is this key's signature of ``data``."""
        if len(sig) != _SIG_LEN:
            return False
        try:
            nacl.signing.VerifyKey(self._verify_key).verify(bytes(data), bytes(sig))
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    def __repr__(self) -> str:
        return f"KeyPair({self.public_key})"


@attrs.frozen(repr=False, eq=False)
class CurveKeyPair:
    """An X25519 xkey (``X...``), used to seal auth-callout requests and responses.

    Sealed messages are ``b"xkv1" || nonce(24) || crypto_box(...)``, as nkeys Seal/Open.
    """

    _private_key: nacl.public.PrivateKey

    @classmethod
    def create(cls, entropy: bytes | None = None) -> CurveKeyPair:
        raw = os.urandom(_KEY_LEN) if entropy is None else bytes(entropy)
        if len(raw) != _KEY_LEN:
            raise InvalidSeedError("seed must be 32 bytes")
        return cls(nacl.public.PrivateKey(raw))

    @classmethod
    def from_seed(cls, seed: str | bytes) -> CurveKeyPair:
        prefix, raw = decode_seed(_as_bytes(seed).strip())
        if prefix != PREFIX_BYTE_CURVE:
            raise InvalidPrefixError("not a curve seed")
        return cls(nacl.public.PrivateKey(raw))

    @property
    def prefix(self) -> int:
        return PREFIX_BYTE_CURVE

    @property
    def public_key(self) -> str:
        return encode_public(PREFIX_BYTE_CURVE, bytes(self._private_key.public_key))

    @property
    def seed(self) -> bytes:
        return encode_seed(PREFIX_BYTE_CURVE, bytes(self._private_key))

    def seal(self, data: bytes, recipient: str, nonce: bytes | None = None) -> bytes:
        """Encrypt ``data`` so only ``recipient`` (an ``X...`` key) can open it."""
        try:
            rpub = decode(PREFIX_BYTE_CURVE, recipient)
        except NkeysError:
            raise InvalidPublicKeyError("invalid recipient") from None
        if len(rpub) != _KEY_LEN:
            raise InvalidPublicKeyError("invalid recipient")
        nonce = os.urandom(_NONCE_LEN) if nonce is None else bytes(nonce)
        box = nacl.public.Box(self._private_key, nacl.public.PublicKey(rpub))
        return XKEY_VERSION_V1 + bytes(box.encrypt(bytes(data), nonce))

    def open(self, sealed: bytes, sender: str) -> bytes:
        """Decrypt a message ``sender`` sealed for this key.

        Raises:
            DecryptError: malformed, wrong version, or not sealed by ``sender`` for us.
        """
        vlen = len(XKEY_VERSION_V1)
        if len(sealed) <= vlen + _NONCE_LEN:
            raise DecryptError("invalid encrypted data")
        if sealed[:vlen] != XKEY_VERSION_V1:
            raise DecryptError("invalid encryption version")
        try:
            spub = decode(PREFIX_BYTE_CURVE, sender)
        except NkeysError:
            raise InvalidPublicKeyError("invalid sender") from None
        if len(spub) != _KEY_LEN:
            raise InvalidPublicKeyError("invalid sender")
        box = nacl.public.Box(self._private_key, nacl.public.PublicKey(spub))
        nonce = sealed[vlen : vlen + _NONCE_LEN]
        try:
            return box.decrypt(bytes(sealed[vlen + _NONCE_LEN :]), nonce)
        except nacl.exceptions.CryptoError:
            raise DecryptError("could not decrypt") from None

    def __repr__(self) -> str:
        return f"CurveKeyPair({self.public_key})"


def from_seed(seed: str | bytes) -> KeyPair | CurveKeyPair:
    """The key pair of any role encoded by ``seed`` (nkeys FromSeed)."""
    prefix, _ = decode_seed(_as_bytes(seed).strip())
    if prefix == PREFIX_BYTE_CURVE:
        return CurveKeyPair.from_seed(seed)
    return KeyPair.from_seed(seed)


# ---------------------------------------------------------------------------
# Signatures as they arrive in CONNECT
# ---------------------------------------------------------------------------


def decode_signature(sig: str | bytes) -> bytes:
    """Raw signature bytes from CONNECT ``sig``: base64 raw-url, else standard base64.

    Mirrors server/auth.go, which tries ``RawURLEncoding`` then falls back to ``StdEncoding``.

    Raises:
        NkeysError: neither decoding applies.
    """
    data = _as_bytes(sig)
    # Raw URL-safe: no padding allowed, and a length of 1 mod 4 cannot be produced.
    if b"=" not in data and len(data) % 4 != 1:
        try:
            return base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            pass
    try:
        if len(data) % 4 == 0:
            return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        pass
    raise NkeysError("signature not valid base64")


def verify_signature(public_key: str | bytes, data: bytes, sig: str | bytes) -> bool:
    """True when ``sig`` is the signature of ``data`` by ``public_key``.

    ``sig`` is either the raw 64 bytes or (a str) its base64 text as sent in CONNECT.
    Never raises: a malformed key or signature is simply not a valid signature.
    """
    try:
        raw_sig = decode_signature(sig) if isinstance(sig, str) else bytes(sig)
        return KeyPair.from_public_key(public_key).verify(data, raw_sig)
    except NkeysError:
        return False


# ---------------------------------------------------------------------------
# Server identity
# ---------------------------------------------------------------------------


def new_server_id() -> str:
    """A fresh server public key (``N...``): the Go server's INFO ``server_id``."""
    return KeyPair.create(PREFIX_BYTE_SERVER).public_key


def new_nonce() -> str:
    """A fresh INFO ``nonce``: 11 random bytes as raw-url base64 (15 chars), as server/nkey.go."""
    return base64.urlsafe_b64encode(os.urandom(_SERVER_NONCE_RAW_LEN)).rstrip(b"=").decode("ascii")
