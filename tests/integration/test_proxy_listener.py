"""PROXY protocol on a real server: the header's client is REMOTE_ADDR for every request
on the connection; no header, a bad one, or a peer outside proxy_allow_ips: closed with
nothing written."""

from __future__ import annotations

import socket
import struct

import pytest

V2 = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src: str, sport: int, dst: str = "192.0.2.1", dport: int = 443) -> bytes:
    block = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2 + b"\x21\x11" + struct.pack("!H", len(block)) + block


def where(n: int) -> bytes:
    return b"GET /where HTTP/1.1\r\nHost: x\r\n\r\n" * n


def read_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def bodies(raw: bytes) -> list[bytes]:
    out = []
    for part in raw.split(b"HTTP/1.1 200 OK\r\n")[1:]:
        head, body = part.split(b"\r\n\r\n", 1)
        n = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        out.append(body[:n])
    return out


@pytest.mark.parametrize("version", ["v2", "auto"])
def test_header_address_is_remote_addr_for_every_request(server, version):
    srv = server("-w", "1", "--app", "wsgiapps:app", "--proxy-protocol", version)
    srv.wait_ready(1)
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(v2_header("203.0.113.9", 4242) + where(2))
        s.sendall(where(1) + b"GET /where HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = bodies(read_all(s))
    assert len(got) == 4 and all(b.startswith(b"203.0.113.9 ") for b in got), got
    with socket.create_connection(srv.address, timeout=5) as s:  # v1 too under auto
        s.sendall(b"PROXY TCP4 198.51.100.2 192.0.2.1 5555 80\r\n" + where(1)
                  + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = read_all(s)
    assert (version == "auto") == raw.startswith(b"HTTP/1.1 200"), raw[:80]


def refused(srv, sent: bytes) -> bool:
    """The server closed without writing a byte (an abort may show as a reset)."""
    with socket.create_connection(srv.address, timeout=5) as s:
        try:
            s.sendall(sent)
            return read_all(s) == b""
        except ConnectionResetError:
            return True


@pytest.mark.parametrize("sent", [
    where(1),  # no header
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n" + where(1),  # malformed (a fifth field)
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n" + where(1),  # v1 where v2 is expected
])
def test_a_missing_or_bad_header_is_closed_with_nothing_written(server, sent):
    srv = server("-w", "1", "--app", "wsgiapps:app", "--proxy-protocol", "v2")
    srv.wait_ready(1)
    assert refused(srv, sent)
    with socket.create_connection(srv.address, timeout=5) as s:  # and it serves on
        s.sendall(v2_header("203.0.113.9", 1) + where(1))
        s.shutdown(socket.SHUT_WR)
        assert bodies(read_all(s)) == [b"203.0.113.9 127.0.0.1 %d HTTP/1.1" % srv.port]


def test_a_peer_outside_proxy_allow_ips_is_closed(server):
    srv = server("-w", "1", "--app", "wsgiapps:app", "--proxy-protocol", "v2",
                 "--proxy-allow-ips", "10.0.0.0/8")
    srv.wait_ready(1)
    assert refused(srv, v2_header("203.0.113.9", 4242) + where(1))
