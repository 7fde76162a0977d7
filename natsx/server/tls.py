"""TLS for client listeners: the SSL context from a ``tls {}`` block, and the handshake.

Theory of operation
-------------------
A ``tls {}`` block (the top-level one for NATS clients, ``websocket { tls {} }`` for
WebSocket) is parsed by natsx.server.config_options into a ``TLSConfigOpts`` record: plain
data, comparable and cheap to copy into every worker. ``server_context(opts)`` turns it into
an ``ssl.SSLContext`` the way Go's ``GenTLSConfig`` builds a ``tls.Config``: TLS 1.2 at least
(``min_version`` may raise it), the certificate and key, the CA for client certificates,
client certificates required when ``verify`` is set, Go's cipher suites (by their Go names)
and curve preferences. It raises ``TLSSetupError`` with Go's text, which the config loader
reports at startup and on a reload, so a bad file never reaches a worker.

``certs`` (or ``certificates``) gives several certificate/key pairs instead of one: each
gets its own context with the same settings, and an SNI callback on the first switches a
handshake to the context of the first certificate whose DNS names match the name the
client asked for (Go's crypto/tls getCertificate: ``*`` only as the whole leftmost label,
no match or no name: the first certificate). Go also skips a certificate whose key type
the client cannot verify; natsx does not. The callback runs once per handshake, off the
hot path. ``client_context(opts)`` is the same block used to connect out (``resolver_tls``).

The Windows certificate store keys (``cert_store`` and friends) never reach here: on
Linux Go refuses a store in the config parser, and so does natsx, with Go's texts.
``connection_rate_limit`` is natsx.server.tls_rate.

The connection stays a non-blocking stdlib socket. ``wrap_server(ctx, sock)`` turns it into a
non-blocking ``ssl.SSLSocket`` (the original socket object is detached: use the returned one
from then on) and ``await handshake(tls_sock, timeout)`` drives ``do_handshake`` with trio's
readiness waits. Afterwards ``recv``/``send`` are used as before, except that
``ssl.SSLWantReadError``/``ssl.SSLWantWriteError`` mean "wait" (like ``BlockingIOError``)
and a ``send`` that had to wait must be retried with the same bytes. ``peek(sock, timeout)``
looks at what a client sent first without consuming it: Go's check for a TLS record (0x16)
when ``allow_non_tls`` lets both kinds of clients in, and for a client that starts the
handshake before INFO (``handshake_first`` with a fallback delay).

``connection_state`` and ``peer_certificates`` give what /connz reports (Go's
``tls_version``, ``tls_cipher_suite`` and ``tls_peer_certs``); ``pinned`` checks
``pinned_certs`` (the SHA-256 of the peer's SubjectPublicKeyInfo) after the handshake.
"""
from __future__ import annotations

import hashlib
import logging
import socket
import ssl

import attrs
import trio

log = logging.getLogger("natsx")

__all__ = ["TLSConfigOpts", "TLSSetupError", "HandshakeError", "server_context",
           "client_context", "name_matches", "pick_context", "wrap_server", "check_ocsp_peer",
           "handshake", "peek", "connection_state", "peer_certificates", "peer_certificate",
           "pinned", "cert_not_after", "GO_CIPHERS", "INSECURE_CIPHERS", "CURVES",
           "TLS_TIMEOUT", "HANDSHAKE_FIRST_FALLBACK", "THROTTLED_ERR", "WANT_IO"]

TLS_TIMEOUT = 2.0                 # Go: TLS_TIMEOUT
HANDSHAKE_FIRST_FALLBACK = 0.05   # Go: DEFAULT_TLS_HANDSHAKE_FIRST_FALLBACK_DELAY
#: what a client refused by ``connection_rate_limit`` reads (natsx.server.tls_rate)
THROTTLED_ERR = "Connection throttling is active. Please try again later."

#: The "wait and retry" errors of a non-blocking SSL socket (and of a plain one).
WANT_IO = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

