"""nkeys: text encoding, CRC, key pairs and signatures.

The PyPI ``nkeys`` package (maintained by the NATS authors) is the independent implementation
that keys and signatures are checked against, in both directions.
"""

import base64
import os

import nkeys as ref
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsx.auth import nkeys

SIGNING_ROLES = [
    nkeys.PREFIX_BYTE_OPERATOR,
    nkeys.PREFIX_BYTE_ACCOUNT,
    nkeys.PREFIX_BYTE_USER,
    nkeys.PREFIX_BYTE_SERVER,
    nkeys.PREFIX_BYTE_CLUSTER,
]
ROLE_LETTER = {
    nkeys.PREFIX_BYTE_OPERATOR: "O",
    nkeys.PREFIX_BYTE_ACCOUNT: "A",
    nkeys.PREFIX_BYTE_USER: "U",
    nkeys.PREFIX_BYTE_SERVER: "N",
    nkeys.PREFIX_BYTE_CLUSTER: "C",
    nkeys.PREFIX_BYTE_CURVE: "X",
}
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def test_prefix_bytes_match_reference():
    assert nkeys.PREFIX_BYTE_SEED == ref.PREFIX_BYTE_SEED
    assert nkeys.PREFIX_BYTE_PRIVATE == ref.PREFIX_BYTE_PRIVATE
    assert nkeys.PREFIX_BYTE_SERVER == ref.PREFIX_BYTE_SERVER
    assert nkeys.PREFIX_BYTE_CLUSTER == ref.PREFIX_BYTE_CLUSTER
    assert nkeys.PREFIX_BYTE_OPERATOR == ref.PREFIX_BYTE_OPERATOR
    assert nkeys.PREFIX_BYTE_ACCOUNT == ref.PREFIX_BYTE_ACCOUNT
    assert nkeys.PREFIX_BYTE_USER == ref.PREFIX_BYTE_USER


def test_crc16_xmodem_check_value():
    # The catalogued check value of CRC-16/XMODEM.
    assert nkeys.crc16(b"123456789") == 0x31C3
    assert nkeys.crc16(b"") == 0
    assert nkeys.crc16(b"\x01\x02\x03") == ref.crc16(bytearray(b"\x01\x02\x03"))


@pytest.mark.parametrize("role", SIGNING_ROLES)
def test_key_pair_round_trips(role):
    kp = nkeys.KeyPair.create(role)
    assert kp.public_key[0] == ROLE_LETTER[role]
    assert len(kp.public_key) == 56
    assert kp.seed.startswith(b"S" + ROLE_LETTER[role].encode())
    assert len(kp.seed) == 58
    again = nkeys.KeyPair.from_seed(kp.seed)
    assert again.public_key == kp.public_key
    assert nkeys.KeyPair.from_seed(kp.seed.decode()).public_key == kp.public_key
    assert nkeys.decode_public(kp.public_key) == (role, kp.raw_public_key)
    assert nkeys.decode_seed(kp.seed)[0] == role
    assert nkeys.prefix_of(kp.public_key) == role
    assert nkeys.prefix_of(kp.seed) == role
    sig = kp.sign(b"hello")
    assert len(sig) == 64
    assert kp.verify(b"hello", sig)
    assert not kp.verify(b"hellO", sig)
    assert nkeys.KeyPair.from_public_key(kp.public_key).verify(b"hello", sig)


@pytest.mark.parametrize("role", SIGNING_ROLES)
def test_our_keys_verify_with_reference(role):
    ours = nkeys.KeyPair.create(role)
    theirs = ref.from_seed(ours.seed)
    assert theirs.public_key.decode() == ours.public_key
    assert theirs.private_key.decode() == ours.private_key
    data = os.urandom(40)
    # Ours signs, the reference verifies (it raises on failure).
    assert theirs.verify(data, ours.sign(data))
    # The reference signs, ours verifies.
    assert nkeys.verify_signature(ours.public_key, data, theirs.sign(data))
    with pytest.raises(ref.ErrInvalidSignature):
        theirs.verify(data + b"x", ours.sign(data))


@pytest.mark.parametrize("role", SIGNING_ROLES)
def test_reference_keys_load_and_verify_with_ours(role):
    seed = ref.encode_seed(os.urandom(32), role)
    theirs = ref.from_seed(seed)
    ours = nkeys.KeyPair.from_seed(seed)
    assert ours.public_key == theirs.public_key.decode()
    assert ours.seed == seed
    data = b"nonce-" + os.urandom(11)
    assert nkeys.verify_signature(theirs.public_key.decode(), data, theirs.sign(data))
    assert theirs.verify(data, ours.sign(data))


