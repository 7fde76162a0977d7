"""``ocsp_peer``: a client certificate checked with the OCSP responder its CA names.

Theory of operation
-------------------
With ``ocsp_peer: true`` (or ``ocsp_peer { verify: true, ... }``) in a ``tls {}`` block that
also has ``verify``, every client certificate that passed the TLS verification is checked
for revocation before the connection goes on (Go: server/ocsp_peer.go, certidp). The chain
is the peer's certificate up to a trusted root: the verified chain where the stdlib gives it
(Python 3.13), else built from the leaf with the CA certificates of the server's context
(``ca_file`` or the system roots), each link's issuer checked by signature. Python 3.11 does
not show the intermediates a client sends, so a leaf whose issuer is not among those CA
certificates cannot be checked and is refused, as Go refuses a link without an issuer.

A chain of one (a trusted self-signed certificate) is valid; so is a chain none of whose
links (the root excluded) names an http(s) OCSP responder in its Authority Information
Access. Otherwise every such link needs a current "good" answer: from the cache (keyed by
the SHA-256 of the certificate, base64, as Go's), else from the responders in turn with
Go's request: ``GET <responder>/<url-escaped base64 of the DER OCSP request>`` under
``ca_timeout``. An answer counts when it is a successful OCSP response for that serial,
signed by the issuer or by a delegate the issuer signed with the OCSP-signing key usage,
and current: ``next_update`` (or, without one, ``this_update`` plus
``cache_ttl_when_next_update_unset``) not before now minus ``allowed_clockskew``, and
``this_update`` not after now plus the skew. Go does not compare the serial; natsx does,
so an answer about another certificate of the same CA never passes. ``revoked``, and
``unknown`` unless ``unknown_is_good``, fail the link. ``warn_only`` lets every failure
through with a warning; ``allow_when_ca_unreachable`` lets a link through when no responder
answered and the cache holds no revocation for it.

A refused client gets its handshake failure as in Go: the connection is closed as "TLS
Handshake Error" and ``TLS handshake error: client not OCSP valid`` is logged. Go refuses in
the handshake itself (a TLS alert); Python has no hook there, so natsx closes right after
the handshake, before reading anything from the client. The log lines are Go's
(certidp/messages.go). Not done: the ``$SYS`` OCSP peer advisories, and Go's ``ocsp_cache``
(a cache saved to disk, shared by the server): the cache here is each worker's own, in
memory.

The check runs once per new TLS connection, in a thread (the responder calls block), never
per message. ``evaluate`` is the whole decision with the fetch and the clock passed in.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

import attrs

__all__ = ["OCSPPeerConfig", "REJECT_CLIENT", "MTLS_REQUIRED", "evaluate", "build_chain",
           "fingerprint", "check_connection", "ResponseCache"]

log = logging.getLogger("natsx.server")

REJECT_CLIENT = "client not OCSP valid"
MTLS_REQUIRED = ("OCSP peer verification for client connections requires TLS verify (mTLS) "
                 "to be enabled")

# certidp/messages.go
_FAILED_FETCH = "Failed OCSP response fetch"
_NOT_EFFECTIVE = "OCSP response not in effectivity window"
_FAILED_PARSE = "Failed OCSP response parse"
_INVALID_STATUS = "Invalid OCSP response status: {}"
_DELEGATION_INVALID = "Invalid OCSP response delegation: {}"
_CALLOUT_FAIL = "Attempt to obtain OCSP response from CA responder for [{}] failed: {}"
_NOT_CURRENT = "New OCSP CA response obtained for [{}] but not current"
_PARSE_FAILED = "Could not parse OCSP CA response for [{}]: {}"
_INVALID_LINK = "OCSP verify fail for [{}] with CA status [{}]"
_ALLOW_UNREACHABLE = ("Failed to obtain OCSP CA response for [{}] but AllowWhenCAUnreachable "
                      "set; no cached revocation so allowing")
_UNREACHABLE_REVOKED = ("Failed to obtain OCSP CA response for [{}] but AllowWhenCAUnreachable "
                        "set; cached revocation exists so rejecting")
_ALLOW_WARN_ONLY = "OCSP verify fail for [{}] but WarnOnly is true so allowing"


@attrs.frozen
class OCSPPeerConfig:
    """Go's certidp.OCSPPeerConfig; durations in seconds."""

    verify: bool = False
    timeout: float = 2.0
    clock_skew: float = 30.0
    warn_only: bool = False
    unknown_is_good: bool = False
    allow_when_ca_unreachable: bool = False
    ttl_unset_next_update: float = 3600.0


