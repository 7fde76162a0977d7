"""The ports file: where a harness learns the ports a server picked (``-p -1``, ``-m -1``).

Go writes ``<basename of argv[0]>_<pid>.ports`` in ``ports_file_dir`` with
``json.Marshal(Ports{...})``: one list of URLs per listener, keys ``nats``, ``monitoring``,
``cluster``, ``profile`` and ``websocket``, empty ones left out (server.go PortsInfo). A
listener bound to a specific address gives one URL; one bound to the wildcard gives a URL
per interface address (resolveHostPorts), in the order the kernel lists the interfaces.

The Go server listens dual-stack on ``0.0.0.0``, so it also lists the IPv6 addresses; an
IPv4 listener here only answers on IPv4, so only those are listed: every URL in the file
must be one a client can connect to.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import json
import socket


class _SockaddrIn(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16),
                ("addr", ctypes.c_ubyte * 4)]


class _SockaddrIn6(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16),
                ("flowinfo", ctypes.c_uint32), ("addr", ctypes.c_ubyte * 16),
                ("scope_id", ctypes.c_uint32)]


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = [("next", ctypes.POINTER(_Ifaddrs)), ("name", ctypes.c_char_p),
                     ("flags", ctypes.c_uint), ("addr", ctypes.c_void_p),
                     ("netmask", ctypes.c_void_p), ("dstaddr", ctypes.c_void_p),
                     ("data", ctypes.c_void_p)]


def interface_addresses(*families: int) -> list[str]:
    """Addresses of ``families`` on every interface: by interface index, IPv4 before IPv6
    within one (Go: net.Interfaces, then each one's Addrs)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    head = ctypes.POINTER(_Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        return []
    found: list[tuple[int, int, int, str]] = []
    try:
        node = head
        seq = 0
        while node:
            ifa = node.contents
            fam = ctypes.cast(ifa.addr, ctypes.POINTER(ctypes.c_ushort)).contents.value \
                if ifa.addr else None
            if fam in families:
                if fam == socket.AF_INET:
                    raw = ctypes.cast(ifa.addr, ctypes.POINTER(_SockaddrIn)).contents.addr
                    text = str(ipaddress.IPv4Address(bytes(raw)))
                else:
                    raw = ctypes.cast(ifa.addr, ctypes.POINTER(_SockaddrIn6)).contents.addr
                    text = str(ipaddress.IPv6Address(bytes(raw)))
                try:
                    index = socket.if_nametoindex(ifa.name.decode())
                except OSError:
                    index = 0
                found.append((index, fam != socket.AF_INET, seq, text))
                seq += 1
            node = ifa.next
    finally:
        libc.freeifaddrs(head)
    return [text for *_, text in sorted(found)]


def listener_urls(scheme: str, sock: socket.socket) -> list[str]:
    """Go's formatURL for a listening socket."""
    host, port = sock.getsockname()[:2]
    if ipaddress.ip_address(host).is_unspecified:
        families = [sock.family]
        if sock.family == socket.AF_INET6 and not sock.getsockopt(socket.IPPROTO_IPV6,
                                                                  socket.IPV6_V6ONLY):
            families.append(socket.AF_INET)
        hosts = interface_addresses(*families)
    else:
        hosts = [host]
    return [f"{scheme}://[{h}]:{port}" if ":" in h else f"{scheme}://{h}:{port}"
            for h in hosts]


def ports_json(nats: socket.socket, monitoring: socket.socket | None = None, *,
               websocket: socket.socket | None = None, wss: bool = False,
               tls: bool = False, https: bool = False) -> str:
    """The file's content: compact JSON, as json.Marshal writes it (``tls://`` when clients
    must use TLS, ``https://`` for an HTTPS monitor, as Go's PortsInfo)."""
    ports = {"nats": listener_urls("tls" if tls else "nats", nats)}
    if monitoring is not None:
        ports["monitoring"] = listener_urls("https" if https else "http", monitoring)
    if websocket is not None:
        ports["websocket"] = listener_urls("wss" if wss else "ws", websocket)
    return json.dumps({k: v for k, v in ports.items() if v}, separators=(",", ":"))
