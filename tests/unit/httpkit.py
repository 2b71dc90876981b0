"""In-memory HTTP: a fake transport and a Host around the real HttpProtocol, and a strict
response parser that checks every response is well framed."""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from preforkd import config as configmod
from preforkd.http.connection import NEED_DATA, HttpConnection, Limits
from preforkd.http.driver import HttpProtocol
from preforkd.http.server import HttpServer
from preforkd.listeners import Listener
from preforkd.protocols.base import Host
from preforkd.scoreboard import Scoreboard


class FakeLoop:
    def __init__(self) -> None:
        # The time of the turn (the real loop's is monotonic() after each poll): the
        # clock, so that durations timed from it are real; tests move it on their own.
        self.now = time.monotonic()
        self.soon: list = []

    def call_later(self, delay, cb, *args):
        return None

    def call_soon(self, cb, *args):
        cb(*args)  # in memory there is no turn to wait for


def fake_host() -> Host:
    scoreboard = Scoreboard(4)
    return Host(FakeLoop(), scoreboard, scoreboard.view(0), 0, 1, set())


def drain(server: HttpServer) -> None:
    """What the worker does when a graceful stop begins."""
    for hook in server.host.drain_hooks:
        hook()


class FakeListener:
    address = ("127.0.0.1", "8000")
    family = 2  # AF_INET


LISTENER = FakeListener()


class FakeTransport:
    def __init__(self, protocol: Any, write_limit: int = 1 << 30) -> None:
        self.protocol = protocol
        self.out = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.write_limit = write_limit  # pause_writing past this much unread output
        self.paused = False

    def write_later(self, data: bytes) -> None:
        self.write(data)  # in memory there is no turn to wait for

    def flush(self) -> None:
        pass  # (write_later wrote at once)

    def setsockopt(self, level, option, value) -> None:
        self.options = getattr(self, "options", []) + [(level, option, value)]

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self.out += data
        if not self.paused and len(self.out) > self.write_limit:
            self.paused = True
            self.protocol.pause_writing()

    def drain(self) -> bytes:
        """The client reads everything so far."""
        data = bytes(self.out)
        self.out.clear()
        if self.paused:
            self.paused = False
            self.protocol.resume_writing()
        return data

    def sendfile(self, fd, offset, count, on_done=None):
        import os

        self.out += os.pread(fd, count, offset)
        if on_done:
            on_done()

    def close(self) -> None:
        self.closed = True

    def close_lingering(self) -> None:
        self.closed = self.lingering = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closed

    def get_protocol(self):
        return self.protocol

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    extra: dict = {}

    def get_extra_info(self, name, default=None):
        if name in self.extra:
            return self.extra[name]
        info = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000),
                "socket": None, "listener": LISTENER}
        return info.get(name, default)

    def set_extra_info(self, extra) -> None:
        self.extra = {**self.extra, **extra}


