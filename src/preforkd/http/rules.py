"""The request rules llhttp leaves to us (RFC 9112, RFC 9110), on bytes in hand.

llhttp in strict mode refuses bad bytes, bare CR and LF, obs-fold, bad
Content-Length values and CL+TE. What it lets through is checked here:
the Host field, the request target's form, the transfer coding, the version,
and the methods llhttp does not know. Each function raises HttpError with
the status the rule asks for; tests/rfc_table.py lists every rule, its
section and the test that shows it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from preforkd.http.request import HttpError, Request

HOST = b"host"
OWS = b" \t"
# Fields that may come once only (RFC 9110 §5.3; Content-Length: llhttp's own rule).
SINGLETONS = (HOST, b"content-type")

# RFC 9110 §4.2 / RFC 3986 §3.2.2: uri-host [":" port]. A reg-name has no "@" (so no
# userinfo) and no whitespace; IP literals are checked by ipaddress.
_REG_NAME = rb"(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*"
_AUTHORITY = re.compile(rb"(?:\[([0-9A-Fa-f:.]+)\]|(" + _REG_NAME + rb"))(?::([0-9]*))?")
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.S)
TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def valid_authority(value: bytes, empty_ok: bool = True) -> bool:
    """uri-host [":" port], the form of a Host value and of an absolute target's
    authority (RFC 9110 §7.2, RFC 3986 §3.2.2)."""
    m = _AUTHORITY.fullmatch(value)
    if m is None:
        return False
    literal, name, port = m.groups()
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal.decode("ascii"))
        except ValueError:
            return False
    elif not name and not empty_ok:
        return False
    return not port or int(port) <= 65535


def check_size(req: Request, max_count: int, max_bytes: int) -> None:
    if len(req.headers) > max_count:
        raise HttpError(431, "too many header fields")
    if len(req.target) + sum(len(n) + len(v) + 4 for n, v in req.headers) > max_bytes:
        raise HttpError(431, "header section too large")


def check_fields(req: Request, parser: Any) -> bool:
    """Host: exactly one, valid, no userinfo (RFC 9112 §3.2, RFC 9110 §7.2), required
    from HTTP/1.1 on; no singleton field twice. True when the section had a Host
    (a later request with the same fields needs no second look)."""
    seen = [n.lower() for n, _ in req.headers]
    for name in SINGLETONS:
        if seen.count(name) > 1:
            raise HttpError(400, f"two {name.decode().title()} fields")
    if HOST in seen:
        if not valid_authority(req.headers[seen.index(HOST)][1].rstrip(OWS)):
            raise HttpError(400, "invalid Host field")
        return True
    if served_version(parser.get_http_version()) != "1.0":
        raise HttpError(400, "no Host field")
    return False


def served_version(version: str) -> str:
    """The version a request is served as (RFC 9110 §2.5, §6.2)."""
    if version == "1.1" or version == "1.0":
        return version
    if version[0] == "1":
        return "1.1"  # a higher minor version: the highest one we implement
    if version == "0.9":
        raise HttpError(400, "no HTTP version in the request line")
    raise HttpError(505, f"HTTP/{version} is not supported")


def check_coding(req: Request, value: bytes) -> None:
    """Transfer-Encoding: only `chunked`, once (RFC 9112 §6.1, §7). A list, an empty
    element or a second field is refused rather than interpreted: two parsers that
    read such framing differently are a request-smuggling hole."""
    if req.chunked:
        raise HttpError(400, "Transfer-Encoding twice")
    coding = value.lower()
    if coding != b"chunked":
        elements = [e.strip(OWS) for e in coding.split(b",")]
        if all(TOKEN.fullmatch(e) for e in elements) and elements[-1] == b"chunked":
            raise HttpError(501, "transfer coding not implemented")
        raise HttpError(400, "invalid Transfer-Encoding")
    req.chunked = True


def connect_refused() -> HttpError:
    """An origin server that does not tunnel refuses CONNECT (RFC 9110 §9.3.6)."""
    return HttpError(501, "CONNECT is not served (no tunnels)")


def check_target(req: Request) -> None:
    """The request target's form (RFC 9112 §3.2.1-4, RFC 9110 §4.2.1), for a target
    that is not the usual one (origin-form without a fragment)."""
    target = req.target
    if target[0] == 47:  # origin-form
        if 35 in target:
            raise HttpError(400, "fragment in the request target")
    elif target == b"*":
        if req.method != b"OPTIONS":
            raise HttpError(400, "asterisk-form is only for OPTIONS")
    elif req.method == b"CONNECT":
        raise connect_refused()
    else:
        _absolute_form(req)


def _absolute_form(req: Request) -> None:
    """An absolute-form target: its authority is the request's host, whatever the
    Host field says (RFC 9112 §3.2.2); an http(s) URI needs a host (RFC 9110 §4.2)."""
    m = _ABSOLUTE.fullmatch(req.target)
    if m is None:
        raise HttpError(400, "invalid request target")
    scheme, authority, rest = m.groups()
    if scheme.lower() not in (b"http", b"https"):
        raise HttpError(400, "request target is not an http(s) URI")
    if not valid_authority(authority, empty_ok=False):
        raise HttpError(400, "invalid authority in the request target")
    if 35 in rest or (rest and rest[0] != 47 and rest[0] != 63):
        raise HttpError(400, "invalid request target")
    req.headers = [(n, authority if n.lower() == HOST else v) for n, v in req.headers]


# -- where things are in a read ----------------------------------------------------
# llhttp reports no byte offsets. When preforkd must take over in the middle of a
# read (a chunked body, a method llhttp does not know), the offset is found from what
# is known: heads end at the first CRLFCRLF (llhttp refuses bare LF and obs-fold),
# bodies it framed have a Content-Length, and a request began in an earlier read
# left its state and the last bytes of that read (`tail`).

def _skip_empty_lines(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos] in b"\r\n":  # (allowed between requests)
        pos += 1
    return pos


def _head_end(data: bytes, pos: int, tail: bytes = b"") -> int:
    i = (tail + data).find(b"\r\n\r\n", pos)
    if i < 0:
        raise HttpError(400, "request framing not found")  # (cannot happen: llhttp framed it)
    return i + 4 - len(tail)


def after_completed(data: bytes, start: tuple | None, done: list,
                    tail: bytes) -> tuple[int, bool]:
    """The position just past the requests completed in this read, and whether the
    current request's head also ended before it (it began in an earlier read).
    `start` is (request, in its head, body bytes so far) for a request begun in an
    earlier read; `done` the events this read added."""
    pos = 0
    reqs = [e for e in done if type(e) is Request]
    if start is not None:
        first, in_head, size = start
        if in_head:
            pos = _head_end(data, 0, tail)
            if not reqs or reqs[0] is not first:
                return pos, True  # the current request's own head
            pos += max(first.content_length, 0)
        else:
            pos = first.content_length - size
        reqs = reqs[1:]
    for req in reqs:
        pos = _head_end(data, _skip_empty_lines(data, pos)) + max(req.content_length, 0)
    return pos, False


def body_start(data: bytes, start: tuple | None, done: list, tail: bytes) -> int:
    """Where the body of the request whose head just ended begins in `data`."""
    pos, head_passed = after_completed(data, start, done, tail)
    return pos if head_passed else _head_end(data, _skip_empty_lines(data, pos))


def method_start(data: bytes, start: tuple | None, done: list, tail: bytes) -> int:
    """Where, in `data`, the request whose method llhttp refused begins."""
    pos, head_passed = after_completed(data, start, done, tail)
    if head_passed:
        raise HttpError(400, "invalid method")  # (cannot happen: a method comes first)
    return _skip_empty_lines(data, pos)


TCHARS = frozenset(b"!#$%&'*+.^_`|~0123456789"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-")


class MethodRun:
    """A method llhttp does not know: methods are an open set (RFC 9110 §9.1), so a
    token followed by SP is 501 Not Implemented, anything else 400. The token may
    go on in later reads: this follows it (keeping nothing) until it ends.

    One split still shows: llhttp may have taken the token's first bytes, in an
    earlier read, as the start of a method it knows (no callback reports them), and
    the run then starts at the byte it refused: `GE` then ` / HTTP/1.1` is 400
    where the whole line is 501. Both refuse the request and close; which requests
    are served never depends on the split (the fuzz properties check both)."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = False

    def feed(self, data: bytes, pos: int = 0) -> int:
        end = len(data)
        while pos < end and data[pos] in TCHARS:
            pos += 1
            self.seen = True
        if pos == end:
            return -1
        if data[pos] == 32 and self.seen:
            raise HttpError(501, "method not implemented")
        raise HttpError(400, "invalid method")
