"""The less common keys of a ``tls {}`` block: ``certs``, ``connection_rate_limit``, the
Windows certificate store keys, and the top-level ``resolver_tls``.

Certificates are generated at test time (test_tls.PKI, plus two server certificates for
different names). The behaviours are Go's: opts.go parseTLS/GenTLSConfig (texts), crypto/tls
getCertificate (the certificate by SNI, else the first), server.go createClientEx and
rate_counter.go (the throttled client's -ERR, its closed reason, the log line; played
against Debian's nats-server 2.9.10, which has the rate limit), certstore_other.go (the
texts on Linux) and server.go configureResolver (the URL resolver's TLS).
"""
from __future__ import annotations

import asyncio
import http.server
import re
import socket
import ssl
import threading
import time

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from conftest import GO_SERVER, NATSX, RunningServer, free_port
from natsx.server.config_options import ConfigProcessError, load_options
from natsx.server.tls import name_matches
from natsx.server.tls_rate import HandshakeRate, RateCounter, shared_allow
from test_operator import World, _echo_roundtrip, creds, raw_connect
from test_tls import (PKI, _name, read_info, servers, start_with_config,  # noqa: F401 (fixture)
                      wait_for, wait_for_log)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = PKI(tmp_path_factory.mktemp("pki"))
    p.leaf("alpha", _name((NameOID.COMMON_NAME, "alpha")), [x509.DNSName("alpha.test")],
           server=True)
    p.leaf("beta", _name((NameOID.COMMON_NAME, "beta")), [x509.DNSName("*.beta.test")],
           server=True)
    return p


def errors(tmp_path, text: str) -> str:
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    with pytest.raises(ConfigProcessError) as info:
        load_options(str(conf))
    return str(info.value).replace(str(conf), "F")


def certs_block(pki, extra: str = "", labels=("alpha", "beta")) -> str:
    entries = ",\n    ".join(
        f'{{cert_file: "{pki.path(label + "-cert.pem")}", '
        f'key_file: "{pki.path(label + "-key.pem")}"}}' for label in labels)
    return f"tls {{\n  certs: [\n    {entries}\n  ]\n  {extra}\n}}\n"


# ------------------------------------------------------------------ certs

def test_certs_config(tmp_path, pki):
    conf = tmp_path / "ok.conf"
    conf.write_text(certs_block(pki).replace("certs:", "certificates:"))
    o, _ = load_options(str(conf))
    assert o.tls_config.cert_file == ""
    assert o.tls_config.certificates == ((pki.path("alpha-cert.pem"), pki.path("alpha-key.pem")),
                                         (pki.path("beta-cert.pem"), pki.path("beta-key.pem")))
    assert o.tls_config.primary_pair == o.tls_config.certificates[0]


def test_certs_config_errors_are_gos(tmp_path, pki):
    assert errors(tmp_path, "tls {\n  certs: 1\n}\n") == (
        "F:2:3: error parsing certificates config: unsupported type map[string]interface {}\n")
    assert errors(tmp_path, 'tls {\n  certs: ["a"]\n}\n').endswith(
        ": error parsing certificates config: unsupported type string\n")
    assert errors(tmp_path, "tls {\n  certs: [{cert_file: 1}]\n}\n").endswith(
        "error parsing certificates config: unsupported type int64\n")
    assert errors(tmp_path, 'tls {\n  certs: [{cert_file: "c", keyfile: "k"}]\n}\n').endswith(
        'error parsing tls certs config, unknown field "keyfile"\n')
    assert errors(tmp_path, 'tls {\n  certs: [{cert_file: "c"}]\n}\n').endswith(
        "error parsing certificates config: both 'cert_file' and 'cert_key' options are "
        "required\n")
    both = certs_block(pki, f'cert_file: "{pki.path("server-cert.pem")}"\n'
                            f'  key_file: "{pki.path("server-key.pem")}"')
    assert errors(tmp_path, both) == (
        "F:1:0: error parsing tls config, cannot combine 'cert_file' option with 'certs' "
        "option\n")
    missing = certs_block(pki).replace(pki.path("beta-cert.pem"), "/nope/beta.pem")
    assert errors(tmp_path, missing) == (
        "F:1:0: error parsing X509 certificate/key pair 2/2: open /nope/beta.pem: no such "
        "file or directory\n")