def accepted_tcp() -> tuple[Any, Listener, socket.socket, int, Any]:
    """A loopback listener with one connection accepted: (listening socket, its
    Listener, the client's socket, the accepted fd and the peer's address)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    client = socket.create_connection(lsock.getsockname())
    fd, addr = lsock._accept()
    return lsock, Listener(lsock, "127.0.0.1:0"), client, fd, addr


def make_server(app: Any = None, **overrides: Any) -> HttpServer:
    import sys

    mod = type(sys)("_httpkit_app")
    mod.app = app
    sys.modules["_httpkit_app"] = mod
    cfg = configmod.load("", {k: v for k, v in overrides.items()})
    cfg = cfg.replace(app="_httpkit_app:app" if app is not None else "")
    return HttpServer(cfg, fake_host())


def connect(server: HttpServer, write_limit: int = 1 << 30):
    proto = server.make_protocol()
    t = FakeTransport(proto, write_limit)
    proto.connection_made(t)
    return proto, t


def exchange(server: HttpServer, chunks: list[bytes], eof: bool = False) -> tuple[bytes, bool]:
    proto, t = connect(server)
    for c in chunks:
        if t.closed:
            break
        proto.data_received(c)
    if eof and not t.closed:
        proto.eof_received()
    return bytes(t.out), t.closed


@dataclass
class Resp:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    raw_headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*\r\n")


def parse_responses(data: bytes, methods: list[bytes] | None = None,
                    closed: bool = True) -> list[Resp]:
    """Parse a byte stream of responses strictly; AssertionError on any framing fault."""
    out: list[Resp] = []
    pos = 0
    i = 0
    while pos < len(data):
        m = _STATUS_LINE.match(data, pos)
        assert m, f"bad status line at {pos}: {data[pos:pos + 60]!r}"
        end = data.find(b"\r\n\r\n", pos)
        assert end >= 0, "unterminated header section"
        resp = Resp(int(m.group(1)))
        for line in data[m.end():end].split(b"\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(b":")
            assert sep and re.fullmatch(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name), line
            assert b"\r" not in value and b"\n" not in value and b"\0" not in value
            k, v = name.decode().lower(), value.strip().decode("latin-1")
            assert k not in resp.headers or k not in ("content-length", "transfer-encoding"), \
                f"duplicate {k}"
            resp.headers[k] = v
            resp.raw_headers.append((k, v))
        pos = end + 4
        head = methods is not None and i < len(methods) and methods[i] == b"HEAD"
        if resp.status == 100:
            out.append(resp)
            continue
        i += 1
        if head or resp.status in (204, 304):
            pass
        elif "content-length" in resp.headers:
            assert "transfer-encoding" not in resp.headers
            n = int(resp.headers["content-length"])
            assert len(data) - pos >= n, "body shorter than its Content-Length"
            resp.body = data[pos:pos + n]
            pos += n
        elif resp.headers.get("transfer-encoding") == "chunked":
            body = bytearray()
            while True:
                eol = data.find(b"\r\n", pos)
                assert eol >= 0, "unterminated chunk size"
                size = int(data[pos:eol], 16)
                pos = eol + 2
                if size == 0:
                    assert data[pos:pos + 2] == b"\r\n", "bad last chunk"
                    pos += 2
                    break
                body += data[pos:pos + size]
                assert data[pos + size:pos + size + 2] == b"\r\n", "bad chunk end"
                pos += size + 2
            resp.body = bytes(body)
        else:
            assert closed, "close-delimited body on a connection left open"
            resp.body = data[pos:]
            pos = len(data)
        out.append(resp)
    return out


class PhaseMoves:
    """Records every change of HttpProtocol.phase while installed (the class attribute is
    swapped for a property around the slot, so `type(p) is HttpProtocol` still holds)."""

    def __init__(self) -> None:
        self.moves: set[tuple[int, int]] = set()

    def __enter__(self) -> PhaseMoves:
        slot = self._slot = HttpProtocol.__dict__["phase"]
        moves = self.moves

        def get(proto):
            return slot.__get__(proto)

        def set_(proto, new):
            try:
                old = slot.__get__(proto)
            except AttributeError:  # the first assignment, in __init__
                old = new
            if old != new:
                moves.add((old, new))
            slot.__set__(proto, new)

        HttpProtocol.phase = property(get, set_)
        return self

    def __exit__(self, *exc: Any) -> None:
        HttpProtocol.phase = self._slot


def feed(pieces: list[bytes], eof: bool = True, limits: Limits | None = None) -> list:
    """Every event a fresh HttpConnection gives for these reads (and then EOF)."""
    conn = HttpConnection(limits or Limits())
    out: list = []
    for piece in pieces:
        conn.receive_data(piece)
        while (e := conn.next_event()) is not NEED_DATA:
            out.append(e)
    if eof:
        conn.receive_eof()
        while (e := conn.next_event()) is not NEED_DATA:
            out.append(e)
    return out