# Go's tls.CipherSuites() (secure) by Go name -> OpenSSL name, in Go's order. The TLS 1.3
# suites are not configurable (in Go neither): they map to None.
GO_CIPHERS: dict[str, str | None] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# Go's tls.InsecureCipherSuites(): accepted only with allow_insecure_cipher_suites.
INSECURE_CIPHERS: dict[str, str] = {
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
}
# Go picks a suite by its own preference order (crypto/tls cipherSuitesPreferenceOrder), not
# the configured one: AEADs with ECDHE first, then CBC; the server's order here is the same.
_PREFERENCE = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_RC4_128_SHA",
)
_GO_NAME_BY_OPENSSL = {v: k for k, v in {**GO_CIPHERS, **INSECURE_CIPHERS}.items() if v}

# Go's curvePreferenceMap -> OpenSSL group names (None: not offered by this OpenSSL).
CURVES: dict[str, str | None] = {
    "X25519MLKEM768": "X25519MLKEM768",
    "X25519": "X25519",
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
}

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERSION_NAMES = {"TLSv1": "1.0", "TLSv1.1": "1.1", "TLSv1.2": "1.2", "TLSv1.3": "1.3"}


@attrs.frozen
class TLSConfigOpts:
    """A parsed ``tls {}`` block (Go: TLSConfigOpts). Empty/zero fields mean Go's default."""

    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    verify: bool = False
    insecure: bool = False
    #: verify_and_map: the user is taken from the client certificate
    map: bool = False
    #: seconds; 0 means the listener's default (TLS_TIMEOUT)
    timeout: float = 0.0
    handshake_first: bool = False
    #: seconds to wait for a "TLS first" client before sending INFO anyway; 0: never
    fallback_delay: float = 0.0
    #: Go cipher suite names; None: Go's defaults (GO_CIPHERS)
    ciphers: tuple | None = None
    #: Go curve names; None: Go's defaults
    curve_preferences: tuple | None = None
    #: lower-case hex SHA-256 of accepted peers' SubjectPublicKeyInfo; None: any
    pinned_certs: frozenset | None = None
    #: "1.2" or "1.3"; empty: TLS 1.2
    min_version: str = ""
    #: ``certs``/``certificates``: (cert_file, key_file) pairs, chosen by the client's SNI
    #: name, the first by default; empty when ``cert_file`` is used (Go forbids both)
    certificates: tuple = ()
    #: ``connection_rate_limit``: TLS handshakes started per second; 0: no limit
    rate_limit: int = 0
    #: ``ocsp_peer`` (natsx.server.ocsp_peer.OCSPPeerConfig); None: not configured
    ocsp_peer: object = None
    #: a digest of the files' contents, so that a reload sees replaced certificates
    files_digest: str = ""

    @property
    def ocsp_peer_verify(self) -> bool:
        """``ocsp_peer`` is on (its ``verify``)."""
        return self.ocsp_peer is not None and self.ocsp_peer.verify

    @property
    def primary_pair(self) -> tuple[str, str]:
        """The default certificate and key files: ``cert_file``/``key_file`` or the first
        of ``certificates`` (what Go's monitor serves and reports in varz)."""
        if self.cert_file or not self.certificates:
            return self.cert_file, self.key_file
        return self.certificates[0]


class TLSSetupError(Exception):
    """The TLS configuration cannot be used; the text is Go's (GenTLSConfig)."""