def test_certificate_by_sni_name(tmp_path, pki, servers):
    srv = start_with_config(tmp_path, certs_block(pki), "--workers", "2")
    servers.append(srv)
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    ctx.check_hostname = False

    def served(name):
        sock, info = read_info(srv.port)
        assert info["tls_required"] is True
        with ctx.wrap_socket(sock, server_hostname=name) as tls:
            sans = tls.getpeercert()["subjectAltName"]
            tls.sendall(b"CONNECT {}\r\nPING\r\n")
            out = b""
            while b"PONG" not in out:
                out += tls.recv(4096)
        return sans

    assert served("alpha.test") == (("DNS", "alpha.test"),)
    assert served("api.beta.test") == (("DNS", "*.beta.test"),)
    assert served("BETA2.beta.test.") == (("DNS", "*.beta.test"),)
    # No certificate for the name, or no name at all: the first one (Go too).
    assert served("other.test") == (("DNS", "alpha.test"),)
    assert served(None) == (("DNS", "alpha.test"),)
    # A verifying client that asks for beta gets a certificate it accepts.
    strict = ssl.create_default_context(cafile=pki.path("ca.pem"))
    sock, _ = read_info(srv.port)
    with strict.wrap_socket(sock, server_hostname="x.beta.test") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    varz = httpx.get(f"http://127.0.0.1:{srv.http_port}/varz", timeout=5).json()
    assert varz["tls_cert_not_after"].endswith("Z")   # the first certificate's


def test_name_matching_is_gos():
    assert name_matches("alpha.test", "ALPHA.test.")
    assert name_matches("*.beta.test", "a.beta.test")
    assert not name_matches("*.beta.test", "beta.test")
    assert not name_matches("*.beta.test", "a.b.beta.test")
    assert not name_matches("a*.beta.test", "ab.beta.test")
    assert not name_matches("alpha.test", "")


# ------------------------------------------------------------------ cert stores (Windows only)

def test_cert_store_keys_answer_as_go_on_linux(tmp_path, pki):
    def block(extra):
        return pki.tls_block(extra, ca=False)

    assert errors(tmp_path, block('cert_store: "WindowsCurrentUser"')) == (
        "F:4:3: cert_store not compatible with current operating system\n")
    assert errors(tmp_path, block('cert_store: "WindowsLocalMachine"')).endswith(
        ": cert_store not compatible with current operating system\n")
    assert errors(tmp_path, block('cert_store: "MacKeychain"')).endswith(
        ": cert store type not implemented\n")
    assert errors(tmp_path, block('cert_store: ""')).endswith(
        ": expected 'cert_store' to be a valid non-empty string\n")
    assert errors(tmp_path, block('cert_match_by: "Serial"')).endswith(
        ": cert match by type not implemented\n")
    assert errors(tmp_path, block("cert_match_by: 1")).endswith(
        ": expected 'cert_match_by' to be a valid non-empty string\n")
    assert errors(tmp_path, block("cert_match: true")).endswith(
        ": expected 'cert_match' to be a valid non-empty string\n")
    assert errors(tmp_path, block('cert_match_skip_invalid: "yes"')).endswith(
        ": expected 'cert_match_skip_invalid' to be a boolean\n")
    assert errors(tmp_path, block('ca_certs_match: ["CA", true]')).endswith(
        ": error parsing ca_cert_match: unsupported type *conf.token where string is "
        "expected\n")
    # Without a store the matching keys are parsed and have no effect, as in Go.
    conf = tmp_path / "ok.conf"
    conf.write_text(block('cert_match_by: "Subject"\n  cert_match: "x"\n'
                          '  cert_match_skip_invalid: true\n  ca_certs_match: ["CA"]'))
    o, _ = load_options(str(conf))
    assert o.tls_config.cert_file == pki.path("server-cert.pem")


# ------------------------------------------------------------------ connection_rate_limit

def test_rate_counter_is_gos():
    rc = RateCounter(2)
    # A window opens at the first handshake after the last one ended and lasts a second.
    assert [rc.allow(t) for t in (10.0, 10.1, 10.2, 10.9)] == [True, True, False, False]
    assert rc.count_blocked() == 2 and rc.count_blocked() == 0
    assert [rc.allow(t) for t in (11.05, 11.5, 12.0)] == [True, True, False]
    assert rc.allow(12.1)   # 12.05 ended the window opened at 11.05


