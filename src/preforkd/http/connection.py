"""Sans-I/O HTTP/1.1 server connection: bytes in, events out.

Theory of operation
-------------------
HttpConnection owns no socket, clock or logger. `receive_data(bytes)` feeds
httptools (llhttp, strict), whose callbacks only build Request objects and
append events. `next_event()` returns, in order:

- CONTINUE       the current request sent `Expect: 100-continue` and its
                 body will be accepted: the caller sends `100 Continue`;
- a Request      complete, body included (the app never waits for I/O);
- an HttpError   the client broke the protocol or a limit: answer with its
                 status and close; nothing after it is parsed;
- NEED_DATA      nothing more until more bytes arrive.

(`events` is the queue itself; the protocol drains it directly on its hot path.)

Limits are checked as bytes arrive, so memory is bounded by the limits and
not by what a client chooses to send. Bodies past `body_buffer_bytes` spill
to an anonymous temporary file.

Strictness: llhttp refuses bad bytes, bare CR/LF, obs-fold, bad
Content-Length values and CL+TE. What it lets through is checked by
http/rules.py on the bytes already in hand (Host, target forms, transfer
coding, version, unknown methods). A usual request pays for that with one
list compare and two byte tests (see on_headers_complete). Chunked bodies
are decoded by http/request_body.py, not by llhttp (whose chunk grammar
is not the RFC's): llhttp stops at the head, and a fresh parser takes the
next request. After a request that ends the connection (Connection: close,
an upgrade that is refused) nothing more is read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import httptools

from preforkd.config import FIELDS_BY_KEY
from preforkd.http import rules
from preforkd.http.request import HttpError, Request
from preforkd.http.request_body import ChunkedBody, LengthBody

__all__ = ["CONTINUE", "NEED_DATA", "HttpConnection", "HttpError", "Limits", "Request"]


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
_NO_EVENTS: tuple = ()
CONTINUE = _Sentinel("CONTINUE")


def _default(key: str) -> Any:
    return FIELDS_BY_KEY[key].default


@dataclass(frozen=True)
class Limits:
    """The request limits, named and defaulted as in the config table."""

    max_request_line_bytes: int = _default("max_request_line_bytes")
    max_header_bytes: int = _default("max_header_bytes")
    max_header_count: int = _default("max_header_count")
    max_body_bytes: int = _default("max_body_bytes")
    body_buffer_bytes: int = _default("body_buffer_bytes")

    @classmethod
    def from_config(cls, config: Any) -> Limits:
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


# Header names whose value the connection itself needs, found by length first (cheap).
_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"
_EXPECT = b"expect"
_CONNECTION = b"connection"
_WATCHED_LENGTHS = frozenset(len(n) for n in (_CONTENT_LENGTH, _TRANSFER_ENCODING, _EXPECT,
                                                _CONNECTION))
_OWS = rules.OWS

# Request targets lately seen in origin-form without a fragment, the usual form (a
# cache per process: clients repeat their targets). Bounded in count and length.
_USUAL_TARGETS: set[bytes] = set()
_USUAL_MAX = 1024
_USUAL_MAX_LEN = 256


def _unusual(target: bytes) -> bool:
    """Whether `target` (or its first part) is not in the usual form; a usual one is
    remembered. (47 is "/", 35 "#".)"""
    if target[0] != 47 or 35 in target:
        return True
    if len(target) <= _USUAL_MAX_LEN:
        if len(_USUAL_TARGETS) >= _USUAL_MAX:
            _USUAL_TARGETS.clear()
        _USUAL_TARGETS.add(target)
    return False


class _TakeBody(Exception):
    """Raised in on_headers_complete to stop llhttp: this body is decoded here."""


class _Callbacks:
    """What llhttp calls (through httptools) while it parses: the callbacks only record,
    into the state HttpConnection keeps (the slots are its)."""

    __slots__ = ()
    request: Request | None
    events: Any
    in_headers: bool
    limits: Limits
    _parser: Any
    _special: bool
    _fields_ok: list | None
    _closing: Request | None
    _head_bytes: int
    _big: bool
    _max_line: int
    _max_count: int
    _max_head: int

    # No on_message_begin: one Python call fewer per request. A request starts with
    # its target's first bytes (llhttp reports nothing earlier).
    def on_url(self, part: bytes) -> None:
        if self.in_headers:  # the target goes on (split across reads)
            req = self.request
            target = req.target = req.target + part
            if 35 in part:
                self._special = True
        else:
            req = self.request = Request()
            req.headers = []
            self.in_headers = True
            # Not the usual target (origin-form without a fragment): looked at in
            # _check_framing, with the other requests out of the common. Known ones
            # cost a set lookup (whose hash the router's and the environ's reuse).
            self._special = part not in _USUAL_TARGETS and _unusual(part)
            target = req.target = part
        if len(target) > self._max_line:
            raise HttpError(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only ever a head's field: llhttp never parses a body's trailers here (chunked
        # bodies are decoded by request_body.py). llhttp strips leading OWS only;
        # trailing OWS is not part of the value either (RFC 9110 §5.5): removed where
        # a value is used (framing fields, Host, the environ's per-connection layer).
        self.request.headers.append((name, value))
        if len(name) in _WATCHED_LENGTHS:
            self._watch(name.lower(), value)

    def _watch(self, lower: bytes, value: bytes) -> None:
        req = self.request
        if lower == _CONTENT_LENGTH:
            req.content_length = int(value)  # llhttp has validated the digits (int strips OWS)
        elif lower == _TRANSFER_ENCODING:
            rules.check_coding(req, value.rstrip(_OWS))
        elif lower == _EXPECT:
            req.expect = value.rstrip(_OWS).lower()
        elif lower == _CONNECTION:
            req.connection_header = True
        else:
            return
        self._special = True

    def on_headers_complete(self) -> None:
        req = self.request
        parser = self._parser
        self.in_headers = False
        self._head_bytes = 0
        req.method = parser.get_method()
        headers = req.headers
        if self._big or len(headers) > self._max_count:
            rules.check_size(req, self._max_count, self._max_head)
        ok = self._fields_ok
        if headers == ok:
            # The same fields as the last request: take that list itself, and the
            # responder's compare with what its environ was made for is by identity.
            req.headers = ok
        elif rules.check_fields(req, parser):
            self._fields_ok = headers
        # Without a Connection header llhttp keeps alive only versions with major and
        # minor >= 1. So a request that is kept alive and has none of the watched
        # headers is HTTP/1.1 (or 1.x, served as 1.1) without a body, known without
        # asking for the version (which formats a string).
        if self._special or not parser.should_keep_alive():
            self._check_framing(req, parser)
        else:
            req.plain = True

    def _check_framing(self, req: Request, parser: Any) -> None:
        target = req.target
        if target[0] != 47 or 35 in target:
            rules.check_target(req)
        keep_alive = req.keep_alive = parser.should_keep_alive()
        if not keep_alive or req.connection_header:
            version = parser.get_http_version()
            if version != "1.1" and version != "1.0":
                version = rules.served_version(version)
            req.version = version
            if not keep_alive:
                self._closing = req
        if req.chunked and req.version == "1.0":
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")  # RFC 9112 §6.1
        if req.content_length > self.limits.max_body_bytes:
            raise HttpError(413, "request body too large")
        if req.expect and req.expect != b"100-continue":
            raise HttpError(417, "unsupported expectation")
        if req.content_length > 0 or req.chunked:
            self._body_ahead(req, parser)  # (last: the head passed every check)

    def _body_ahead(self, req: Request, parser: Any) -> None:
        """A valid head with a body to come: ask for it, and pick who decodes it."""
        # Never 100 to an HTTP/1.0 client (RFC 9110 §10.1.1): it sends its body anyway.
        if req.expect and req.version != "1.0":
            self._emit(CONTINUE)
        if parser.should_upgrade():
            # Not switched: answered, then closed. llhttp would skip the body; it is
            # framed as usual (RFC 9112 §6.3) and decoded here.
            req.keep_alive = False
            raise _TakeBody
        if req.chunked:
            raise _TakeBody  # llhttp stops here: see _take_over

    def on_body(self, data: bytes) -> None:
        req = self.request
        size = req.body_size + len(data)
        if size > self.limits.max_body_bytes:
            raise HttpError(413, "request body too large")
        req.body_size = size
        if req.body:
            req.add_body(data, self.limits.body_buffer_bytes)
        else:
            req.body = data  # the common case: the whole body in one piece, no copy

    def on_message_complete(self) -> None:
        req = self.request
        self.request = None
        events = self.events
        if events is _NO_EVENTS:  # (_emit inlined: this runs for every request)
            self.events = [req]
        else:
            events.append(req)

    def _emit(self, event: Any) -> None:
        if self.events is _NO_EVENTS:
            self.events = [event]
        else:
            self.events.append(event)


class HttpConnection(_Callbacks):
    __slots__ = ("limits", "_parser", "events", "request", "in_headers", "_failed",
                 "_head_bytes", "_big", "eof", "_max_head", "_max_line", "_max_count",
                 "_special", "_fields_ok", "_body", "_tail", "_closing",
                 "_last_byte", "_rest")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._parser: Any = None  # made on the first byte, dropped by release()
        self.events: Any = _NO_EVENTS  # a list once there is something to report
        self.request: Request | None = None
        self.in_headers = False
        self._failed = False
        # Bytes fed while a header section was incomplete. While this plus the next
        # read stays under max_header_bytes, no header section in that read can be
        # too large, so the per-header byte count is skipped (the common case).
        self._head_bytes = 0
        self._big = False
        self._special = False  # the request in its headers has a watched header
        # The last header section that passed the field checks (a client repeats its
        # fields: an equal list, one C-level compare, needs no second look).
        self._fields_ok: list | None = None
        # A body decoded here, or the run of a method llhttp does not know.
        self._body: ChunkedBody | LengthBody | rules.MethodRun | None = None
        self._tail = b""  # the last bytes of a read that ended inside a head
        self._closing: Request | None = None  # a request after which nothing is read
        self._last_byte = 10  # of the last read llhttp took
        self._rest: bytes | None = None  # (see _go_on)
        self._max_head = limits.max_header_bytes
        self._max_line = limits.max_request_line_bytes
        self._max_count = limits.max_header_count
        self.eof = False

    # `request` is not None while part of a request has arrived and its end has not;
    # `in_headers` while that part is still the header section.

    def receive_data(self, data: bytes) -> None:
        if self._failed or not data:
            return
        if self._body is not None:  # (a body decoded here, or a method followed)
            data = self._decode_body(data)
            if not data or self._failed:
                return
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
            # llhttp's own version rule refuses HTTP/1.2..1.9 as malformed: preforkd
            # decides (served as 1.1, RFC 9110 §2.5; see rules.served_version).
            parser.set_dangerous_leniencies(lenient_version=True)
        # An unfinished header section's bytes so far plus this read: while that stays
        # under the limit, no header section completed in this read can be too large,
        # and on_headers_complete skips the exact count (the common case).
        self._big = self._head_bytes + len(data) > self._max_head
        start = self.request  # (not None: a request began in an earlier read)
        if start is not None:
            start = (start, self.in_headers, start.body_size)
        done = len(self.events) if self.events else 0  # (usually empty: no call)
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            rest = self._stopped(e, data, start, done)
        else:
            if self.in_headers:
                # The read ended inside a header section. llhttp holds a partial header
                # line itself, unbounded: cap what we let it hold. (This counts the
                # whole read, an upper bound of the section's part in it.)
                self._tail = (self._tail + data)[-3:] if self._head_bytes else data[-3:]
                self._head_bytes += len(data)
                if self._head_bytes > self._max_head:
                    self._fail(HttpError(431, "header section too large"))
            self._last_byte = data[-1]  # (see release)
            return
        if rest:
            # (outside the except clause: an exception raised while one is handled
            # would get that one as its __context__, where httptools puts ours)
            self._go_on(rest)

    def _stopped(self, e: Exception, data: bytes, start: tuple | None, done: int) -> bytes:
        """llhttp stopped inside `data`: for us (a body decoded here, a method it does
        not know), or at a request it refused. Returns what follows for us to read."""
        if isinstance(e, httptools.HttpParserCallbackError):
            err = e.__context__
            if type(err) is _TakeBody:
                return self._take_over(data, rules.body_start, start, done,
                                       self._body_decoder())
            self._fail(err if isinstance(err, HttpError) else HttpError(400, str(err)))
        elif isinstance(e, httptools.HttpParserUpgrade):
            self._upgrade_refused()
        elif isinstance(e, httptools.HttpParserInvalidMethodError):
            return self._take_over(data, rules.method_start, start, done, rules.MethodRun())
        else:
            self._parse_error(str(e))
        return b""

    def _go_on(self, rest: bytes) -> None:
        """The bytes after where llhttp stopped, taken as a read of their own. A loop
        rather than recursion: one read may hold many chunked requests."""
        if self._rest is not None:  # (inside the loop below: it takes them next)
            self._rest = rest
            return
        try:
            while rest and not self._failed:
                self._rest = b""
                self.receive_data(rest)
                rest = self._rest
        finally:
            self._rest = None

    def _parse_error(self, detail: str) -> None:
        if self._closing is not None and self.request is None:
            self._failed = True  # bytes after the last request: never read (RFC 9112 §9.6)
        elif detail.startswith("Pause on PRI"):
            self._fail(HttpError(505, "HTTP/2 is not supported"))  # the h2 preface
        else:
            self._fail(HttpError(400, detail))

    def _take_over(self, data: bytes, locate: Any, start: tuple | None, done: int,
                   decoder: Any) -> bytes:
        """llhttp stopped inside a read (at the end of a chunked request's head, or at a
        method it does not know): `decoder` goes on from where `locate` says llhttp
        stopped. The parser is spent; the next request gets a new one."""
        self._parser = None
        try:
            pos = locate(data, start, self.events[done:], self._tail)
        except HttpError as e:
            self._fail(e)
            return b""
        self._body = decoder
        return data[pos:]

    def _body_decoder(self) -> ChunkedBody | LengthBody:
        req, limits = self.request, self.limits
        if req.chunked:
            return ChunkedBody(self.on_body, limits.max_body_bytes, limits.max_header_bytes)
        return LengthBody(self.on_body, req.content_length)

    def _upgrade_refused(self) -> None:
        """llhttp stopped after a request without a body that asked to switch protocols
        (one with a body stops at its head: see _body_ahead). preforkd does not
        switch: it answers, then closes."""
        last = self.events[-1] if self.events else None
        if isinstance(last, Request):
            if last.method == b"CONNECT":
                self.events[-1] = rules.connect_refused()
            last.keep_alive = False
        self._failed = True

    def _decode_body(self, data: bytes) -> bytes:
        try:
            pos = self._body.feed(data)
        except HttpError as e:
            self._fail(e)
            return b""
        if pos < 0:
            return b""
        self._body = None
        req = self.request
        self.request = None
        self._emit(req)
        if not req.keep_alive:
            self._failed = True  # nothing after it is read (RFC 9112 §9.6)
        return data[pos:]

    def receive_eof(self) -> None:
        """The client half-closed: a request cut short is an error (answered, then closed)."""
        self.eof = True
        if (self.request is not None or self._body is not None) and not self._failed:
            self._fail(HttpError(400, "connection closed in the middle of a request"))

    def _fail(self, error: HttpError) -> None:
        if self._failed:
            return  # (the request that asked to upgrade was the last one)
        self._failed = True
        self.in_headers = False
        self.request = None
        self._body = None
        self._emit(error)

    def next_event(self) -> Any:
        if self.events:
            return self.events.pop(0)
        return NEED_DATA

    def close(self) -> None:
        """The connection is gone: drop the parser (it holds our bound methods)."""
        self._parser = None
        self._body = None
        self._failed = True

    def release(self) -> None:
        """Between requests, drop the parser (a few hundred bytes); the next byte
        makes a new one. For connections that sit idle. Only when the last read
        ended with LF: llhttp may hold the first bytes of the next request (its
        method, which no callback reports), and a method never ends in LF."""
        if (self.request is None and not self.events and not self._failed
                and self._last_byte == 10):
            self._parser = None
            self.events = _NO_EVENTS
            self._fields_ok = None