def test_documented_seed_matches_reference():
    # The sample seed printed in the nats-io/jwt creds documentation.
    seed = b"SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM"
    assert nkeys.KeyPair.from_seed(seed).public_key == ref.from_seed(seed).public_key.decode()


def test_crc_failures_detected():
    kp = nkeys.KeyPair.create(nkeys.PREFIX_BYTE_USER)
    pub = kp.public_key
    bad = pub[:10] + ("A" if pub[10] != "A" else "B") + pub[11:]
    with pytest.raises(nkeys.InvalidChecksumError):
        nkeys.decode_public(bad)
    assert not nkeys.is_valid_public_key(bad)
    assert not nkeys.verify_signature(bad, b"x", kp.sign(b"x"))
    seed = kp.seed.decode()
    bad_seed = seed[:20] + ("A" if seed[20] != "A" else "B") + seed[21:]
    with pytest.raises(nkeys.InvalidChecksumError):
        nkeys.KeyPair.from_seed(bad_seed)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(min_size=32, max_size=32), pos=st.integers(0, 55), delta=st.integers(1, 31))
def test_every_single_character_change_is_detected(raw, pos, delta):
    # A 56-character public key has no spare bits, and CRC-16 catches every burst of up to
    # 16 bits, so changing any one character must make the key invalid.
    pub = nkeys.encode_public(nkeys.PREFIX_BYTE_ACCOUNT, raw)
    changed = pub[:pos] + B32[(B32.index(pub[pos]) + delta) % 32] + pub[pos + 1 :]
    assert not nkeys.is_valid_public_key(changed)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(min_size=32, max_size=32), role=st.sampled_from(sorted(nkeys.PUBLIC_PREFIXES)))
def test_encode_decode_property(raw, role):
    pub = nkeys.encode_public(role, raw)
    assert pub[0] == ROLE_LETTER[role]
    assert nkeys.decode_public(pub) == (role, raw)
    assert nkeys.is_valid_public_key(pub, role)
    assert nkeys.decode(role, pub) == raw
    seed = nkeys.encode_seed(role, raw)
    assert nkeys.decode_seed(seed) == (role, raw)
    if role != nkeys.PREFIX_BYTE_CURVE:  # the reference package predates xkeys
        assert seed == ref.encode_seed(raw, role)


def test_wrong_roles_and_garbage_rejected():
    user = nkeys.KeyPair.create(nkeys.PREFIX_BYTE_USER)
    assert nkeys.is_valid_public_user_key(user.public_key)
    assert not nkeys.is_valid_public_account_key(user.public_key)
    assert not nkeys.is_valid_public_key(user.public_key, nkeys.PREFIX_BYTE_OPERATOR)
    with pytest.raises(nkeys.InvalidPrefixError):
        nkeys.decode(nkeys.PREFIX_BYTE_ACCOUNT, user.public_key)
    # A seed is not a public key and a public key is not a seed.
    with pytest.raises(nkeys.InvalidPublicKeyError):
        nkeys.decode_public(user.seed)
    with pytest.raises(nkeys.InvalidSeedError):
        nkeys.decode_seed(user.public_key)
    assert nkeys.prefix_of("not a key") is None
    for junk in ["", "U", user.public_key.lower(), user.public_key + "====", user.public_key[:-3], "Ü" * 56]:
        assert not nkeys.is_valid_public_key(junk), junk
    with pytest.raises(nkeys.NkeysError):
        nkeys.decode_seed(user.seed[:-1] + b"=")
    # The private key form is not a public key either.
    assert not nkeys.is_valid_public_key(user.private_key)
    with pytest.raises(nkeys.InvalidPrefixError):
        nkeys.encode_public(nkeys.PREFIX_BYTE_SEED, bytes(32))
    with pytest.raises(nkeys.InvalidPublicKeyError):
        nkeys.encode_public(nkeys.PREFIX_BYTE_USER, bytes(31))
    with pytest.raises(nkeys.InvalidSeedError):
        nkeys.encode_seed(nkeys.PREFIX_BYTE_USER, bytes(33))
    # A public key of the right form but 33 bytes long.
    long_key = nkeys.encode(nkeys.PREFIX_BYTE_USER, bytes(33))
    assert not nkeys.is_valid_public_key(long_key)


def test_public_only_pair_cannot_sign():
    kp = nkeys.KeyPair.from_public_key(nkeys.KeyPair.create(nkeys.PREFIX_BYTE_USER).public_key)
    assert not kp.can_sign
    with pytest.raises(nkeys.CannotSignError):
        kp.sign(b"x")
    with pytest.raises(nkeys.CannotSignError):
        kp.seed  # noqa: B018
    assert "S" not in repr(kp)[:9]