class _Table:
    """natsx.server.mesh.PeerTable's TLS rate words, for several workers."""

    def __init__(self, workers):
        self.workers = workers
        self.words = [0] * workers

    def tls_rate(self, i):
        return self.words[i]

    def set_tls_rate(self, i, word):
        self.words[i] = word


def test_shared_budget_across_workers():
    table = _Table(3)
    got = [shared_allow(table, i % 3, 4, 100.2 + i * 0.01) for i in range(7)]
    assert got == [True] * 4 + [False] * 3       # the limit is the server's, not a worker's
    assert shared_allow(table, 2, 4, 101.0)       # a new second
    assert shared_allow(table, 0, 4, 101.5)
    # A refused handshake gives its reservation back: the second is still 2 of 4.
    assert not shared_allow(table, 1, 0, 101.6)
    assert shared_allow(table, 1, 4, 101.7) and shared_allow(table, 1, 4, 101.8)
    assert not shared_allow(table, 0, 4, 101.9)
    # HandshakeRate counts its own rejections (one log line per worker and second).
    rate = HandshakeRate(1)

    class Worker:
        peer_table = table
        worker_index = 0

    assert rate.allow(Worker, 205.0) and not rate.allow(Worker, 205.1)
    assert rate.count_blocked() == 1 and rate.count_blocked() == 0


def test_rate_limit_config(tmp_path, pki):
    conf = tmp_path / "ok.conf"
    conf.write_text(pki.tls_block("connection_rate_limit: 5", ca=False))
    o, _ = load_options(str(conf))
    assert o.tls_config.rate_limit == 5
    assert errors(tmp_path, pki.tls_block('connection_rate_limit: "5"', ca=False)).endswith(
        ": error parsing tls config, 'connection_rate_limit' wrong type\n")


