"""The user named by a client certificate (``verify_and_map``), and Go's subject strings.

Theory of operation
-------------------
With ``tls { verify_and_map: true }`` a client does not send credentials: the server takes
its user from the certificate it presented, the way Go's checkClientTLSCertSubject does
(server/auth.go). ``map_user(der, lookup, users)`` tries, in order, each email address, each
DNS name and each URI of the certificate as a user name; then the subject as a
distinguished name compared with every user name that parses as one (exactly, then with the
RDNs in any order: Go's internal/ldap ``Equal`` and ``RDNsMatch``); then the subject string
with its domain components appended (``...,DC=example,DC=com``); then the subject string
alone. ``lookup(name)`` returns the configured user by that exact name (already filtered by
connection type) or None.

The subject strings are Go's, byte for byte: ``subject_string`` is ``pkix.Name.String()``
(what /connz shows in ``tls_peer_certs``; attributes Go has no name for come last as
``OID=#<hex DER>``) and ``rdn_string`` is ``Name.ToRDNSequence().String()`` (the known
attributes only), both most-specific first (``CN=...,O=...,C=US``). Pure functions over DER
bytes: no sockets, no trio.
"""
from __future__ import annotations

from typing import Callable, Iterable

__all__ = ["map_user", "subject_string", "rdn_string", "parse_dn", "dn_equal", "dn_rdns_match"]

# Go: crypto/x509/pkix attributeTypeNames
_NAMES = {
    "2.5.4.6": "C", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.3": "CN", "2.5.4.5": "SERIALNUMBER",
    "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.9": "STREET", "2.5.4.17": "POSTALCODE",
}
# Go: internal/ldap attributeTypeNames (the pkix ones plus DC)
_LDAP_NAMES = dict(_NAMES, **{"0.9.2342.19200300.100.1.25": "DC"})
_DC_OID = "0.9.2342.19200300.100.1.25"
# The order of pkix.Name.ToRDNSequence: C, ST, L, STREET, POSTALCODE, O, OU, CN, SERIALNUMBER.
_SEQ_ORDER = ("2.5.4.6", "2.5.4.8", "2.5.4.7", "2.5.4.9", "2.5.4.17", "2.5.4.10", "2.5.4.11",
              "2.5.4.3", "2.5.4.5")
_PRINTABLE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")


def _load(der: bytes):
    from cryptography import x509

    return x509.load_der_x509_certificate(der)


def _rdns(cert) -> list[list[tuple[str, object]]]:
    """The subject's RDNs in certificate order, each a list of (dotted OID, value)."""
    return [[(a.oid.dotted_string, a.value) for a in rdn] for rdn in cert.subject.rdns]


def _escape(value: str) -> str:
    out = []
    last = len(value) - 1
    for k, c in enumerate(value):
        if c in ',+"\\<>;' or (c == " " and (k == 0 or k == last)) or (c == "#" and k == 0):
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _go_marshal(value) -> str:
    """Hex of Go's asn1.Marshal of a parsed attribute value (strings as Go marshals them)."""
    if isinstance(value, bytes):
        body, tag = value, 0x04
    else:
        text = str(value)
        tag = 0x13 if all(c in _PRINTABLE for c in text) else 0x0C
        body = text.encode("utf-8")
    return (bytes([tag]) + _der_length(len(body)) + body).hex()


def _sequence_string(rdns: list[list[tuple[str, object]]]) -> str:
    """Go's RDNSequence.String(): last RDN first, multi-valued RDNs joined with '+'."""
    parts = []
    for rdn in reversed(rdns):
        atvs = []
        for oid, value in rdn:
            name = _NAMES.get(oid)
            if name is None:
                atvs.append(f"{oid}=#{_go_marshal(value)}")
            else:
                atvs.append(f"{name}={_escape(str(value))}")
        parts.append("+".join(atvs))
    return ",".join(parts)


def _to_rdn_sequence(rdns: list[list[tuple[str, object]]]) -> list[list[tuple[str, object]]]:
    """Go's Name.ToRDNSequence() of a parsed Name: one RDN per known attribute type, its
    values together (a single CN and SERIALNUMBER: the last one parsed)."""
    flat = [atv for rdn in rdns for atv in rdn]
    out = []
    for oid in _SEQ_ORDER:
        values = [v for o, v in flat if o == oid]
        if not values:
            continue
        if oid in ("2.5.4.3", "2.5.4.5"):
            values = values[-1:]
        out.append([(oid, v) for v in values])
    return out


def rdn_string(der: bytes) -> str:
    """Go's ``cert.Subject.ToRDNSequence().String()``."""
    return _sequence_string(_to_rdn_sequence(_rdns(_load(der))))