def test_repr_does_not_leak_seed():
    kp = nkeys.KeyPair.create(nkeys.PREFIX_BYTE_USER)
    assert kp.seed.decode() not in repr(kp)
    assert repr(kp) == f"KeyPair({kp.public_key})"


def test_connect_sig_accepts_raw_url_and_std_base64():
    # server/auth.go decodes CONNECT sig as RawURLEncoding, falling back to StdEncoding.
    kp = nkeys.KeyPair.create(nkeys.PREFIX_BYTE_USER)
    nonce = nkeys.new_nonce().encode()
    sig = kp.sign(nonce)
    raw_url = base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    std = base64.b64encode(sig).decode()
    assert nkeys.decode_signature(raw_url) == sig
    assert nkeys.decode_signature(std) == sig
    assert nkeys.verify_signature(kp.public_key, nonce, raw_url)
    assert nkeys.verify_signature(kp.public_key, nonce, std)
    assert nkeys.verify_signature(kp.public_key, nonce, sig)
    assert not nkeys.verify_signature(kp.public_key, nonce + b"x", raw_url)
    assert not nkeys.verify_signature(kp.public_key, nonce, "!!!")
    assert not nkeys.verify_signature(kp.public_key, nonce, raw_url[:-4])
    assert not nkeys.verify_signature("UBOGUS", nonce, raw_url)
    with pytest.raises(nkeys.NkeysError):
        nkeys.decode_signature("a")
    # What nats-py's signature_cb produces is accepted.
    ref_sig = base64.b64encode(ref.from_seed(kp.seed).sign(nonce))
    assert nkeys.verify_signature(kp.public_key, nonce, ref_sig.decode())


def test_server_id_and_nonce():
    a, b = nkeys.new_server_id(), nkeys.new_server_id()
    assert a != b
    assert nkeys.is_valid_public_server_key(a)
    assert a.startswith("N") and len(a) == 56
    nonce = nkeys.new_nonce()
    assert len(nonce) == 15
    assert base64.urlsafe_b64decode(nonce + "=")


def test_create_is_deterministic_from_entropy():
    entropy = bytes(range(32))
    a = nkeys.KeyPair.create(nkeys.PREFIX_BYTE_ACCOUNT, entropy)
    b = nkeys.KeyPair.create(nkeys.PREFIX_BYTE_ACCOUNT, entropy)
    assert a.public_key == b.public_key
    assert nkeys.decode_seed(a.seed) == (nkeys.PREFIX_BYTE_ACCOUNT, entropy)
    with pytest.raises(nkeys.InvalidPrefixError):
        nkeys.KeyPair.create(nkeys.PREFIX_BYTE_CURVE)
    with pytest.raises(nkeys.InvalidSeedError):
        nkeys.KeyPair.create(nkeys.PREFIX_BYTE_USER, b"short")


def test_curve_keys_seal_and_open():
    alice, bob = nkeys.CurveKeyPair.create(), nkeys.CurveKeyPair.create()
    assert alice.public_key.startswith("X")
    assert alice.seed.startswith(b"SX")
    assert nkeys.is_valid_public_curve_key(alice.public_key)
    restored = nkeys.from_seed(alice.seed)
    assert isinstance(restored, nkeys.CurveKeyPair)
    assert restored.public_key == alice.public_key
    sealed = alice.seal(b"auth request", bob.public_key)
    assert sealed.startswith(nkeys.XKEY_VERSION_V1)
    assert bob.open(sealed, alice.public_key) == b"auth request"
    with pytest.raises(nkeys.DecryptError):
        bob.open(sealed, bob.public_key)  # wrong sender
    with pytest.raises(nkeys.DecryptError):
        bob.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), alice.public_key)
    with pytest.raises(nkeys.DecryptError):
        bob.open(b"xkv2" + sealed[4:], alice.public_key)
    with pytest.raises(nkeys.DecryptError):
        bob.open(sealed[:20], alice.public_key)
    with pytest.raises(nkeys.InvalidPublicKeyError):
        alice.seal(b"x", nkeys.KeyPair.create(nkeys.PREFIX_BYTE_USER).public_key)
    # Curve seeds are not signing keys.
    with pytest.raises(nkeys.InvalidPrefixError):
        nkeys.KeyPair.from_seed(alice.seed)
    assert isinstance(nkeys.from_seed(nkeys.KeyPair.create(nkeys.PREFIX_BYTE_USER).seed), nkeys.KeyPair)