def _info_line(port):
    """A new connection and what arrived up to the end of INFO (and with it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    got = b""
    while b"\r\n" not in got:
        chunk = sock.recv(4096)
        assert chunk, f"closed before INFO: {got!r}"
        got += chunk
    return sock, got


def _quiet(port):
    """Waits until the start-up probe's connection (and this one) no longer count: each
    took a handshake of the window it opened."""
    sock, _ = _info_line(port)
    sock.close()
    time.sleep(1.1)


def _burst(port, n, ctx):
    """n TLS clients one after the other, then one in the clear: how many got through,
    which were refused (their index) and everything the last one read."""
    ok, refused = 0, []
    for i in range(n):
        sock, got = _info_line(port)
        if b"-ERR" in got:
            refused.append(i)
            sock.close()
            continue
        try:
            with ctx.wrap_socket(sock, server_hostname="localhost"):
                ok += 1
        except (ssl.SSLError, OSError):
            # The handshake read the refusal as a bad record.
            refused.append(i)
    raw, out = _info_line(port)
    while True:
        chunk = raw.recv(4096)
        if not chunk:
            break
        out += chunk
    raw.close()
    return ok, refused, out


@pytest.mark.parametrize("workers", [1, 2])
def test_rate_limit_refuses_the_excess(tmp_path, pki, servers, workers):
    srv = start_with_config(tmp_path, pki.tls_block("connection_rate_limit: 2", ca=False),
                            "--workers", str(workers))
    servers.append(srv)
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    _quiet(srv.port)
    if workers > 1:
        # Several workers share windows of whole seconds of the monotonic clock: start
        # at the beginning of one.
        while time.monotonic() % 1.0 > 0.1:
            time.sleep(0.02)
    start = time.monotonic()
    ok, refused, last = _burst(srv.port, 5, ctx)
    one_window = time.monotonic() - start < 0.85
    if one_window:
        assert (ok, refused) == (2, [2, 3, 4]), srv.log()
    else:
        assert ok <= 4 and refused   # the machine was too slow for one window
    # What the refused client reads: INFO, then the error, then the connection closes.
    assert re.fullmatch(rb"INFO \{.*\} \r\n-ERR 'Connection throttling is active\. Please try "
                        rb"again later\.'\r\n", last, re.S)
    closed = httpx.get(f"http://127.0.0.1:{srv.http_port}/connz",
                       params={"state": "closed"}, timeout=5).json()["connections"]
    reasons = sorted(c["reason"] for c in closed)
    assert reasons.count("Maximum Connections Exceeded") >= len(refused) + 1
    for c in closed:
        if c["reason"] == "Maximum Connections Exceeded":
            assert "tls_version" not in c
    # One warning a second per worker that refused, counting what it refused (the
    # connection that waited for the start-up probe's window included).
    wait_for(lambda: _rejected_logged(srv) == reasons.count("Maximum Connections Exceeded"))


def _rejected_logged(srv) -> int:
    counts = [int(n) for n in re.findall(
        r"\[WRN\] Rejected (\d+) connections due to TLS rate limiting", srv.log())]
    assert all(n > 0 for n in counts)
    return sum(counts)


@pytest.mark.differential
def test_rate_limit_refusal_matches_go(tmp_path, pki, servers):
    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    seen = []
    for cmd in ([GO_SERVER], NATSX):
        extra = ("--workers", "1") if cmd is NATSX else ()
        srv = start_with_config(tmp_path, pki.tls_block("connection_rate_limit: 1", ca=False),
                                *extra, cmd=cmd)
        servers.append(srv)
        _quiet(srv.port)
        ok, refused, last = _burst(srv.port, 2, ctx)
        info, _, rest = last.partition(b"\r\n")
        closed = httpx.get(f"http://127.0.0.1:{srv.http_port}/connz",
                           params={"state": "closed"}, timeout=5).json()["connections"]
        # (The other closed connections' reasons are the handshake failures' of each
        # release: 2.9.10 names them differently.)
        refusals = [c["reason"] for c in closed].count("Maximum Connections Exceeded")
        seen.append((ok, len(refused), rest, refusals))
        wait_for(lambda: _rejected_logged(srv) == refusals)
    assert seen[0] == seen[1]


# ------------------------------------------------------------------ resolver_tls

class _HttpsJwts(http.server.BaseHTTPRequestHandler):
    jwts: dict = {}
    client_certs: list = []

    def do_GET(self):  # noqa: N802
        cert = self.connection.getpeercert()
        self.client_certs.append(cert.get("subject") if cert else None)
        body = self.jwts.get(self.path.rsplit("/", 1)[-1])
        self.send_response(200 if body else 404)
        self.end_headers()
        if body:
            self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def https_jwts(pki):
    """An https account server with the test CA's localhost certificate, asking for a
    client certificate from that CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.path("server-cert.pem"), pki.path("server-key.pem"))
    ctx.load_verify_locations(pki.path("ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HttpsJwts)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _HttpsJwts.client_certs = []
    yield f"https://localhost:{httpd.server_address[1]}/jwt/v1/accounts/"
    httpd.shutdown()


def test_resolver_tls_config(tmp_path, pki):
    w = World()
    conf = w.config(tmp_path, resolver="URL(https://localhost:1/accounts/)", preload=False)
    with open(conf, "a") as f:
        f.write("resolver_tls " + pki.tls_block(ca=True, server="alice")[4:])
    o, _ = load_options(conf)
    assert o.resolver.kind == "URL" and o.resolver.tls is o.resolver_tls
    assert o.resolver_tls.ca_file == pki.path("ca.pem")
    assert o.tls_config is None     # the client listener stays plain
    bad = tmp_path / "bad.conf"
    bad.write_text(open(conf).read().replace(pki.path("ca.pem"), "/nope/ca.pem"))
    with pytest.raises(ConfigProcessError) as info:
        load_options(str(bad))
    assert "open /nope/ca.pem: no such file or directory" in str(info.value)
    no_key = open(conf).read().split("\nresolver_tls")[0] + "\n" + \
        f'resolver_tls {{\n  cert_file: "{pki.path("alice-cert.pem")}"\n}}\n'
    bad.write_text(no_key)
    with pytest.raises(ConfigProcessError) as info:
        load_options(str(bad))
    assert "missing 'key_file' in TLS configuration" in str(info.value)


def test_url_resolver_over_https_with_resolver_tls(tmp_path, pki, servers, https_jwts):
    w = World()
    _HttpsJwts.jwts = dict(w.accounts)
    conf = w.config(tmp_path, resolver=f"URL({https_jwts})", preload=False)
    base = open(conf).read()
    # Without resolver_tls the account server's CA is unknown: the lookup fails.
    plain = tmp_path / "plain.conf"
    plain.write_text(base)
    port = free_port()
    srv = RunningServer(NATSX + ["-c", str(plain), "-a", "127.0.0.1", "-p", str(port)], port,
                        None, tmp_path / "plain.log")
    servers.append(srv)
    ukp, token = w.user(w.a)
    _, out = raw_connect(srv.port, ukp, token)
    assert out == b"-ERR 'Authorization Violation'\r\n"
    wait_for_log(srv, "Account JWT lookup error: could not fetch")
    # With it: the CA verifies the server and alice's certificate is offered to it.
    tls = tmp_path / "tls.conf"
    tls.write_text(base + "resolver_tls " + pki.tls_block(ca=True, server="alice")[4:])
    port = free_port()
    srv = RunningServer(NATSX + ["-c", str(tls), "-a", "127.0.0.1", "-p", str(port)], port,
                        None, tmp_path / "tls.log")
    servers.append(srv)
    ukp, token = w.user(w.b)          # B imports from A: both fetched over https
    assert asyncio.run(_echo_roundtrip(srv.url, user_credentials=creds(tmp_path, ukp, token))) \
        == b"OK:hi"
    subjects = [dict(rdn[0] for rdn in s) for s in _HttpsJwts.client_certs if s]
    assert subjects and all(s["commonName"] == "alice" for s in subjects)


# ------------------------------------------------------------------ ocsp_peer

class OCSP:
    """Client certificates naming an OCSP responder, and that responder's answers."""

    def __init__(self, pki, base_url: str) -> None:
        import datetime

        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

        self.pki = pki
        self.status: dict[int, str] = {}      # serial -> good / revoked / unknown
        self.requests = 0
        self.now = datetime.datetime.now(datetime.timezone.utc)
        self.certs = {}
        for label in ("good", "revoked", "unknown"):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (x509.CertificateBuilder()
                    .subject_name(_name((NameOID.COMMON_NAME, f"ocsp-{label}")))
                    .issuer_name(pki.ca.subject).public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(self.now - datetime.timedelta(days=1))
                    .not_valid_after(self.now + datetime.timedelta(days=30))
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                   critical=False)
                    .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(base_url))]), critical=False)
                    .sign(pki.ca_key, hashes.SHA256()))
            pki.write(f"ocsp-{label}-cert.pem", cert)
            (pki.root / f"ocsp-{label}-key.pem").write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
            self.status[cert.serial_number] = label
            self.certs[label] = cert

    def respond(self, cert, issuer=None, *, status=None, signer=None, this_update=None,
                next_update=None, serial_of=None, delegate=None) -> bytes:
        """A DER OCSP response about ``cert`` (the fields overridable for the bad cases)."""
        import datetime

        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509 import ocsp

        status = status or self.status.get(cert.serial_number, "unknown")
        st = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
              "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status]
        issuer = issuer or self.pki.ca
        this = this_update or self.now - datetime.timedelta(minutes=5)
        nxt = next_update if next_update is not None else this + datetime.timedelta(hours=1)
        b = ocsp.OCSPResponseBuilder().add_response(
            cert=serial_of or cert, issuer=issuer, algorithm=hashes.SHA1(), cert_status=st,
            this_update=this, next_update=nxt or None,
            revocation_time=this if st == ocsp.OCSPCertStatus.REVOKED else None,
            revocation_reason=None)
        if delegate is not None:
            b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, delegate[1]).certificates(
                [delegate[1]])
            key = delegate[0]
        elif signer is not None:
            b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, signer[1])
            key = signer[0]
        else:
            b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
            key = self.pki.ca_key
        return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _ocsp_handler(state):
    import base64
    import urllib.parse

    from cryptography.x509 import ocsp

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            state.requests += 1
            der = base64.b64decode(urllib.parse.unquote_plus(self.path.rsplit("/", 1)[-1]))
            req = ocsp.load_der_ocsp_request(der)
            cert = next(c for c in state.certs.values() if c.serial_number == req.serial_number)
            body = state.respond(cert)
            self.send_response(200)
            self.send_header("Content-Type", "application/ocsp-response")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture(scope="module")
