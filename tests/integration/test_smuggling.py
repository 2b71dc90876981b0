"""The request-smuggling corpus (tests/smuggling.py) over real sockets against one real
server (one worker, tests/apps/reflect.py).

Each case gets its own connection. Its bytes are sent while responses are read (a
server may answer and close before it has read them all), then responses are parsed
strictly until the case's count is in and, where the server must close (a rejected
request, Connection: close, HTTP/1.0, an upgrade), until it has closed. A case that
leaves the connection open is then half-closed by the client: the server must close
with nothing more to say, so a request half read (a body the server thinks is
longer) is caught as well as one answered twice.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from smuggling import CASES, CLASSES, Case, Echo, by_class

from harness import Server

DEADLINE = 5.0  # for the responses (from the last byte sent)
CLOSE_WAIT = 1.0  # then for the close
PAD = b"a" * 65536

_STATUS = re.compile(r"HTTP/1\.1 ([1-5][0-9][0-9]) ([\t -~\x80-\xff]*)")
_FIELD = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t -~\x80-\xff]*?)[ \t]*")
_CHUNK = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")


class Malformed(Exception):
    """The server's bytes are not a well-framed HTTP/1.1 response."""


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name]

    def closes(self) -> bool:
        return any(t.strip().lower() == "close"
                   for v in self.values("connection") for t in v.split(","))


def parse_response(buf: bytes) -> tuple[Response, int] | None:
    """The response at the start of `buf` and its length in bytes; None while it is
    incomplete. Framing must be explicit: Content-Length or chunked (no 1xx body)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise Malformed("no end of the header section in 64 KiB")
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    m = _STATUS.fullmatch(lines[0])
    if m is None:
        raise Malformed(f"status line {lines[0]!r}")
    status = int(m.group(1))
    headers = []
    for line in lines[1:]:
        f = _FIELD.fullmatch(line)
        if f is None:
            raise Malformed(f"header line {line!r}")
        headers.append((f.group(1), f.group(2)))
    r = Response(status, headers, b"")
    pos = end + 4
    lengths, codings = r.values("content-length"), r.values("transfer-encoding")
    if status < 200:
        if lengths or codings:
            raise Malformed(f"framing on a {status} response")
        return r, pos
    if lengths and codings:
        raise Malformed("Content-Length and Transfer-Encoding")
    if codings:
        if codings != ["chunked"]:
            raise Malformed(f"Transfer-Encoding {codings}")
        parts = []
        while True:
            c = _CHUNK.match(buf, pos)
            if c is None:
                if len(buf) - pos >= 18:
                    raise Malformed(f"chunk size line {buf[pos:pos + 20]!r}")
                return None
            size, pos = int(c.group(1), 16), c.end()
            if size == 0:
                if len(buf) < pos + 2:
                    return None
                if buf[pos:pos + 2] != b"\r\n":
                    raise Malformed("trailer fields or no CRLF after the last chunk")
                r.body = b"".join(parts)
                return r, pos + 2
            if len(buf) < pos + size + 2:
                return None
            if buf[pos + size:pos + size + 2] != b"\r\n":
                raise Malformed("no CRLF after chunk data")
            parts.append(buf[pos:pos + size])
            pos += size + 2
    if len(lengths) != 1 or not lengths[0].isdigit() or not lengths[0].isascii():
        raise Malformed(f"Content-Length {lengths}")
    n = int(lengths[0])
    if len(buf) < pos + n:
        return None
    r.body = buf[pos:pos + n]
    return r, pos + n


@dataclass
class Outcome:
    """What the server did with a case's bytes."""

    responses: list[Response] = field(default_factory=list)
    rest: bytes = b""  # bytes after the last complete response
    malformed: str = ""
    end: str = "open"  # closed by the server | closed after the client's EOF | reset | open
    sent: int = 0

    def finals(self) -> int:
        return sum(1 for r in self.responses if r.status >= 200)


