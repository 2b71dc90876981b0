"""PEP 3333: the environ, start_response, and turning what the app returns into bytes.

Framing rules: the app's own Content-Length when it gives one (a body that
disagrees with it is an app error: logged, connection closed, never a wrong
frame); a body of one known-length chunk gets a Content-Length; otherwise
chunked on HTTP/1.1 and close-delimited on HTTP/1.0. Status lines and headers
from the app are validated: CR, LF, NUL or non-latin-1 give a 500, never
bytes injected into the stream.
"""

from __future__ import annotations

import io
import os
import re
import stat
import sys
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from preforkd.http.connection import Request

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS = re.compile(r"[1-5][0-9][0-9] [^\x00-\x08\x0a-\x1f\x7f]*\Z")
HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade"))

_env_names: dict[bytes, str] = {}


class AppError(Exception):
    """The application broke PEP 3333 (bad status or header, wrong length, ...)."""


class FileWrapper:
    """wsgi.file_wrapper: a file the server may send with os.sendfile."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Any:
        read, size = self.filelike.read, self.blksize
        while True:
            data = read(size)
            if not data:
                return
            yield data

    def sendfile_span(self) -> tuple[int, int, int] | None:
        """(fd, offset, count) when the file is a regular file we can sendfile from."""
        try:
            fd = self.filelike.fileno()
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            offset = self.filelike.tell() if hasattr(self.filelike, "tell") else 0
        except (AttributeError, OSError, io.UnsupportedOperation):
            return None
        return fd, offset, max(0, st.st_size - offset)


_SKIP = "-"  # header names that never become environ keys


def env_name(name: bytes) -> str:
    """The environ key for a header name (cached); _SKIP for Content-Length (set from
    what was received) and for names with "_", which would collide with their "-"
    twins after translation and let a client spoof a header."""
    key = _env_names.get(name)
    if key is None:
        if b"_" in name:
            key = _SKIP
        else:
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            if key == "HTTP_CONTENT_TYPE":
                key = "CONTENT_TYPE"
            elif key == "HTTP_CONTENT_LENGTH":
                key = _SKIP
        if len(_env_names) < 1000:  # clients choose names: keep the cache bounded
            _env_names[name] = key
    return key


class _EmptyInput:
    """wsgi.input of a request without a body: stateless, so one serves all."""

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Any:
        return iter(())


EMPTY_INPUT = _EmptyInput()
_METHODS: dict[bytes, str] = {}


def base_environ(server_name: str, server_port: str, scheme: str,
                 extra: dict[str, Any]) -> dict[str, Any]:
    """What stays the same for every request on one listener (with_headers adds the
    client's address). It holds the values of a usual request (HTTP/1.1, no body):
    build_environ overrides them only for the others. The per-request keys are
    there too, so that filling them in a copy never grows (and rehashes) the dict."""
    env = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "RAW_URI": "/",
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SCRIPT_NAME": "",
        "REMOTE_ADDR": "",
        "REMOTE_PORT": "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": EMPTY_INPUT,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
        "wsgi.input_terminated": True,
    }
    env.update(extra)
    return env


def with_headers(base: dict[str, Any], headers: list[tuple[bytes, bytes]],
                 remote: Any = None) -> dict[str, Any]:
    """`base` plus the client's address and the HTTP_* keys (and CONTENT_TYPE) for
    these request headers.

    The result depends on nothing else, so a connection can reuse it for as long as
    its client repeats the same header fields (most do)."""
    env = base.copy()
    if isinstance(remote, tuple):
        env["REMOTE_ADDR"] = remote[0]
        env["REMOTE_PORT"] = str(remote[1])
    names = _env_names
    for name, value in headers:
        key = names.get(name) or env_name(name)
        if key is _SKIP:
            continue
        if key in env:
            env[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value.decode("latin-1")
        else:
            env[key] = value.decode("latin-1")
    return env


def target_environ(target: bytes) -> dict[str, str]:
    """PATH_INFO, QUERY_STRING and RAW_URI for a request target (callers cache it:
    the same targets come again and again)."""
    raw = target.decode("latin-1")
    # Byte tests by int (63 is "?", 37 "%", 47 "/"): `37 in b` is a memchr, while
    # `b"%" in b` and .find() cost several times more.
    if 63 in target:
        path, _, query_b = target.partition(b"?")
        query = query_b.decode("latin-1")
    else:
        path, query = target, ""
    if not path or path[0] != 47:
        if path == b"*":
            path = b""
        else:  # absolute-form: http://host/path
            slash = path.find(b"/", path.find(b"//") + 2)
            path = path[slash:] if slash >= 0 else b"/"
    if 37 in path:
        path_info = unquote_to_bytes(path).decode("latin-1")
    elif path is target:
        path_info = raw
    else:
        path_info = path.decode("latin-1")
    return {"PATH_INFO": path_info, "QUERY_STRING": query, "RAW_URI": raw}


def build_environ(template: dict[str, Any], line: dict[str, str], req: Request) -> dict[str, Any]:
    """The environ for one request: `template` is with_headers() for its header fields,
    `line` target_environ() for its target."""
    return fill_environ(template.copy(), line, req)


def fill_environ(env: dict[str, Any], line: dict[str, str], req: Request) -> dict[str, Any]:
    """build_environ() in place, for a template made for this request alone."""
    env.update(line)
    method = _METHODS.get(req.method)
    if method is None:
        method = req.method.decode("ascii")
        if len(_METHODS) < 64:
            _METHODS[req.method] = method
    env["REQUEST_METHOD"] = method
    if not req.plain:
        if req.version != "1.1":
            env["SERVER_PROTOCOL"] = "HTTP/" + req.version
        if req.content_length >= 0 or req.chunked:
            env["CONTENT_LENGTH"] = str(req.body_size)
            env["wsgi.input"] = req.body_file()
    return env


class HeadParts:
    """What start_response got, validated and encoded (read on every request: slots)."""

    __slots__ = ("prefix", "content_length", "close", "bodyless")

    def __init__(self, prefix: bytes, content_length: int, close: bool, bodyless: bool) -> None:
        self.prefix = prefix  # status line and the app's headers
        self.content_length = content_length  # the app's Content-Length, or -1
        self.close = close  # the app sent Connection: close
        self.bodyless = bodyless  # 1xx, 204, 304


_head_cache: dict[tuple, HeadParts] = {}


def head_parts(status: Any, headers: Any) -> HeadParts:
    """Validate and encode what start_response got; cached, since apps repeat themselves."""
    try:
        key = (status, tuple(headers))
        parts = _head_cache.get(key)
    except TypeError:  # unhashable pieces: validate without the cache
        key, parts = None, None
    if parts is None:
        parts = _encode_head(status, headers)
        if key is not None:
            if len(_head_cache) >= 4096:
                _head_cache.clear()
            _head_cache[key] = parts
    return parts


def _encode_head(status: Any, headers: Any) -> HeadParts:
    if type(status) is not str or not _STATUS.match(status):
        raise AppError(f"invalid status {status!r}")
    if type(headers) is not list:
        raise AppError(f"headers must be a list, got {type(headers).__name__}")
    try:
        lines = [f"HTTP/1.1 {status}\r\n".encode("latin-1")]
    except UnicodeEncodeError:
        raise AppError(f"status {status!r} is not latin-1") from None
    content_length = -1
    close = False
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise AppError(f"header {item!r}: expected a (name, value) tuple")
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise AppError(f"header {name!r}: names and values must be str")
        if not _TOKEN.match(name) or _BAD_VALUE.search(value):
            raise AppError(f"invalid header {name!r}: {value!r}")
        lname = name.lower()
        if lname == "content-length":
            if not value.isdigit() or content_length >= 0:
                raise AppError(f"invalid or repeated Content-Length {value!r}")
            content_length = int(value)
            continue  # written once, after the framing decision
        if lname in HOP_BY_HOP:
            if lname == "connection" and value.lower() == "close":
                close = True
            continue  # hop-by-hop headers are the server's business (PEP 3333)
        try:
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        except UnicodeEncodeError:
            raise AppError(f"header {name!r} is not latin-1") from None
    code = int(status[:3])
    return HeadParts(b"".join(lines), content_length, close, code < 200 or code in (204, 304))


_CL_LINES = [b"content-length: %d\r\n" % n for n in range(4096)]
END_CLOSE = b"connection: close\r\n\r\n"
END_KEEP = b"\r\n"


def cl_line(n: int) -> bytes:
    return _CL_LINES[n] if n < 4096 else b"content-length: %d\r\n" % n


class Response:
    """Framing state of one response whose body is not a single known chunk."""

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

    def head(self, body_length: int, extra_head: bytes) -> bytes:
        """The head bytes; decides the framing. `body_length`: the body's size when
        the whole body is known now, else -1."""
        parts = self.parts
        if parts.content_length >= 0:
            self.content_length = parts.content_length
            length = cl_line(parts.content_length)
        elif parts.bodyless:
            length = b""
        elif body_length >= 0:
            self.content_length = body_length
            length = cl_line(body_length)
        elif self.version == "1.1":
            self.chunked = not self.head_only
            length = b"transfer-encoding: chunked\r\n"
        else:
            self.close = True  # HTTP/1.0 without a length: the close ends the body
            length = b""
        self.head_sent = True
        return b"".join((parts.prefix, length, extra_head,
                         END_CLOSE if self.close else END_KEEP))

    def frame(self, data: bytes) -> bytes:
        """A body chunk as it goes on the wire; AppError past the app's Content-Length."""
        n = len(data)
        if self.head_only or not n:
            return b""
        self.sent += n
        if self.chunked:
            return b"%x\r\n%b\r\n" % (n, data)
        if self.content_length >= 0 and self.sent > self.content_length:
            raise AppError(f"body longer than Content-Length {self.content_length}")
        return data

    def end(self) -> bytes:
        """What ends the body; AppError if the app sent less than its Content-Length."""
        if self.chunked:
            return b"0\r\n\r\n"
        if (not self.head_only and self.content_length >= 0
                and self.sent < self.content_length):
            raise AppError(f"body shorter than Content-Length {self.content_length} "
                           f"({self.sent} bytes)")
        return b""


def close_iterable(result: Iterable[bytes] | None) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()