def ocsp_world(pki):
    port = free_port()
    state = OCSP(pki, f"http://127.0.0.1:{port}/ocsp")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _ocsp_handler(state))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield state
    httpd.shutdown()


def _chain(ocsp_world, label):
    return [ocsp_world.certs[label], ocsp_world.pki.ca]


def test_ocsp_peer_config(tmp_path, pki):
    from natsx.server.ocsp_peer import OCSPPeerConfig

    conf = tmp_path / "ok.conf"
    conf.write_text(pki.tls_block('verify: true\n  ocsp_peer {\n    verify: true\n'
                                  '    ca_timeout: "500ms"\n    allowed_clockskew: 5\n'
                                  '    cache_ttl_when_next_update_unset: -1\n'
                                  '    unknown_is_good: true\n  }'))
    o, _ = load_options(str(conf))
    assert o.tls_config.ocsp_peer == OCSPPeerConfig(verify=True, timeout=0.5, clock_skew=5.0,
                                                    unknown_is_good=True)
    conf.write_text(pki.tls_block("verify: true\n  ocsp_peer: true"))
    assert load_options(str(conf))[0].tls_config.ocsp_peer == OCSPPeerConfig(verify=True)
    assert errors(tmp_path, pki.tls_block("ocsp_peer: 1")).endswith(
        ": error parsing ocsp peer config: unsupported type map[string]interface {}\n")
    assert errors(tmp_path, pki.tls_block("ocsp_peer { cache: true }")).endswith(
        ': error parsing tls peer config, unknown field ["cache"]\n')
    assert errors(tmp_path, pki.tls_block('ocsp_peer { warn_only: "yes" }')).endswith(
        ': error parsing tls peer config, unknown field ["warn_only"]\n')
    assert errors(tmp_path, pki.tls_block('ocsp_peer { ca_timeout: "soon" }')).endswith(
        ': error parsing tls peer config, conversion error: time: invalid duration "soon"\n')
    assert errors(tmp_path, pki.tls_block('ocsp_peer { allowed_clockskew: "soon" }')).endswith(
        ": error parsing tls peer config, conversion error: unexpected type\n")