class ResponseCache:
    """Raw OCSP responses by certificate fingerprint (Go: the LOCAL cache, in memory)."""

    def __init__(self) -> None:
        self._items: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: str, raw: bytes) -> None:
        with self._lock:
            self._items[key] = raw

    def delete(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


_CACHE = ResponseCache()


# ------------------------------------------------------------------ certificates

def fingerprint(cert) -> str:
    """Go's GenerateFingerprint: base64 of the SHA-256 of the DER."""
    from cryptography.hazmat.primitives.serialization import Encoding

    return base64.b64encode(hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()).decode()


def subject_dn(cert) -> str:
    """Go's GetSubjectDNForm (for logs): the RDN sequence, most significant first."""
    return ",".join(rdn.rfc4514_string() for rdn in reversed(list(cert.subject.rdns)))


def _issued_by(cert, issuer) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:   # InvalidSignature, or a key type that cannot sign certificates
        return False
    return True


def build_chain(leaf_der: bytes, candidates: list[bytes]) -> list:
    """The chain from the peer's certificate up to a self-signed one (or as far as the
    ``candidates`` reach), as cryptography certificates."""
    from cryptography import x509

    leaf = x509.load_der_x509_certificate(leaf_der)
    pool = []
    for der in candidates:
        try:
            pool.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    chain = [leaf]
    while len(chain) < 10:
        cert = chain[-1]
        if cert.issuer == cert.subject and _issued_by(cert, cert):
            break
        issuer = next((c for c in pool if c != cert and _issued_by(cert, c)), None)
        if issuer is None:
            break
        chain.append(issuer)
    return chain


def _responders(cert) -> list[str]:
    """Go's CertOCSPEligible/getWebEndpoints: the http(s) OCSP URLs of the AIA."""
    from cryptography import x509
    from cryptography.x509.oid import AuthorityInformationAccessOID

    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except x509.ExtensionNotFound:
        return []
    urls = []
    for desc in aia.value:
        if desc.access_method != AuthorityInformationAccessOID.OCSP:
            continue
        loc = desc.access_location
        if isinstance(loc, x509.UniformResourceIdentifier):
            parsed = urllib.parse.urlparse(loc.value)
            if parsed.scheme in ("http", "https") and parsed.netloc:
                urls.append(loc.value)
    return urls


# ------------------------------------------------------------------ responses

def request_path(leaf, issuer) -> str:
    """Go's encodeOCSPRequest of ocsp.CreateRequest(leaf, issuer): SHA-1 cert id."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    der = (ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
           .public_bytes(serialization.Encoding.DER))
    return urllib.parse.quote_plus(base64.b64encode(der).decode())


def fetch(responders: list[str], leaf, issuer, timeout: float) -> bytes:
    """Go's FetchOCSPResponse: GET each responder in turn until one answers 200.

    Raises:
        OSError: with Go's text when none did.
    """
    if not responders:
        raise OSError("no available OCSP servers")
    path = request_path(leaf, issuer)
    last: Exception | None = None
    for url in responders:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/" + path,  # noqa: S310
                                        timeout=timeout if timeout > 0 else 2.0) as resp:
                if resp.status != 200:
                    raise OSError(f"bad OCSP responder http status: [{resp.status}]")
                return resp.read()
        except urllib.error.HTTPError as exc:
            last = OSError(f"bad OCSP responder http status: [{exc.code}]")
        except (OSError, ValueError) as exc:
            last = exc
    raise OSError(f"exhausted OCSP responders: {last}")


class _Parsed:
    def __init__(self, status: str, this_update, next_update, delegate) -> None:
        self.status = status
        self.this_update = this_update
        self.next_update = next_update
        self.delegate = delegate


def _verify_signature(key, signature: bytes, data: bytes, hash_alg) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), hash_alg)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(hash_alg))
    else:
        key.verify(signature, data)


def parse_response(raw: bytes, leaf, issuer) -> _Parsed:
    """Go's ocsp.ParseResponse(raw, issuer) (signature by the issuer or a delegate it
    signed) plus the serial check.

    Raises:
        ValueError: not a usable response.
    """
    from cryptography.x509 import ocsp

    resp = ocsp.load_der_ocsp_response(raw)
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise ValueError(f"OCSP response status {resp.response_status.name.lower()}")
    delegate = resp.certificates[0] if resp.certificates else None
    signer = issuer
    if delegate is not None and delegate != issuer:
        if not _issued_by(delegate, issuer):
            raise ValueError("bad signature on embedded certificate")
        signer = delegate
    try:
        _verify_signature(signer.public_key(), resp.signature, resp.tbs_response_bytes,
                          resp.signature_hash_algorithm)
    except Exception as exc:   # cryptography's InvalidSignature, or an unusable key
        raise ValueError(f"signature verification failed: {type(exc).__name__}") from None
    if resp.serial_number != leaf.serial_number:
        raise ValueError("the response is for another certificate")
    status = {ocsp.OCSPCertStatus.GOOD: "good", ocsp.OCSPCertStatus.REVOKED: "revoked"}.get(
        resp.certificate_status, "unknown")
    return _Parsed(status, _utc(resp, "this_update"), _utc(resp, "next_update"),
                   delegate if delegate is not None and delegate != issuer else None)


def _utc(resp, name: str):
    """``<name>_utc`` (cryptography 43+), or the naive UTC value made aware."""
    if hasattr(resp, name + "_utc"):
        return getattr(resp, name + "_utc")
    value = getattr(resp, name)
    return value.replace(tzinfo=datetime.timezone.utc) if value is not None else None


def _delegation_ok(parsed: _Parsed) -> bool:
    """Go's ValidDelegationCheck: a delegate must carry id-kp-OCSPSigning."""
    if parsed.delegate is None:
        return True
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        eku = parsed.delegate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.OCSP_SIGNING in eku.value


