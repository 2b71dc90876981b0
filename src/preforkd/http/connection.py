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
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from typing import Any

import httptools

from preforkd.config import FIELDS_BY_KEY


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


class HttpError(Exception):
    """A request that gets an error response and a closed connection (also an event)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Request:
    """One parsed request. Fields most requests leave alone are class attributes:
    a new request sets three fields instead of initialising eleven (hot path)."""

    method: bytes = b""
    target: bytes = b""
    headers: list[tuple[bytes, bytes]]  # set by the parser: never shared
    version = "1.1"
    keep_alive = True
    body: Any = b""  # bytes, bytearray, or a spooled file past body_buffer_bytes
    body_size = 0
    content_length = -1
    expect = b""
    chunked = False
    connection_header = False
    plain = False  # HTTP/1.1, kept alive, no body: nothing above needs a second look

    def body_file(self) -> Any:
        """The body as a readable binary file positioned at 0."""
        if isinstance(self.body, (bytes, bytearray)):
            import io

            return io.BytesIO(self.body)
        self.body.seek(0)
        return self.body


# Header names whose value the connection itself needs, found by length first (cheap).
_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"
_EXPECT = b"expect"
_CONNECTION = b"connection"
_WATCHED_LENGTHS = frozenset(len(n) for n in (_CONTENT_LENGTH, _TRANSFER_ENCODING, _EXPECT,
                                                _CONNECTION))


class HttpConnection:
    __slots__ = ("limits", "_parser", "events", "request", "in_headers", "_failed",
                 "_head_bytes", "_big", "eof", "_max_head", "_max_line", "_max_count",
                 "_special")

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
        self._max_head = limits.max_header_bytes
        self._max_line = limits.max_request_line_bytes
        self._max_count = limits.max_header_count
        self.eof = False

    # `request` is not None while part of a request has arrived and its end has not;
    # `in_headers` while that part is still the header section.

    @property
    def has_events(self) -> bool:
        return bool(self.events)

    def receive_data(self, data: bytes) -> None:
        if self._failed:
            return
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        # An unfinished header section's bytes so far plus this read: while that stays
        # under the limit, no header section completed in this read can be too large,
        # and on_headers_complete skips the exact count (the common case).
        self._big = self._head_bytes + len(data) > self._max_head
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades (WebSocket, h2c) are not served: answer the request, then close.
            if self.events and isinstance(self.events[-1], Request):
                self.events[-1].keep_alive = False
            self._failed = True
        except httptools.HttpParserCallbackError as e:
            err = e.__context__
            self._fail(err if isinstance(err, HttpError) else HttpError(400, str(err)))
        except httptools.HttpParserError as e:
            self._fail(HttpError(400, str(e)))
            return
        if self.in_headers:
            # The read ended inside a header section. llhttp holds a partial header
            # line itself, unbounded: cap what we let it hold. (This counts the whole
            # read, an upper bound of the section's part in it.)
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._fail(HttpError(431, "header section too large"))

    def receive_eof(self) -> None:
        """The client half-closed: a request cut short is an error (answered, then closed)."""
        self.eof = True
        if self.request is not None and not self._failed:
            self._fail(HttpError(400, "connection closed in the middle of a request"))

    def _fail(self, error: HttpError) -> None:
        self._failed = True
        self.in_headers = False
        self.request = None
        self._emit(error)

    def next_event(self) -> Any:
        if self.events:
            return self.events.pop(0)
        return NEED_DATA

    def close(self) -> None:
        """The connection is gone: drop the parser (it holds our bound methods)."""
        self._parser = None
        self._failed = True

    def release(self) -> None:
        """Between requests, drop the parser (a few hundred bytes); the next byte
        makes a new one. For connections that sit idle."""
        if self.request is None and not self.events and not self._failed:
            self._parser = None
            self.events = _NO_EVENTS

    # -- httptools callbacks (they only record) -------------------------------------
    # No on_message_begin: one Python call fewer per request. A request starts with
    # its target's first bytes (llhttp reports nothing earlier).
    def on_url(self, part: bytes) -> None:
        if self.in_headers:  # the target goes on (split across reads)
            req = self.request
            target = req.target = req.target + part
        else:
            req = self.request = Request()
            req.headers = []
            self.in_headers = True
            self._special = False
            target = req.target = part
        if len(target) > self._max_line:
            raise HttpError(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_headers:  # (else a chunked trailer: dropped, bounded by llhttp)
            self.request.headers.append((name, value))
            if len(name) in _WATCHED_LENGTHS:
                self._watch(name.lower(), value)

    def _watch(self, lower: bytes, value: bytes) -> None:
        req = self.request
        if lower == _CONTENT_LENGTH:
            req.content_length = int(value)  # llhttp has validated the digits
        elif lower == _TRANSFER_ENCODING:
            req.chunked = True  # llhttp rejects any other final coding
        elif lower == _EXPECT:
            req.expect = value.lower()
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
        if self._big or len(req.headers) > self._max_count:
            self._check_size(req)
        # Without a Connection header llhttp keeps alive only versions with major and
        # minor >= 1, and the only such version it accepts is 1.1. So a request that
        # is kept alive and has none of the watched headers is plain HTTP/1.1 without
        # a body, known without asking for the version (which formats a string).
        if self._special or not parser.should_keep_alive():
            self._check_framing(req, parser)
        else:
            req.plain = True

    def _check_size(self, req: Request) -> None:
        if len(req.headers) > self._max_count:
            raise HttpError(431, "too many header fields")
        if len(req.target) + sum(len(n) + len(v) + 4 for n, v in req.headers) > self._max_head:
            raise HttpError(431, "header section too large")

    def _check_framing(self, req: Request, parser: Any) -> None:
        keep_alive = req.keep_alive = parser.should_keep_alive()
        if not keep_alive or req.connection_header:
            version = parser.get_http_version()
            if version != "1.1" and version != "1.0":
                raise HttpError(505, f"HTTP/{version} is not supported")
            req.version = version
        if req.content_length > self.limits.max_body_bytes:
            raise HttpError(413, "request body too large")
        if req.expect:
            if req.expect != b"100-continue":
                raise HttpError(417, "unsupported expectation")
            # Never to an HTTP/1.0 client (RFC 9110 §10.1.1): it sends its body anyway.
            if (req.content_length > 0 or req.chunked) and req.version != "1.0":
                self._emit(CONTINUE)

    def on_body(self, data: bytes) -> None:
        req = self.request
        size = req.body_size + len(data)
        if size > self.limits.max_body_bytes:
            raise HttpError(413, "request body too large")
        req.body_size = size
        body = req.body
        if not body:
            req.body = data  # the common case: the whole body in one piece, no copy
        elif isinstance(body, (bytes, bytearray)):
            if size > self.limits.body_buffer_bytes:
                spill = tempfile.TemporaryFile()
                spill.write(body)
                spill.write(data)
                req.body = spill
            elif isinstance(body, bytes):
                req.body = bytearray(body) + data
            else:
                body += data
        else:
            body.write(data)

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