def test_ocsp_peer_needs_verify(tmp_path, pki):
    import subprocess

    conf = tmp_path / "nomtls.conf"
    conf.write_text(pki.tls_block("ocsp_peer: true"))
    out = subprocess.run(NATSX + ["-c", str(conf), "-p", str(free_port())], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip() == ("nats-server: OCSP peer verification for client connections "
                                  "requires TLS verify (mTLS) to be enabled")


def test_ocsp_peer_decisions(ocsp_world):
    import datetime

    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from natsx.server.ocsp_peer import OCSPPeerConfig, ResponseCache, evaluate

    w = ocsp_world
    on = OCSPPeerConfig(verify=True)
    calls = []

    def answer(**kw):
        def fetcher(urls, leaf, issuer, timeout):
            calls.append((tuple(urls), timeout))
            return w.respond(leaf, **kw)
        return fetcher

    def down(urls, leaf, issuer, timeout):
        raise OSError("exhausted OCSP responders: connection refused")

    def run(label, fetcher, opts=on, cache=None):
        return evaluate(_chain(w, label), opts, cache=cache or ResponseCache(), fetcher=fetcher)

    assert run("good", answer())
    (urls, timeout), = calls   # the AIA's responder, under ca_timeout
    assert len(urls) == 1 and urls[0].endswith("/ocsp") and timeout == 2.0
    assert not run("revoked", answer())
    assert not run("unknown", answer())
    assert run("unknown", answer(), OCSPPeerConfig(verify=True, unknown_is_good=True))
    assert run("revoked", answer(), OCSPPeerConfig(verify=True, warn_only=True))
    # No responder answers: refused, unless allowed (and nothing revoked is cached).
    assert not run("good", down)
    allow = OCSPPeerConfig(verify=True, allow_when_ca_unreachable=True)
    assert run("good", down, allow)
    # A cached answer is used while current; a revocation stays decisive when the CA is
    # unreachable afterwards.
    cache = ResponseCache()
    n = len(calls)
    assert run("good", answer(), cache=cache) and run("good", answer(), cache=cache)
    assert len(calls) == n + 1
    stale = w.now - datetime.timedelta(hours=3)
    cache = ResponseCache()
    assert not run("revoked", answer(this_update=stale, next_update=stale), cache=cache)
    assert not run("revoked", answer(), cache=cache)
    assert not run("revoked", down, allow, cache=cache)
    # Answers that do not count: out of their window, signed by someone else, about another
    # certificate, or from a delegate without the OCSP-signing usage.
    assert not run("good", answer(this_update=stale, next_update=stale))
    assert not run("good", answer(this_update=w.now + datetime.timedelta(hours=1)))
    assert run("good", answer(this_update=w.now - datetime.timedelta(minutes=30),
                              next_update=False))   # no next_update: the 1h TTL
    assert not run("good", answer(this_update=w.now - datetime.timedelta(hours=2),
                                  next_update=False))
    assert not run("good", answer(signer=(w.pki.other_key, w.pki.other_ca)))
    assert not run("good", answer(serial_of=w.certs["revoked"], status="good"))

    def delegate(usage):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(_name((NameOID.COMMON_NAME, "responder")))
             .issuer_name(w.pki.ca.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(w.now - datetime.timedelta(days=1))
             .not_valid_after(w.now + datetime.timedelta(days=1)))
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]),
                                critical=False)
        return key, b.sign(w.pki.ca_key, hashes.SHA256())

    assert run("good", answer(delegate=delegate(True)))
    assert not run("good", answer(delegate=delegate(False)))
    # A self-signed trusted peer, and a chain naming no responder, need no answer.
    assert evaluate([w.pki.ca], on, fetcher=down)
    plain = x509.load_pem_x509_certificate((w.pki.root / "alice-cert.pem").read_bytes())
    assert evaluate([plain, w.pki.ca], on, fetcher=down)


