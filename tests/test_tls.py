"""TLS for client connections: config, INFO flags, handshakes, verify_and_map, /connz, reload.

Certificates are generated at test time with ``cryptography`` (a CA, a server certificate for
localhost/127.0.0.1, client certificates and one from an unknown CA); no key is committed.
The real ``natsx`` command runs with the ``--tls*`` flags or a ``tls {}`` block and is driven
by nats-py (``tls=`` an ssl context) and raw sockets. The behaviours are Go's
(server/server.go createClientEx, client.go doTLSHandshake, opts.go parseTLS/GenTLSConfig,
auth.go checkClientTLSCertSubject, reload.go); the INFO an untouched client sees is played
against Debian's nats-server with the same certificates.
"""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import signal
import socket
import ssl
import subprocess
import time

import httpx
import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import GO_SERVER, NATSX, RunningServer, free_port
from natsx.auth import certmap
from natsx.server.config_options import ConfigProcessError, load_options
from natsx.server.tls import spki_sha256

pytestmark = pytest.mark.server


# ------------------------------------------------------------------ certificates

def _name(*pairs) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


class PKI:
    """A CA and the certificates the tests use, written as PEM files under ``root``."""

    def __init__(self, root) -> None:
        self.root = root
        self.now = datetime.datetime.now(datetime.timezone.utc)
        self.ca_key, self.ca = self._ca("natsx test CA")
        self.other_key, self.other_ca = self._ca("someone else's CA")
        self.write("ca.pem", self.ca)
        self.server = self.leaf("server", _name((NameOID.COMMON_NAME, "localhost")),
                                [x509.DNSName("localhost"),
                                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], server=True)
        self.leaf("server2", _name((NameOID.COMMON_NAME, "localhost")),
                  [x509.DNSName("localhost")], server=True)
        # alice: an email SAN; bob: a subject only; carol: a subject with domain components.
        self.leaf("alice", _name((NameOID.COUNTRY_NAME, "US"),
                                 (NameOID.ORGANIZATION_NAME, "Synadia"),
                                 (NameOID.ORGANIZATIONAL_UNIT_NAME, "nats.io"),
                                 (NameOID.COMMON_NAME, "alice")),
                  [x509.RFC822Name("alice@example.com")])
        self.leaf("bob", _name((NameOID.COUNTRY_NAME, "US"), (NameOID.ORGANIZATION_NAME, "Synadia"),
                               (NameOID.COMMON_NAME, "bob")), None)
        self.leaf("carol", _name((NameOID.DOMAIN_COMPONENT, "org"),
                                 (NameOID.DOMAIN_COMPONENT, "example"),
                                 (NameOID.COMMON_NAME, "carol")), None)
        self.leaf("stranger", _name((NameOID.COMMON_NAME, "stranger")), None,
                  issuer=(self.other_key, self.other_ca))

    def _ca(self, cn):
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name((NameOID.COMMON_NAME, cn))
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(self.now - datetime.timedelta(days=1))
                .not_valid_after(self.now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(self, label, subject, sans, *, server=False, issuer=None):
        ca_key, ca = issuer or (self.ca_key, self.ca)
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(self.now - datetime.timedelta(days=1))
             .not_valid_after(self.now + datetime.timedelta(days=30))
             .add_extension(x509.ExtendedKeyUsage(
                 [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                 critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        self.write(f"{label}-cert.pem", cert)
        (self.root / f"{label}-key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return cert

    def write(self, fname, cert):
        (self.root / fname).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def path(self, fname) -> str:
        return str(self.root / fname)

    def der(self, label) -> bytes:
        cert = x509.load_pem_x509_certificate((self.root / f"{label}-cert.pem").read_bytes())
        return cert.public_bytes(serialization.Encoding.DER)

    def client_ctx(self, label: str | None = "alice") -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.path("ca.pem"))
        if label:
            ctx.load_cert_chain(self.path(f"{label}-cert.pem"), self.path(f"{label}-key.pem"))
        return ctx

    def tls_block(self, extra: str = "", *, ca: bool = True, server: str = "server") -> str:
        lines = [f'cert_file: "{self.path(server + "-cert.pem")}"',
                 f'key_file: "{self.path(server + "-key.pem")}"']
        if ca:
            lines.append(f'ca_file: "{self.path("ca.pem")}"')
        return "tls {\n  " + "\n  ".join(lines) + "\n  " + extra + "\n}\n"

    def flags(self, verify: bool = True) -> list[str]:
        out = ["--tls", "--tlscert", self.path("server-cert.pem"),
               "--tlskey", self.path("server-key.pem")]
        if verify:
            out += ["--tlsverify", "--tlscacert", self.path("ca.pem")]
        return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def start_with_config(tmp_path, text: str, *extra: str, cmd=None) -> RunningServer:
    port, http_port = free_port(), free_port()
    conf = tmp_path / f"tls-{port}.conf"
    conf.write_text(text)
    base = cmd or NATSX
    srv = RunningServer(base + ["-a", "127.0.0.1", "-p", str(port), "-m", str(http_port),
                                "-c", str(conf), *extra], port, http_port,
                        tmp_path / f"server-{port}.log")
    srv.config_path = conf
    return srv


@pytest.fixture
def servers():
    started: list[RunningServer] = []
    yield started
    for s in started:
        s.stop()


def read_info(port: int, timeout: float = 5.0) -> tuple[socket.socket, dict]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        assert chunk, f"closed before INFO: {line!r}"
        line += chunk
    assert line.startswith(b"INFO ")
    return sock, json.loads(line[5:])


def tls_wrap(sock: socket.socket, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    return ctx.wrap_socket(sock, server_hostname="localhost")


def recv_until_closed(sock, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return out
            out += chunk
    except (ConnectionResetError, ssl.SSLError):
        return out


def connz(srv, **params) -> dict:
    return httpx.get(f"http://127.0.0.1:{srv.http_port}/connz", params=params, timeout=5).json()


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def wait_for_log(srv, text: str, timeout: float = 5.0) -> str:
    return wait_for(lambda: srv.log() if text in srv.log() else None, timeout)


async def roundtrip(url: str, ctx, **kw) -> bytes:
    nc = await nats.connect(url, tls=ctx, tls_hostname="localhost", allow_reconnect=False,
                            max_reconnect_attempts=0, connect_timeout=3, **kw)
    try:
        sub = await nc.subscribe("tls.test")
        await nc.publish("tls.test", b"x" * 100_000)
        msg = await sub.next_msg(timeout=3)
        return msg.data
    finally:
        await nc.close()


# ------------------------------------------------------------------ subjects (sans-IO)

def test_go_subject_strings(pki):
    # Go's pkix.Name.String(): most specific first, unknown attributes last as OID=#hex.
    assert certmap.subject_string(pki.der("alice")) == "CN=alice,OU=nats.io,O=Synadia,C=US"
    assert certmap.rdn_string(pki.der("bob")) == "CN=bob,O=Synadia,C=US"
    assert certmap.subject_string(pki.der("carol")) == (
        "CN=carol,0.9.2342.19200300.100.1.25=#13076578616d706c65,"
        "0.9.2342.19200300.100.1.25=#13036f7267")
    assert certmap.rdn_string(pki.der("carol")) == "CN=carol"


def test_ldap_dn_parsing_and_matching():
    dn = certmap.parse_dn("CN=bob, O=Synadia,C=US")
    assert dn == [[("CN", "bob")], [("O", "Synadia")], [("C", "US")]]
    assert certmap.parse_dn(r"CN=a\,b+OU=x") == [[("CN", "a,b"), ("OU", "x")]]
    assert certmap.parse_dn("no equals sign") is None
    same = certmap.parse_dn("cn=bob,o=Synadia,c=US")
    assert certmap.dn_equal(dn, same)
    reordered = certmap.parse_dn("C=US,CN=bob,O=Synadia")
    assert not certmap.dn_equal(dn, reordered) and certmap.dn_rdns_match(dn, reordered)
    assert not certmap.dn_rdns_match(dn, certmap.parse_dn("CN=bob,O=Other,C=US"))


def test_map_user_order(pki):
    users = {"alice@example.com": "A", "CN=bob,O=Synadia,C=US": "B",
             "CN=carol,DC=org,DC=example": "C"}
    # Go appends the domain components in certificate order after the RDN string.
    users_dc = {"CN=carol,DC=org,DC=example": "C"}
    assert certmap.map_user(pki.der("alice"), users.get, users.items()) == "A"
    assert certmap.map_user(pki.der("bob"), users.get, users.items()) == "B"
    assert certmap.map_user(pki.der("bob"), {"C=US, CN=bob, O=Synadia": "R"}.get,
                            {"C=US, CN=bob, O=Synadia": "R"}.items()) == "R"
    assert certmap.map_user(pki.der("carol"), users_dc.get, users_dc.items()) == "C"
    assert certmap.map_user(pki.der("stranger"), users.get, users.items()) is None


# ------------------------------------------------------------------ config

def test_config_errors_are_gos(tmp_path, pki):
    def errors(block: str) -> str:
        conf = tmp_path / "bad.conf"
        conf.write_text(block)
        with pytest.raises(ConfigProcessError) as info:
            load_options(str(conf))
        return str(info.value).replace(str(conf), "F")

    assert errors('tls {\n  cert_file: "/nope/c.pem"\n  key_file: "/nope/k.pem"\n}\n') == (
        "F:1:0: error parsing X509 certificate/key pair: open /nope/c.pem: no such file or "
        "directory\n")
    assert errors(f'tls {{\n  cert_file: "{pki.path("server-cert.pem")}"\n}}\n') == \
        "F:1:0: missing 'key_file' in TLS configuration\n"
    assert errors(f'tls {{\n  cert_file: "{pki.path("server-cert.pem")}"\n'
                  f'  key_file: "{pki.path("alice-key.pem")}"\n}}\n') == (
        "F:1:0: error parsing X509 certificate/key pair: tls: private key does not match "
        "public key\n")
    assert errors(pki.tls_block("foo: 1", ca=False)) == \
        'F:4:3: error parsing tls config, unknown field "foo"\n'
    assert errors(pki.tls_block('cipher_suites: ["TLS_RSA_WITH_AES_128_CBC_SHA"]')) == (
        "F:1:0: insecure cipher suites configured without 'allow_insecure_cipher_suites' "
        "option set: TLS_RSA_WITH_AES_128_CBC_SHA\n")
    assert errors(pki.tls_block('handshake_first: "soon"')).endswith(
        """field "handshake_first"'s value "soon" is invalid\n""")
    assert errors(pki.tls_block('min_version: "1.1"')).endswith(
        "error parsing tls config: unsupported TLS version: TLS 1.1\n")
    assert errors(pki.tls_block("pinned_certs: [abc]")).endswith(
        "'pinned_certs' key abc does not look like hex-encoded sha256 of DER encoded "
        "SubjectPublicKeyInfo\n")


def test_config_values(tmp_path, pki):
    conf = tmp_path / "ok.conf"
    conf.write_text(pki.tls_block('verify_and_map: true\n  timeout: "500ms"\n'
                                  '  handshake_first: "300ms"\n'
                                  '  cipher_suites: ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]')
                    + "allow_non_tls: true\n")
    o, _ = load_options(str(conf))
    assert o.tls_config.verify and o.tls_map and o.allow_non_tls
    assert o.tls_timeout == 0.5 and o.auth_timeout == 1.5   # Go: TLS timeout + 1s
    assert o.tls_handshake_first and o.tls_handshake_first_fallback == 0.3
    # The command line wins: its --tls* flags replace the block's certificate and checks.
    o, _ = load_options(str(conf), {"tls_cert": pki.path("server2-cert.pem"),
                                    "tls_key": pki.path("server2-key.pem")})
    assert o.tls_config.cert_file.endswith("server2-cert.pem") and not o.tls_config.verify
    assert o.tls_map   # Go keeps TLSMap from the file
    o, _ = load_options(str(conf), {"tls": False})
    assert o.tls_config is None


def test_cli_flag_errors(pki):
    out = subprocess.run(NATSX + ["--tls", "-p", str(free_port())], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip() == "nats-server: TLS Server certificate must be present and valid"
    out = subprocess.run(NATSX + ["--tlscert", "/nope.pem", "--tlskey", pki.path("server-key.pem"),
                                  "-p", str(free_port())], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip() == ("nats-server: error parsing X509 certificate/key pair: open "
                                  "/nope.pem: no such file or directory")


# ------------------------------------------------------------------ handshakes

def test_flags_info_and_verified_client(start_natsx, pki):
    srv = start_natsx(*pki.flags())
    sock, info = read_info(srv.port)
    sock.close()
    keys = list(info)
    assert info["tls_required"] is True and info["tls_verify"] is True
    assert "tls_available" not in info
    assert keys.index("headers") < keys.index("tls_required") < keys.index("tls_verify") \
        < keys.index("max_payload")
    assert asyncio.run(roundtrip(f"tls://127.0.0.1:{srv.port}", pki.client_ctx())) == \
        b"x" * 100_000


def test_connz_tls_fields(start_natsx, pki):
    srv = start_natsx(*pki.flags())

    async def run():
        nc = await nats.connect(f"tls://127.0.0.1:{srv.port}", tls=pki.client_ctx(),
                                tls_hostname="localhost", name="tlsconn")
        try:
            await nc.flush()
            plain = connz(srv)["connections"]
            detail = connz(srv, auth="true")["connections"]
        finally:
            await nc.close()
        return plain, detail
    plain, detail = asyncio.run(run())
    conn = next(c for c in plain if c.get("name") == "tlsconn")
    assert conn["tls_version"] == "1.3"
    assert conn["tls_cipher_suite"] in ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256",
                                        "TLS_CHACHA20_POLY1305_SHA256")
    assert "tls_peer_certs" not in conn and "tls_first" not in conn
    keys = list(conn)
    assert keys.index("version") < keys.index("tls_version") < keys.index("tls_cipher_suite")
    conn = next(c for c in detail if c.get("name") == "tlsconn")
    der = pki.der("alice")
    assert conn["tls_peer_certs"][0] == {
        "subject": "CN=alice,OU=nats.io,O=Synadia,C=US",
        "spki_sha256": spki_sha256(der),
        "cert_sha256": __import__("hashlib").sha256(der).hexdigest(),
    }


def test_tls12_and_go_cipher_names(start_natsx, pki):
    srv = start_natsx(*pki.flags(verify=False))
    ctx = pki.client_ctx(None)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    sock, _ = read_info(srv.port)
    tls = tls_wrap(sock, ctx)
    tls.sendall(b"CONNECT {\"name\":\"old\",\"verbose\":false}\r\nPING\r\n")
    assert tls.recv(100).startswith(b"PONG")
    conn = next(c for c in connz(srv)["connections"] if c.get("name") == "old")
    tls.close()
    assert conn["tls_version"] == "1.2"
    # Go's preference order puts AES-128-GCM first.
    assert conn["tls_cipher_suite"] == "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"


def test_client_without_certificate_fails_verification(start_natsx, pki):
    srv = start_natsx(*pki.flags())
    for ctx in (pki.client_ctx(None), pki.client_ctx("stranger")):
        sock, _ = read_info(srv.port)
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            tls = tls_wrap(sock, ctx)
            tls.sendall(b"CONNECT {}\r\nPING\r\n")
            if not tls.recv(100):
                raise ConnectionResetError("closed")
        sock.close()
    closed = wait_for(lambda: [c for c in connz(srv, state="closed")["connections"]
                               if c["reason"] == "TLS Handshake Error"])
    assert len(closed) >= 2


def test_handshake_timeout(tmp_path, pki, servers):
    srv = start_with_config(tmp_path, pki.tls_block("timeout: 0.5", ca=False))
    servers.append(srv)
    sock, info = read_info(srv.port)
    assert info["tls_required"] is True
    start = time.monotonic()
    assert recv_until_closed(sock) == b""   # Go sends nothing in the clear: it just closes
    assert 0.3 < time.monotonic() - start < 3
    reasons = [c["reason"] for c in connz(srv, state="closed")["connections"]]
    assert "TLS Handshake Error" in reasons


def test_plaintext_client_on_tls_port_is_cut(start_natsx, pki):
    srv = start_natsx(*pki.flags(verify=False))
    sock, _ = read_info(srv.port)
    sock.sendall(b"CONNECT {}\r\nPING\r\n")
    assert b"PONG" not in recv_until_closed(sock)
    wait_for(lambda: any(c["reason"] == "TLS Handshake Error"
                         for c in connz(srv, state="closed")["connections"]))


def test_allow_non_tls(tmp_path, pki, servers):
    srv = start_with_config(tmp_path, pki.tls_block(ca=False) + "allow_non_tls: true\n")
    servers.append(srv)
    sock, info = read_info(srv.port)
    assert info.get("tls_available") is True and "tls_required" not in info
    sock.sendall(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
    assert sock.recv(100).startswith(b"PONG")
    sock.close()
    # The same port takes a TLS client: its first byte starts a TLS record.
    assert asyncio.run(roundtrip(f"tls://127.0.0.1:{srv.port}", pki.client_ctx(None))) == \
        b"x" * 100_000
    assert "TLS available for client connections" in srv.log()


def test_handshake_first(tmp_path, pki, servers):
    srv = start_with_config(tmp_path, pki.tls_block("handshake_first: true\n  verify: true"))
    servers.append(srv)
    # No INFO in the clear: the server waits for the client's handshake.
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        sock.recv(100)
    tls = tls_wrap(sock, pki.client_ctx())
    tls.settimeout(3)
    line = tls.recv(4096)
    assert line.startswith(b"INFO ") and json.loads(line[5:])["tls_required"] is True
    tls.sendall(b"CONNECT {\"name\":\"first\",\"verbose\":false}\r\nPING\r\n")
    assert tls.recv(100).startswith(b"PONG")
    conn = next(c for c in connz(srv)["connections"] if c.get("name") == "first")
    assert conn["tls_first"] is True
    tls.close()
    assert asyncio.run(roundtrip(f"tls://127.0.0.1:{srv.port}", pki.client_ctx(),
                                 tls_handshake_first=True)) == b"x" * 100_000
    assert 'Clients that are not using "TLS Handshake First" option will fail' in srv.log()


def test_handshake_first_fallback(tmp_path, pki, servers):
    srv = start_with_config(tmp_path, pki.tls_block('handshake_first: "300ms"', ca=False)
                            + "allow_non_tls: true\n")
    servers.append(srv)
    # A client that waits for INFO gets it after the fallback delay, with Go's flags.
    start = time.monotonic()
    sock, info = read_info(srv.port)
    assert time.monotonic() - start >= 0.25
    assert info.get("tls_available") is True and "tls_required" not in info
    sock.sendall(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
    assert sock.recv(100).startswith(b"PONG")
    sock.close()
    # A TLS-first client is handshaken at once, and its INFO says TLS is required.
    sock = socket.create_connection(("127.0.0.1", srv.port))
    tls = tls_wrap(sock, pki.client_ctx(None))
    tls.settimeout(3)
    info = json.loads(tls.recv(4096)[5:])
    assert info["tls_required"] is True and info["tls_available"] is True
    tls.close()


# ------------------------------------------------------------------ verify_and_map

MAP_USERS = """
authorization {
  users = [
    {user: "alice@example.com", permissions: {publish: "tls.>", subscribe: "tls.>"}}
    {user: "C=US, O=Synadia, CN=bob"}
  ]
}
"""


def test_verify_and_map(tmp_path, pki, servers):
    srv = start_with_config(tmp_path, pki.tls_block("verify_and_map: true") + MAP_USERS)
    servers.append(srv)
    assert asyncio.run(roundtrip(f"tls://127.0.0.1:{srv.port}", pki.client_ctx("alice"))) == \
        b"x" * 100_000

    async def connect(label):
        nc = await nats.connect(f"tls://127.0.0.1:{srv.port}", tls=pki.client_ctx(label),
                                tls_hostname="localhost", allow_reconnect=False,
                                max_reconnect_attempts=0, name=label)
        await nc.flush()
        users = {c.get("name"): c.get("authorized_user")
                 for c in connz(srv, auth="true")["connections"]}
        await nc.close()
        return users
    # bob's DN is configured in another order: Go's RDNsMatch accepts it.
    assert asyncio.run(connect("bob"))["bob"] == "C=US, O=Synadia, CN=bob"
    assert asyncio.run(connect("alice"))["alice"] == "alice@example.com"
    # carol's certificate is valid but maps to no user.
    sock, info = read_info(srv.port)
    assert info["auth_required"] is True and info["tls_verify"] is True
    tls = tls_wrap(sock, pki.client_ctx("carol"))
    tls.sendall(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
    assert recv_until_closed(tls) == b"-ERR 'Authorization Violation'\r\n"
    # Users without passwords are certificate identities: no plaintext password warning.
    assert "Plaintext passwords detected" not in srv.log()


# ------------------------------------------------------------------ reload and workers

def test_reload_tls_block(tmp_path, pki, servers):
    base = pki.tls_block(ca=False)
    srv = start_with_config(tmp_path, base, "--workers", "2")
    servers.append(srv)

    async def connected_client():
        return await nats.connect(f"tls://127.0.0.1:{srv.port}", tls=pki.client_ctx("alice"),
                                  tls_hostname="localhost", allow_reconnect=False,
                                  max_reconnect_attempts=0)

    async def scenario():
        nc = await connected_client()
        # Pin a key that is not alice's: she is disconnected (Go: recheckPinnedCerts).
        srv.config_path.write_text(pki.tls_block(
            f'verify: true\n  pinned_certs: ["{spki_sha256(pki.der("bob"))}"]\n  timeout: 3',
            ca=True))
        srv.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if nc.is_closed or not nc.is_connected:
                break
            await asyncio.sleep(0.05)
        assert nc.is_closed or not nc.is_connected
        await nc.close()
        # New connections: alice's key is not pinned, bob's is.
        for _ in range(4):   # whichever worker takes it
            sock, _info = read_info(srv.port)
            tls = tls_wrap(sock, pki.client_ctx("alice"))
            tls.sendall(b"CONNECT {}\r\nPING\r\n")
            assert b"PONG" not in recv_until_closed(tls)
        nb = await nats.connect(f"tls://127.0.0.1:{srv.port}", tls=pki.client_ctx("bob"),
                                tls_hostname="localhost", allow_reconnect=False,
                                max_reconnect_attempts=0)
        await nb.close()
    asyncio.run(scenario())
    log = wait_for_log(srv, "Reloaded server configuration")
    assert "Reloaded: tls timeout = 3" in log and "Reloaded: tls = enabled" in log
    assert "Reloaded: 1 pinned_certs" in log
    varz = httpx.get(f"http://127.0.0.1:{srv.http_port}/varz").json()
    assert varz["tls_timeout"] == 3 and varz["tls_verify"] is True
    # allow_non_tls cannot change at run time (Go refuses the reload).
    srv.config_path.write_text(base + "allow_non_tls: true\n")
    srv.proc.send_signal(signal.SIGHUP)
    wait_for_log(srv, "config reload not supported for AllowNonTLS: old=false, new=true")


def test_reload_uses_replaced_certificate(tmp_path, pki, servers):
    cert, key = tmp_path / "live-cert.pem", tmp_path / "live-key.pem"
    cert.write_bytes((pki.root / "server-cert.pem").read_bytes())
    key.write_bytes((pki.root / "server-key.pem").read_bytes())
    conf = f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n'
    srv = start_with_config(tmp_path, conf)
    servers.append(srv)

    def served_cert() -> bytes:
        sock, _ = read_info(srv.port)
        tls = tls_wrap(sock, pki.client_ctx(None))
        der = tls.getpeercert(binary_form=True)
        tls.close()
        return der
    assert served_cert() == pki.der("server")
    cert.write_bytes((pki.root / "server2-cert.pem").read_bytes())
    key.write_bytes((pki.root / "server2-key.pem").read_bytes())
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: served_cert() == pki.der("server2"))


def test_tls_clients_across_workers(start_natsx, pki):
    srv = start_natsx(*pki.flags(), "--workers", "2")

    async def run():
        # The kernel spreads connections over the workers by their addresses: connect
        # until each worker has a client (a worker's client ids are its index + 1 plus
        # multiples of the worker count).
        clients, seen = [], set()
        while (len(seen) < 2 or len(clients) < 6) and len(clients) < 40:
            c = await nats.connect(f"tls://127.0.0.1:{srv.port}", tls=pki.client_ctx(),
                                   tls_hostname="localhost")
            clients.append(c)
            seen.add((c._server_info["client_id"] - 1) % 2)
        subs = [await c.subscribe("across") for c in clients]
        for c in clients:
            await c.flush()
        await clients[0].publish("across", b"hi")
        got = [await s.next_msg(timeout=3) for s in subs]
        workers = {c["worker"] for c in connz(srv, worker="true")["connections"]}
        for c in clients:
            await c.close()
        return got, workers
    got, workers = asyncio.run(run())
    assert [m.data for m in got] == [b"hi"] * len(got) and len(got) >= 6
    assert workers == {0, 1}


# ------------------------------------------------------------------ against Go

@pytest.mark.differential
@pytest.mark.parametrize("variant", ["required", "verify", "allow_non_tls", "map"])
def test_info_matches_go(tmp_path, pki, servers, variant):
    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    text = {
        "required": pki.tls_block(ca=False),
        "verify": pki.tls_block("verify: true"),
        "allow_non_tls": pki.tls_block(ca=False) + "allow_non_tls: true\n",
        "map": pki.tls_block("verify_and_map: true") + MAP_USERS,
    }[variant]
    infos = []
    for cmd in (NATSX, [GO_SERVER]):
        srv = start_with_config(tmp_path, text, cmd=cmd)
        servers.append(srv)
        sock, info = read_info(srv.port)
        sock.close()
        infos.append(info)
    volatile = ("server_id", "server_name", "version", "go", "port", "client_id", "nonce")
    ours, gos = ({k: v for k, v in i.items() if k not in volatile} for i in infos)
    assert list(ours) == list(gos) and ours == gos


# ------------------------------------------------------------------ HTTPS monitoring

def test_https_monitoring(pki, servers, tmp_path):
    port, https_port = free_port(), free_port()
    srv = RunningServer(NATSX + ["-a", "127.0.0.1", "-p", str(port), "--https_port",
                                 str(https_port), *pki.flags()], port, https_port,
                        tmp_path / "https.log")
    servers.append(srv)
    trust = ssl.create_default_context(cafile=pki.path("ca.pem"))
    varz = httpx.get(f"https://localhost:{https_port}/varz", verify=trust, timeout=5).json()
    assert varz["https_port"] == https_port and varz["http_port"] == 0
    assert varz["tls_required"] is True and varz["tls_verify"] is True
    assert varz["tls_timeout"] == 2 and varz["auth_timeout"] == 3
    assert varz["tls_cert_not_after"].endswith("Z")
    # The monitor asks for no client certificate, even with --tlsverify.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{https_port}/varz", timeout=5)
    assert "Starting https monitor on 127.0.0.1:" in srv.log()


def test_https_needs_tls_and_excludes_http(pki):
    out = subprocess.run(NATSX + ["-p", str(free_port()), "--https_port", str(free_port())],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "Can't start monitoring: TLS cert and key required for HTTPS" in out.stderr
    http, https = free_port(), free_port()
    out = subprocess.run(NATSX + ["-p", str(free_port()), "-m", str(http), "--https_port",
                                  str(https), *pki.flags()], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1
    assert (f"Can't start monitoring: can't specify both HTTP ({http}) and HTTPs ({https}) "
            "ports") in out.stderr


class RecordClient:
    """A TLS client over memory BIOs, so that a test decides how its records are grouped in
    writes and sees which record each decrypted byte came in."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext) -> None:
        self.sock, self.raw = sock, b""
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.out.read())
                data = self.sock.recv(65536)
                assert data, "closed during the handshake"
                self.inc.write(data)
        self.sock.sendall(self.out.read())

    def records(self, *payloads: bytes) -> bytes:
        """One record per payload, to be sent together."""
        for p in payloads:
            self.tls.write(p)
        return self.out.read()

    def next_record(self) -> bytes:
        """The plaintext of the next application record (empty for TLS 1.3 tickets)."""
        while len(self.raw) < 5 or len(self.raw) < 5 + int.from_bytes(self.raw[3:5], "big"):
            data = self.sock.recv(65536)
            assert data, "closed"
            self.raw += data
        size = 5 + int.from_bytes(self.raw[3:5], "big")
        self.inc.write(self.raw[:size])
        self.raw = self.raw[size:]
        plain = b""
        while True:
            try:
                plain += self.tls.read(65536)
            except ssl.SSLWantReadError:
                return plain


@pytest.mark.parametrize("workers", ["1", "2"])
def test_records_sent_together_are_answered_together(start_natsx, pki, workers):
    # A client that writes two PUBs as two TLS records in one segment gets both messages
    # back in one write, as from Go, which reads its socket in full: nats.py's TLS reconnect
    # test closes its connection on the first reply and counts a second one arriving after
    # its close_notify as an error.
    srv = start_natsx(*pki.flags(), "--workers", workers)
    sock, _ = read_info(srv.port)
    sock.settimeout(5)
    client = RecordClient(sock, pki.client_ctx())
    sock.sendall(client.records(b'CONNECT {"verbose":false}\r\nSUB reply 1\r\nPING\r\n'))
    seen = b""
    while b"PONG\r\n" not in seen:
        seen += client.next_record()
    sock.sendall(client.records(b"PUB reply 7\r\nReply:1\r\n", b"PUB reply 7\r\nReply:2\r\n"))
    record = b""
    while not record:
        record = client.next_record()
    assert record == b"MSG reply 1 7\r\nReply:1\r\nMSG reply 1 7\r\nReply:2\r\n"
    sock.close()