def subject_string(der: bytes) -> str:
    """Go's ``cert.Subject.String()``: unknown attributes at the end, as OID=#hex."""
    rdns = _rdns(_load(der))
    extra = [[atv] for rdn in rdns for atv in rdn if atv[0] not in _NAMES]
    return _sequence_string(extra + _to_rdn_sequence(rdns))


# ------------------------------------------------------------------ Go's internal/ldap DN

def parse_dn(text: str) -> list[list[tuple[str, str]]] | None:
    """Go's ldap.ParseDN: RDNs in written order, each a list of (type, value); None if the
    text is not a DN."""
    dn: list[list[tuple[str, str]]] = []
    rdn: list[tuple[str, str]] = []
    buf = bytearray()
    atype = ""
    escaping = False
    trailing = 0
    data = text.encode("utf-8")

    def take() -> str:
        nonlocal trailing
        s = bytes(buf[:len(buf) - trailing]).decode("utf-8", "replace")
        buf.clear()
        trailing = 0
        return s
    i = 0
    while i < len(data):
        ch = data[i]
        c = chr(ch)
        if escaping:
            trailing = 0
            escaping = False
            if c in ' "#+,;<=>\\':
                buf.append(ch)
                i += 1
                continue
            if i + 1 == len(data):
                return None
            try:
                buf.append(int(data[i:i + 2].decode("ascii"), 16))
            except (ValueError, UnicodeDecodeError):
                return None
            i += 2
            continue
        if c == "\\":
            trailing = 0
            escaping = True
        elif c == "=":
            atype = take()
            if i + 1 < len(data) and data[i + 1:i + 2] == b"#":
                return None
        elif c in ",+":
            if not atype:
                return None
            rdn.append((atype, take()))
            atype = ""
            if c == ",":
                dn.append(rdn)
                rdn = []
        elif c == " " and not buf:
            pass
        else:
            trailing = trailing + 1 if c == " " else 0
            buf.append(ch)
        i += 1
    if buf:
        if not atype:
            return None
        rdn.append((atype, take()))
        dn.append(rdn)
    return dn


def _cert_dn(der: bytes) -> list[list[tuple[str, str]]] | None:
    """Go's ldap.FromRawCertSubject: RDNs most-specific first; None when an attribute has
    no name in Go's table or is not a string."""
    out = []
    for rdn in reversed(_rdns(_load(der))):
        if not rdn:
            continue
        attrs_ = []
        for oid, value in reversed(rdn):
            name = _LDAP_NAMES.get(oid)
            if name is None or not isinstance(value, str):
                return None
            attrs_.append((name, value))
        out.append(attrs_)
    return out


def _rdn_equal(a: list[tuple[str, str]], b: list[tuple[str, str]]) -> bool:
    def has_all(x, y):
        return all(any(t1.lower() == t2.lower() and v1 == v2 for t2, v2 in x) for t1, v1 in y)
    return len(a) == len(b) and has_all(a, b) and has_all(b, a)


def dn_equal(a, b) -> bool:
    return len(a) == len(b) and all(_rdn_equal(x, y) for x, y in zip(a, b))


def dn_rdns_match(a, b) -> bool:
    if len(a) != len(b):
        return False
    matched = [False] * len(b)
    for x in a:
        for j, y in enumerate(b):
            if not matched[j] and _rdn_equal(x, y):
                matched[j] = True
                break
        else:
            return False
    return True


# ------------------------------------------------------------------ mapping

def _sans(cert):
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], [], []
    return (ext.get_values_for_type(x509.RFC822Name), ext.get_values_for_type(x509.DNSName),
            ext.get_values_for_type(x509.UniformResourceIdentifier))


def map_user(der: bytes, lookup: Callable[[str], object | None],
             candidates: Iterable[tuple[str, object]]):
    """The user a client certificate maps to, or None (Go: checkClientTLSCertSubject with
    the client's lookup function).

    ``lookup(name)`` finds a user by exact name; ``candidates`` are (name, user) pairs of
    the users allowed on this connection type, for the distinguished-name comparison.
    """
    try:
        cert = _load(der)
    except ValueError:
        return None
    emails, dns_names, uris = _sans(cert)
    for name in [*emails, *dns_names, *uris]:
        user = lookup(name)
        if user is not None:
            return user
    rdns = _rdns(cert)
    rdn = _sequence_string(_to_rdn_sequence(rdns))
    cert_dn = _cert_dn(der)
    if cert_dn is not None:
        parsed = []
        for name, user in candidates:
            dn = parse_dn(name)
            if dn is None:
                continue
            if dn_equal(dn, cert_dn):
                return user
            parsed.append((dn, user))
        for dn, user in parsed:
            if dn_rdns_match(dn, cert_dn):
                return user
    dcs = [f"DC={v}" for r in rdns for oid, v in r if oid == _DC_OID and isinstance(v, str)]
    if dcs:
        user = lookup(rdn + "," + ",".join(dcs))
        if user is not None:
            return user
    return lookup(rdn)