def exchange(address: tuple[str, int], case: Case) -> Outcome:
    out = Outcome()
    total = len(case.raw) + case.pad
    must_close = bool(case.reject) or case.closes
    buf = b""
    shut = False
    settled = False
    sock = socket.create_connection(address, timeout=DEADLINE)
    try:
        sock.setblocking(False)
        piece = memoryview(case.raw)
        deadline = time.monotonic() + DEADLINE
        while True:
            sending = out.sent < total
            if not sending and not settled and out.finals() >= case.responses:
                # Everything expected is in: the server closes at once where it must;
                # else the client half-closes, and the server must close too.
                settled = True
                deadline = time.monotonic() + CLOSE_WAIT
                if not must_close and not shut and out.end == "open":
                    sock.shutdown(socket.SHUT_WR)
                    shut = True
            if out.end != "open" or out.malformed:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], left)
            if writable and sending:
                if not piece:
                    piece = memoryview(PAD)[:min(len(PAD), total - out.sent)]
                try:
                    n = sock.send(piece)
                except (BrokenPipeError, ConnectionResetError):
                    total = out.sent  # the server stopped reading: read what it said
                else:
                    out.sent += n
                    piece = piece[n:]
                    if not settled:
                        deadline = time.monotonic() + DEADLINE  # (the server is reading)
                if out.sent >= total and case.eof and not shut:
                    sock.shutdown(socket.SHUT_WR)
                    shut = True
            if readable:
                try:
                    data = sock.recv(262144)
                except ConnectionResetError:
                    out.end = "reset"
                    break
                if not data:
                    out.end = "closed after the client's EOF" if shut else "closed by the server"
                    total = out.sent
                buf += data
                try:
                    while (parsed := parse_response(buf)) is not None:
                        out.responses.append(parsed[0])
                        buf = buf[parsed[1]:]
                except Malformed as e:
                    out.malformed = str(e)
    finally:
        sock.close()
    out.rest = buf
    return out


def wanted(echo: Echo) -> dict[str, Any]:
    want: dict[str, Any] = {"status": 200, "method": echo.method, "target": echo.target,
                            "body": echo.body.decode("latin-1")}
    for key in ("path", "query", "protocol"):
        if getattr(echo, key) is not None:
            want[key] = getattr(echo, key)
    want.update((f"headers.{k}", v) for k, v in echo.headers)
    return want


def seen(r: Response, want: dict[str, Any]) -> dict[str, Any]:
    """What `r` says, in the keys of `want` (all of them when it is no echo)."""
    if r.status != 200:
        return {"status": r.status, "body": r.body[:100].decode("latin-1")}
    try:
        got = json.loads(r.body)
    except ValueError:
        return {"status": 200, "not json": r.body[:100].decode("latin-1")}
    out: dict[str, Any] = {}
    for key in want:
        if key.startswith("headers."):
            out[key] = got["headers"].get(key[len("headers."):])
        elif key == "status":
            out[key] = r.status
        else:
            out[key] = got.get(key)
    return out


def compare(case: Case, out: Outcome) -> tuple[list[Any], list[Any]]:
    """The case's expectation and the outcome, as two lists equal when the case passes."""
    want: list[Any] = []
    got: list[Any] = []
    responses = iter(out.responses)
    for echo in case.served:
        if echo.interim:
            want.append({"status": 100})
        want.append(wanted(echo))
    if case.reject:
        statuses = case.reject[0] if len(case.reject) == 1 else case.reject
        want.append({"status": statuses, "connection": "close"})
    for w in want:
        r = next(responses, None)
        if r is None:
            break
        if "connection" in w:
            status = w["status"] if r.status in case.reject else r.status
            got.append({"status": status, "connection": "close" if r.closes()
                        else r.values("connection")})
        elif w == {"status": 100}:
            got.append({"status": r.status})
        else:
            got.append(seen(r, w))
    got.extend(seen(r, {"status": 0, "method": "", "target": ""}) | {"extra": True}
               for r in responses)
    must_close = bool(case.reject) or case.closes
    want.append("closed by the server" if must_close and not case.eof else "closed")
    end = out.end
    if not (must_close and not case.eof) and end.startswith("closed"):
        end = "closed"
    got.append(end)
    if out.malformed:
        got.append({"malformed": out.malformed, "bytes": out.rest[:200]})
    elif out.rest:
        got.append({"unparsed": out.rest[:200]})
    return want, got


@pytest.fixture(scope="module")
def reflect(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("smuggling"), ["--app", "reflect:app", "-w", "1"])
    try:
        srv.wait_ready(1)
        yield srv
    finally:
        srv.cleanup()
    srv.assert_clean_log()


def test_corpus_size_and_classes():
    counts = by_class()
    print("\n" + "\n".join(f"{k:18} {counts[k]}" for k in CLASSES)
          + f"\n{'total':18} {len(CASES)}")
    assert len(CASES) >= 150
    assert set(counts) == set(CLASSES) and min(counts.values()) >= 3, counts
    assert len({c.name for c in CASES}) == len(CASES)
    for c in CASES:
        assert c.name.startswith(c.klass + "-"), c.name
        assert c.rule.startswith("RFC "), c.name
        assert c.served or c.reject, c.name
        assert all(400 <= s < 600 for s in c.reject), c.name


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(reflect, case):
    out = exchange(reflect.address, case)
    want, got = compare(case, out)
    assert got == want, f"{case.expect} per {case.rule}; raw {case.raw[:300]!r}"