async def _tls_roundtrip(url, ctx):
    import nats

    nc = await nats.connect(url, tls=ctx, tls_hostname="localhost", allow_reconnect=False,
                            max_reconnect_attempts=0, connect_timeout=3)
    try:
        sub = await nc.subscribe("ocsp")
        await nc.publish("ocsp", b"hi")
        return (await sub.next_msg(timeout=3)).data
    finally:
        await nc.close()


def test_ocsp_peer_on_client_connections(tmp_path, pki, servers, ocsp_world):
    srv = start_with_config(tmp_path, pki.tls_block("verify: true\n  ocsp_peer: true"),
                            "--workers", "2")
    servers.append(srv)
    varz = httpx.get(f"http://127.0.0.1:{srv.http_port}/varz", timeout=5).json()
    keys = list(varz)
    assert varz["tls_ocsp_peer_verify"] is True
    assert keys.index("tls_verify") + 1 == keys.index("tls_ocsp_peer_verify")
    before = ocsp_world.requests
    assert asyncio.run(_tls_roundtrip(srv.url, pki.client_ctx("ocsp-good"))) == b"hi"
    assert ocsp_world.requests > before
    # A certificate without a responder passes; a revoked one is cut after the handshake.
    assert asyncio.run(_tls_roundtrip(srv.url, pki.client_ctx("alice"))) == b"hi"
    for label in ("ocsp-revoked", "ocsp-unknown"):
        sock, _ = read_info(srv.port)
        tls = pki.client_ctx(label).wrap_socket(sock, server_hostname="localhost")
        tls.settimeout(5)
        try:
            tls.sendall(b"CONNECT {}\r\nPING\r\n")
            got = tls.recv(4096)
        except (ssl.SSLError, OSError):
            got = b""
        assert b"PONG" not in got
        tls.close()
    log = wait_for_log(srv, "OCSP verify fail for [CN=ocsp-unknown] with CA status [unknown]")
    assert "[WRN] OCSP verify fail for [CN=ocsp-revoked] with CA status [revoked]" in log
    assert re.search(r"\[ERR\] 127\.0\.0\.1:\d+ - cid:\d+ - TLS handshake error: client not "
                     r"OCSP valid", log)
    closed = httpx.get(f"http://127.0.0.1:{srv.http_port}/connz", params={"state": "closed"},
                       timeout=5).json()["connections"]
    assert sum(c["reason"] == "TLS Handshake Error" for c in closed) >= 2


# ------------------------------------------------------------------ ocsp (stapling)