def _current(parsed: _Parsed, opts: OCSPPeerConfig, now: datetime.datetime) -> bool:
    """Go's OCSPResponseCurrent."""
    skew = datetime.timedelta(seconds=opts.clock_skew if opts.clock_skew >= 0 else 30.0)
    if parsed.next_update is not None and parsed.next_update < now - skew:
        return False
    if parsed.next_update is None:
        ttl = opts.ttl_unset_next_update if opts.ttl_unset_next_update >= 0 else 3600.0
        if parsed.this_update + datetime.timedelta(seconds=ttl) < now - skew:
            return False
    return not parsed.this_update > now + skew


# ------------------------------------------------------------------ the decision

def _link_good(leaf, issuer, responders: list[str], opts: OCSPPeerConfig, cache: ResponseCache,
               fetcher: Callable, now: datetime.datetime) -> tuple[str, bool]:
    """Go's certOCSPGood: ("", True) or (reason, False)."""
    key = fingerprint(leaf)
    subj = subject_dn(leaf)
    parsed = None
    cached_revocation = False
    raw = cache.get(key)
    if raw:
        try:
            cached = parse_response(raw, leaf, issuer)
        except ValueError:
            cache.delete(key)
        else:
            if not _delegation_ok(cached):
                cache.delete(key)
            else:
                if _current(cached, opts, now):
                    parsed = cached
                else:
                    cache.delete(key)
                cached_revocation = cached.status == "revoked"
    if parsed is None:
        try:
            raw = fetcher(responders, leaf, issuer, opts.timeout)
        except OSError as exc:
            raw, err = None, exc
        else:
            err = None if raw else OSError("empty response")
        if not raw:
            log.warning(_CALLOUT_FAIL.format(subj, err))
            if opts.warn_only:
                log.warning(_ALLOW_WARN_ONLY.format(subj))
                return "", True
            if opts.allow_when_ca_unreachable and not cached_revocation:
                log.warning(_ALLOW_UNREACHABLE.format(subj))
                return "", True
            if opts.allow_when_ca_unreachable:
                log.warning(_UNREACHABLE_REVOKED.format(subj))
            return _FAILED_FETCH, False
        try:
            parsed = parse_response(raw, leaf, issuer)
        except ValueError as exc:
            log.error(_PARSE_FAILED.format(subj, exc))
            if opts.warn_only:
                log.warning(_ALLOW_WARN_ONLY.format(subj))
                return "", True
            return _FAILED_PARSE, False
        if not _delegation_ok(parsed):
            log.warning(_DELEGATION_INVALID.format(subj))
            if opts.warn_only:
                log.warning(_ALLOW_WARN_ONLY.format(subj))
                return "", True
            return _DELEGATION_INVALID.format(subj), False
        if not _current(parsed, opts, now):
            log.warning(_NOT_CURRENT.format(subj))
            if opts.warn_only:
                log.warning(_ALLOW_WARN_ONLY.format(subj))
                return "", True
            return _NOT_EFFECTIVE, False
        cache.put(key, raw)
    if parsed.status == "revoked" or (parsed.status == "unknown" and not opts.unknown_is_good):
        log.warning(_INVALID_LINK.format(subj, parsed.status))
        if opts.warn_only:
            log.warning(_ALLOW_WARN_ONLY.format(subj))
            return "", True
        return _INVALID_STATUS.format(parsed.status), False
    log.debug("OCSP verify pass for [%s]", subj)
    return "", True