class HandshakeError(Exception):
    """The TLS handshake failed or timed out (Go closes with "TLS Handshake Error")."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


# ------------------------------------------------------------------ the context

def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TLSSetupError(f"open {path}: no such file or directory") from None
    except PermissionError:
        raise TLSSetupError(f"open {path}: permission denied") from None
    except OSError as exc:
        raise TLSSetupError(f"open {path}: {exc.strerror or exc}") from None


def files_digest(opts: TLSConfigOpts) -> str:
    """A digest of the certificate, key and CA files (empty when none can be read)."""
    h = hashlib.sha256()
    paths = [opts.cert_file, opts.key_file, opts.ca_file]
    for cert, key in opts.certificates:
        paths += [cert, key]
    for path in paths:
        if path:
            try:
                with open(path, "rb") as f:
                    h.update(f.read())
            except OSError:
                h.update(b"\0missing\0" + path.encode())
    return h.hexdigest()


def _load_pair(ctx: ssl.SSLContext, cert_file: str, key_file: str, which: str = "") -> None:
    prefix = f"error parsing X509 certificate/key pair{which}: "
    try:
        cert = _read(cert_file)
        key = _read(key_file)
    except TLSSetupError as exc:
        raise TLSSetupError(prefix + str(exc)) from None
    if b"-----BEGIN" not in cert:
        raise TLSSetupError(prefix + "tls: failed to find any PEM data in certificate input")
    if b"-----BEGIN" not in key:
        raise TLSSetupError(prefix + "tls: failed to find any PEM data in key input")
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        text = str(exc)
        if "KEY_VALUES_MISMATCH" in text or "key values mismatch" in text:
            raise TLSSetupError(prefix + "tls: private key does not match public key") from None
        raise TLSSetupError(prefix + f"tls: {exc.reason or text}") from None
    except OSError as exc:
        raise TLSSetupError(prefix + str(exc)) from None


def _base_context(opts: TLSConfigOpts, purpose: int) -> ssl.SSLContext:
    """A context with every setting of ``opts`` but the certificates and CAs."""
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # A peer that drops the TCP connection without close_notify is a clean EOF in Go.
    ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE     # Go: PreferServerCipherSuites
    ctx.options |= ssl.OP_NO_RENEGOTIATION if hasattr(ssl, "OP_NO_RENEGOTIATION") else 0
    ciphers = opts.ciphers if opts.ciphers is not None else tuple(GO_CIPHERS)
    ciphers = sorted(ciphers, key=lambda c: _PREFERENCE.index(c) if c in _PREFERENCE else 99)
    names = [GO_CIPHERS.get(c) or INSECURE_CIPHERS.get(c) for c in ciphers]
    names = [n for n in names if n]
    if names:
        try:
            ctx.set_ciphers(":".join(names))
        except ssl.SSLError:
            raise TLSSetupError("no cipher suite of the configuration is available") from None
    curves = opts.curve_preferences
    if curves is not None and len(curves) == 1 and CURVES.get(curves[0]):
        # The stdlib sets a single group; a longer list keeps OpenSSL's defaults, which
        # are Go's (X25519, P-256, P-384, P-521).
        try:
            ctx.set_ecdh_curve(CURVES[curves[0]])
        except (ValueError, ssl.SSLError):
            pass
    if opts.min_version:
        version = _VERSIONS.get(opts.min_version)
        if version is None:
            raise TLSSetupError(f"unsupported minimum TLS version: {opts.min_version}")
        ctx.minimum_version = version
    return ctx


def _check_files(opts: TLSConfigOpts) -> None:
    if opts.cert_file and not opts.key_file:
        raise TLSSetupError("missing 'key_file' in TLS configuration")
    if opts.key_file and not opts.cert_file:
        raise TLSSetupError("missing 'cert_file' in TLS configuration")


def _load_cas(ctx: ssl.SSLContext, opts: TLSConfigOpts) -> None:
    pem = _read(opts.ca_file)
    try:
        ctx.load_verify_locations(cadata=pem.decode("latin-1"))
    except (ssl.SSLError, ValueError):
        raise TLSSetupError("failed to parse root ca certificate") from None


def _server_context(opts: TLSConfigOpts, pair: tuple[str, str] | None,
                    which: str = "") -> ssl.SSLContext:
    ctx = _base_context(opts, ssl.PROTOCOL_TLS_SERVER)
    if pair is not None:
        _load_pair(ctx, pair[0], pair[1], which)
    if opts.verify:
        ctx.verify_mode = ssl.CERT_REQUIRED   # Go: RequireAndVerifyClientCert
    if opts.ca_file:
        _load_cas(ctx, opts)
    elif opts.verify:
        ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)   # Go: the system roots
    return ctx


def server_context(opts: TLSConfigOpts) -> ssl.SSLContext:
    """The server-side ``ssl.SSLContext`` for a ``tls {}`` block (Go: GenTLSConfig).

    With ``certificates``, the context holds the first pair and an SNI callback switches
    a handshake to the context of the first pair whose certificate names the client's
    server name (Go: crypto/tls getCertificate, which falls back to the first too).

    Raises:
        TLSSetupError: a file is missing or unusable, with Go's text.
    """
    _check_files(opts)
    if opts.cert_file or not opts.certificates:
        return _server_context(opts, (opts.cert_file, opts.key_file) if opts.cert_file
                               else None)
    n = len(opts.certificates)
    contexts = []
    for i, pair in enumerate(opts.certificates):
        ctx = _server_context(opts, pair, f" {i + 1}/{n}")
        contexts.append((_cert_names(pair[0]), ctx))
    main = contexts[0][1]
    if n > 1:
        main.sni_callback = _sni_picker(contexts)
    return main


def client_context(opts: TLSConfigOpts) -> ssl.SSLContext:
    """A client-side ``ssl.SSLContext`` for a ``tls {}`` block used to connect out (Go:
    GenTLSConfig with the CA file as RootCAs, as for ``resolver_tls``): the server's
    certificate checked against ``ca_file`` (the system roots without one) and its name,
    unless ``insecure``; ``cert_file``/``key_file`` (or the first of ``certificates``)
    offered as the client certificate.

    Raises:
        TLSSetupError: a file is missing or unusable, with Go's text.
    """
    _check_files(opts)
    ctx = _base_context(opts, ssl.PROTOCOL_TLS_CLIENT)
    cert, key = opts.primary_pair
    if cert:
        which = f" 1/{len(opts.certificates)}" if opts.certificates else ""
        _load_pair(ctx, cert, key, which)
    if opts.ca_file:
        _load_cas(ctx, opts)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if opts.insecure:
        ctx.check_hostname = False            # Go: InsecureSkipVerify
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _cert_names(cert_file: str) -> tuple[str, ...]:
    """The DNS names of a certificate file's leaf (its SANs; Go ignores the CN)."""
    from cryptography import x509

    try:
        with open(cert_file, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return ()
    return tuple(n.lower().rstrip(".") for n in san.value.get_values_for_type(x509.DNSName))


def must_staple(cert_file: str) -> bool:
    """Whether a certificate file's leaf carries the TLS feature ``status_request`` (RFC
    7633 "must staple"; Go: hasOCSPStatusRequest)."""
    from cryptography import x509

    try:
        with open(cert_file, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        feature = cert.extensions.get_extension_for_class(x509.TLSFeature)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    return x509.TLSFeatureType.status_request in feature.value


def check_ocsp_stapling(ocsp: dict | None, configs) -> str:
    """Go's NewOCSPMonitor decision, for each server TLS config (the first certificate,
    as Go): a staple is needed with mode ``always``, or when the certificate says "must
    staple" and the mode is not ``never`` (no ``ocsp`` at all is Go's auto). natsx cannot
    staple (Python's ssl module has no server-side status_request), so a config that needs
    a staple is refused here; every other config behaves as Go's, which staples nothing
    for it either. Returns the refusal, or "" (and logs Go's warning for ``never``)."""
    mode = (ocsp or {}).get("mode", "auto")
    for tc in configs:
        if tc is None:
            continue
        cert_file = tc.primary_pair[0]
        if not cert_file:
            continue
        staple = must_staple(cert_file)
        if mode == "never":
            if staple:
                log.warning("Certificate at '%s' has MustStaple but OCSP is disabled", cert_file)
            continue
        if mode == "always" or staple:
            why = "ocsp mode always" if mode == "always" else "its certificate requires it"
            return (f"ocsp: OCSP stapling ({why}: '{cert_file}') is not supported by this "
                    f"natsx build yet")
    return ""


def name_matches(pattern: str, host: str) -> bool:
    """Go's matchHostnames: case-insensitive, a ``*`` only as the whole leftmost label."""
    host = host.lower().rstrip(".")
    if not host or not pattern:
        return False
    p_labels = pattern.split(".")
    h_labels = host.split(".")
    if len(p_labels) != len(h_labels):
        return False
    for i, (p, h) in enumerate(zip(p_labels, h_labels)):
        if i == 0 and p == "*":
            continue
        if p != h:
            return False
    return True


def pick_context(contexts: list, server_name: str | None):
    """The context of the first certificate valid for ``server_name``; the first without
    a name or a match."""
    if server_name:
        for names, ctx in contexts:
            if any(name_matches(n, server_name) for n in names):
                return ctx
    return contexts[0][1]


def _sni_picker(contexts: list):
    def callback(sock: ssl.SSLObject, server_name: str | None, _ctx) -> None:
        chosen = pick_context(contexts, server_name)
        if chosen is not sock.context:
            sock.context = chosen
        return None

    return callback


def cert_not_after(opts: TLSConfigOpts) -> float | None:
    """The expiry (epoch seconds) of the configured certificate, or None."""
    cert_file = opts.primary_pair[0]
    if not cert_file:
        return None
    try:
        from cryptography import x509

        with open(cert_file, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        return cert.not_valid_after_utc.timestamp()
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------ the handshake

def wrap_server(ctx: ssl.SSLContext, sock: socket.socket) -> ssl.SSLSocket:
    """``sock`` (non-blocking) as the server side of a TLS connection, handshake not done.

    ``sock`` is detached: close and use the returned socket from now on.
    """
    return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


async def handshake(tls_sock: ssl.SSLSocket, timeout: float) -> None:
    """Runs the server handshake under ``timeout`` seconds.

    Raises:
        HandshakeError: the peer failed the handshake (bad certificate, not TLS at all,
            went away) or did not finish it in time.
    """
    with trio.move_on_after(timeout) as scope:
        while True:
            try:
                tls_sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                await trio.lowlevel.wait_readable(tls_sock)
            except ssl.SSLWantWriteError:
                await trio.lowlevel.wait_writable(tls_sock)
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                raise HandshakeError("EOF") from None
            except ssl.SSLError as exc:
                raise HandshakeError((exc.reason or str(exc)).lower().replace("_", " ")) \
                    from None
            except OSError as exc:
                raise HandshakeError(str(exc)) from None
    if scope.cancelled_caught:
        raise HandshakeError("i/o timeout", timeout=True)


async def check_ocsp_peer(tls_sock: ssl.SSLSocket, ctx: ssl.SSLContext,
                          opts: TLSConfigOpts | None) -> None:
    """``ocsp_peer`` after the handshake (natsx.server.ocsp_peer).

    Raises:
        HandshakeError: Go's "client not OCSP valid".
    """
    if opts is None or not opts.ocsp_peer_verify:
        return
    from natsx.server.ocsp_peer import REJECT_CLIENT, check_connection

    if not await check_connection(tls_sock, ctx, opts.ocsp_peer):
        raise HandshakeError(REJECT_CLIENT)


async def peek(sock: socket.socket, timeout: float, size: int = 1) -> bytes:
    """Up to ``size`` bytes the client sent first, left unread; b"" if none came in time."""
    with trio.move_on_after(timeout):
        while True:
            try:
                return sock.recv(size, socket.MSG_PEEK)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
            except OSError:
                return b""
    return b""


# ------------------------------------------------------------------ what /connz reports

def connection_state(tls_sock: ssl.SSLSocket) -> tuple[str, str]:
    """(Go's tlsVersion, Go's cipher suite name) of an established connection."""
    version = tls_sock.version() or ""
    cipher = tls_sock.cipher()
    name = cipher[0] if cipher else ""
    return (_VERSION_NAMES.get(version, version),
            _GO_NAME_BY_OPENSSL.get(name, name))


def peer_certificate(tls_sock: ssl.SSLSocket) -> bytes | None:
    """The DER of the client's certificate, if it sent one."""
    try:
        return tls_sock.getpeercert(binary_form=True)
    except (ValueError, OSError):
        return None


def peer_certificates(tls_sock: ssl.SSLSocket) -> list[bytes]:
    """The client's certificate chain as DER, leaf first (the leaf only where the stdlib
    cannot give the chain)."""
    chain = getattr(tls_sock, "get_unverified_chain", None)
    if chain is not None:
        try:
            certs = chain()
            if certs:
                return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)
                        for c in certs]
        except (ValueError, OSError, AttributeError):
            pass
    der = peer_certificate(tls_sock)
    return [der] if der else []


def spki_sha256(der: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def pinned(tls_sock: ssl.SSLSocket, pins: frozenset | None) -> bool:
    """Go's matchesPinnedCert: with pins configured, the peer's key must be one of them."""
    if not pins:
        return True
    der = peer_certificate(tls_sock)
    if not der:
        return False
    try:
        return spki_sha256(der) in pins
    except ValueError:
        return False