def _must_staple_leaf(pki) -> str:
    """A server certificate whose leaf says "must staple" (RFC 7633 status_request)."""
    from cryptography.hazmat.primitives import hashes

    label = "staple"
    if not (pki.root / f"{label}-cert.pem").exists():
        cert = pki.leaf(label, _name((NameOID.COMMON_NAME, "staple")),
                        [x509.DNSName("staple.test")], server=True)
        key = load_key(pki.path(f"{label}-key.pem"))
        b = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
             .public_key(key.public_key()).serial_number(cert.serial_number)
             .not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc)
             .add_extension(x509.TLSFeature([x509.TLSFeatureType.status_request]),
                            critical=False))
        pki.write(f"{label}-cert.pem", b.sign(pki.ca_key, hashes.SHA256()))
    return label


def load_key(path):
    from cryptography.hazmat.primitives import serialization

    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), None)


def _ocsp_options(tmp_path, text: str):
    from natsx.server.config_options import validate_options

    conf = tmp_path / "ocsp.conf"
    conf.write_text(text)
    opts, _ = load_options(str(conf))
    validate_options(opts)
    return opts


def test_ocsp_block_parses_as_go(tmp_path, pki):
    assert _ocsp_options(tmp_path, "ocsp: false\n").ocsp == {"mode": "never", "urls": []}
    assert _ocsp_options(tmp_path, "ocsp: true\n").ocsp == {"mode": "auto", "urls": []}
    got = _ocsp_options(tmp_path, 'ocsp { mode: NEVER, urls: ["http://a", "http://b"] }\n')
    assert got.ocsp == {"mode": "never", "urls": ["http://a", "http://b"]}
    assert _ocsp_options(tmp_path, 'ocsp { url: "http://a" }\n').ocsp["urls"] == ["http://a"]
    # Bad blocks: `-t` prints the same line as Debian's nats-server 2.9.10, position included.
    import subprocess

    for i, text in enumerate(("ocsp { mode: sometimes }\n", "ocsp { bogus: 1 }\n", "ocsp: 1\n")):
        conf = tmp_path / f"bad-ocsp-{i}.conf"
        conf.write_text(text)
        outs = [subprocess.run(cmd + ["-t", "-c", str(conf)], capture_output=True, text=True,
                               timeout=30) for cmd in (NATSX, [GO_SERVER])]
        assert [o.returncode for o in outs] == [1, 1]
        assert outs[0].stderr.strip() == outs[1].stderr.strip()
        assert "error parsing ocsp config: unsupported" in outs[0].stderr


def test_ocsp_stapling_needed_is_refused_else_served_as_go(tmp_path, pki, caplog):
    """Go staples only for mode always, or a "must staple" certificate unless the mode is
    never; natsx cannot staple, so exactly those configs are refused, and the rest run as
    Go runs them (a plain certificate in auto mode staples nothing in Go either)."""
    from natsx.server.config_options import validate_options

    staple = _must_staple_leaf(pki)
    plain_block = pki.tls_block()
    staple_block = pki.tls_block(server=staple)
    # Needs a staple: refused, naming the certificate.
    for text in (staple_block, "ocsp: true\n" + staple_block,
                 "ocsp { mode: must }\n" + staple_block, "ocsp { mode: always }\n" + plain_block):
        conf = tmp_path / "ocsp.conf"
        conf.write_text(text)
        opts, _ = load_options(str(conf))
        with pytest.raises(ConfigProcessError) as info:
            validate_options(opts)
        assert "OCSP stapling" in str(info.value) and "-cert.pem" in str(info.value)
    # Needs none: accepted.
    for text in (plain_block, "ocsp: true\n" + plain_block, "ocsp { mode: must }\n" + plain_block):
        _ocsp_options(tmp_path, text)
    # Never, with a must-staple certificate: Go's warning, and the server runs.
    caplog.clear()
    opts = _ocsp_options(tmp_path, "ocsp: false\n" + staple_block)
    assert opts.ocsp["mode"] == "never"
    assert any("has MustStaple but OCSP is disabled" in r.getMessage() for r in caplog.records)


def test_must_staple_detection(pki):
    from natsx.server.tls import must_staple

    assert must_staple(pki.path(_must_staple_leaf(pki) + "-cert.pem"))
    assert not must_staple(pki.path("server-cert.pem"))
