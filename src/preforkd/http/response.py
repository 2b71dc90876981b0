"""Response heads and body framing: HTTP's side of a response, whoever produced it.

Every head on the wire comes out of `build_head`: the app's responses (whole,
streamed, files), the server's own answers, error pages and `100 Continue`.
A head is made of a validated prefix (`HeadParts`: status line and the
responder's headers), the framing line (Content-Length or chunked), the
server's date/server lines and the end of the head (with `connection: close`
when the connection ends after it).

Framing rules: the responder's own Content-Length when it gives one (a body
that disagrees with it is a ResponseError: logged, connection closed, never a
wrong frame); a body known whole gets a Content-Length; otherwise chunked on
HTTP/1.1 and close-delimited on HTTP/1.0. Status lines and headers are
validated: CR, LF, NUL or non-latin-1 are a ResponseError (a 500), never bytes
injected into the stream.
"""

from __future__ import annotations

import re
from typing import Any

REASONS = {400: "Bad Request", 404: "Not Found", 408: "Request Timeout",
           413: "Content Too Large", 414: "URI Too Long", 417: "Expectation Failed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable", 505: "HTTP Version Not Supported"}

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS = re.compile(r"[1-5][0-9][0-9] [^\x00-\x08\x0a-\x1f\x7f]*\Z")
HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade"))

END_CLOSE = b"connection: close\r\n\r\n"
END_KEEP = b"\r\n"
END_KEEP_10 = b"connection: keep-alive\r\n\r\n"  # an HTTP/1.0 client must be told
CHUNKED = b"transfer-encoding: chunked\r\n"
_CL_LINES = [b"content-length: %d\r\n" % n for n in range(4096)]


class ResponseError(Exception):
    """A responder broke the rules of a response (bad status or header, wrong length)."""


class HeadParts:
    """A status and headers, validated and encoded (read on every request: slots)."""

    __slots__ = ("prefix", "content_length", "close", "bodyless", "code")

    def __init__(self, prefix: bytes, content_length: int, close: bool, code: int) -> None:
        self.prefix = prefix  # status line and the responder's headers
        self.content_length = content_length  # the responder's Content-Length, or -1
        self.close = close  # the responder asked for Connection: close
        self.bodyless = code < 200 or code in (204, 304)
        self.code = code


def encode_head(status: Any, headers: Any) -> HeadParts:
    """Validate and encode a status ("200 OK") and a list of (name, value) str pairs.

    Content-Length is taken out (it is written once, after the framing decision) and
    hop-by-hop headers are dropped: they are the server's business."""
    if type(status) is not str or not _STATUS.match(status):
        raise ResponseError(f"invalid status {status!r}")
    if type(headers) is not list:
        raise ResponseError(f"headers must be a list, got {type(headers).__name__}")
    try:
        lines = [f"HTTP/1.1 {status}\r\n".encode("latin-1")]
    except UnicodeEncodeError:
        raise ResponseError(f"status {status!r} is not latin-1") from None
    content_length = -1
    close = False
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise ResponseError(f"header {item!r}: expected a (name, value) tuple")
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise ResponseError(f"header {name!r}: names and values must be str")
        if not _TOKEN.match(name) or _BAD_VALUE.search(value):
            raise ResponseError(f"invalid header {name!r}: {value!r}")
        lname = name.lower()
        if lname == "content-length":
            if not value.isdigit() or content_length >= 0:
                raise ResponseError(f"invalid or repeated Content-Length {value!r}")
            content_length = int(value)
            continue
        if lname in HOP_BY_HOP:
            if lname == "connection" and value.lower() == "close":
                close = True
            continue
        try:
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        except UnicodeEncodeError:
            raise ResponseError(f"header {name!r} is not latin-1") from None
    return HeadParts(b"".join(lines), content_length, close, int(status[:3]))


def cl_line(n: int) -> bytes:
    return _CL_LINES[n] if n < 4096 else b"content-length: %d\r\n" % n


def build_head(parts: HeadParts, framing: bytes, extra: bytes, close: bool,
               keep: bytes = END_KEEP) -> bytes:
    """The one place a head is put together. `framing`: the Content-Length or
    Transfer-Encoding line (or nothing); `extra`: the server's date and name lines;
    `keep`: how a kept-alive head ends (HTTP/1.0 says so: RFC 9112 §9.3)."""
    return b"".join((parts.prefix, framing, extra, END_CLOSE if close else keep))


CONTINUE_HEAD = build_head(encode_head("100 Continue", []), b"", b"", False)
_ERROR_PARTS = {status: encode_head(f"{status} {reason}", [("content-type", "text/plain")])
                for status, reason in REASONS.items()}


def error_response(status: int, detail: str, extra: bytes, head_only: bool) -> bytes:
    """A whole error response: a short text body, and the connection closes after it."""
    parts = _ERROR_PARTS.get(status) or encode_head(f"{status} Error",
                                                    [("content-type", "text/plain")])
    body = f"{status} {REASONS.get(status, 'Error')}: {detail}\n".encode("latin-1", "replace")
    head = build_head(parts, cl_line(len(body)), extra, True)
    return head if head_only else head + body


class Framing:
    """Framing state of one response whose body is not one known chunk: streamed,
    written piece by piece, or sent from a file."""

    __slots__ = ("parts", "head_sent", "content_length", "chunked", "sent", "close",
                 "head_only", "version")

    def __init__(self, parts: HeadParts, version: str, head_only: bool, close: bool) -> None:
        self.parts = parts
        self.head_sent = False
        self.content_length = -1
        self.chunked = False
        self.sent = 0
        self.close = close or parts.close
        self.head_only = head_only or parts.bodyless
        self.version = version

    def head(self, body_length: int, extra: bytes) -> bytes:
        """The head bytes; decides the framing. `body_length`: the body's size when
        the whole body is known now, else -1."""
        parts = self.parts
        if parts.content_length >= 0:
            self.content_length = parts.content_length
            framing = cl_line(parts.content_length)
        elif parts.bodyless:
            framing = b""
        elif body_length >= 0:
            self.content_length = body_length
            framing = cl_line(body_length)
        elif self.version == "1.1":
            self.chunked = not self.head_only
            framing = CHUNKED
        else:
            self.close = True  # HTTP/1.0 without a length: the close ends the body
            framing = b""
        self.head_sent = True
        return build_head(parts, framing, extra, self.close,
                          END_KEEP_10 if self.version == "1.0" else END_KEEP)

    def frame(self, data: bytes) -> bytes:
        """A body chunk as it goes on the wire; ResponseError past the Content-Length."""
        n = len(data)
        if self.head_only or not n:
            return b""
        self.sent += n
        if self.chunked:
            return b"%x\r\n%b\r\n" % (n, data)
        if self.content_length >= 0 and self.sent > self.content_length:
            raise ResponseError(f"body longer than Content-Length {self.content_length}")
        return data

    def end(self) -> bytes:
        """What ends the body; ResponseError if less than the Content-Length came."""
        if self.chunked:
            return b"0\r\n\r\n"
        if (not self.head_only and self.content_length >= 0
                and self.sent < self.content_length):
            raise ResponseError(f"body shorter than Content-Length {self.content_length} "
                                f"({self.sent} bytes)")
        return b""