def evaluate(chain: list, opts: OCSPPeerConfig, *, cache: ResponseCache | None = None,
             fetcher: Callable = fetch, now: datetime.datetime | None = None) -> bool:
    """Go's peerOCSPValid for one chain (leaf first, root last)."""
    if not chain:
        log.error("Peer certificate is nil, rejecting OCSP peer")
        return False
    cache = cache if cache is not None else _CACHE
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if len(chain) == 1:
        return True
    eligible = []
    for pos in range(len(chain) - 1):
        urls = _responders(chain[pos])
        if urls:
            eligible.append((chain[pos], chain[pos + 1], urls))
    if not eligible:
        return True
    for leaf, issuer, urls in eligible:
        reason, good = _link_good(leaf, issuer, urls, opts, cache, fetcher, now)
        if not good:
            log.debug(reason)
            return False
    return True


def _chain_of(tls_sock, ctx) -> list:
    leaf = tls_sock.getpeercert(binary_form=True)
    if not leaf:
        return []
    verified = getattr(tls_sock, "get_verified_chain", None)
    if verified is not None:
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import Encoding

            certs = verified()
            if certs:
                return [x509.load_der_x509_certificate(
                    c if isinstance(c, bytes) else c.public_bytes(Encoding.DER))
                    for c in certs]
        except (ValueError, AttributeError, TypeError):
            pass
    chain = build_chain(leaf, ctx.get_ca_certs(binary_form=True))
    return chain


async def check_connection(tls_sock, ctx, opts: OCSPPeerConfig) -> bool:
    """Whether the client of an established TLS connection passes ``ocsp_peer``."""
    import trio

    def run() -> bool:
        chain = _chain_of(tls_sock, ctx)
        if not chain or chain[-1].issuer != chain[-1].subject:
            # A link whose issuer is not known here (an intermediate the client sent):
            # refused, as Go refuses a link without an issuer.
            log.debug("OCSP peer chain incomplete: %d link(s) and no root", len(chain))
            return False
        return evaluate(chain, opts)

    return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
