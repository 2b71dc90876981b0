"""PEP 3333 environ: what an app sees of a request.

An environ is built in three layers, each reused as long as it can be:
- per listener: the server's name, port and scheme, and the fixed wsgi.* keys;
- per connection, while its client repeats the same header fields (most do):
  the client's address and the HTTP_* keys, and what a trusted peer's
  forwarding fields change (http/forwarded.py; the trust decision itself is
  made once per connection, and only a trusted connection looks for them);
- per request target (cached: the same targets keep coming): PATH_INFO,
  QUERY_STRING, RAW_URI.
A request then costs one dict copy and a few stores. The caches are owned by
the worker's EnvironBuilder, so they live and die with it.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from typing import Any
from urllib.parse import unquote_to_bytes

from preforkd.http.connection import Request
from preforkd.http.forwarded import Trust, peer_text, resolve

TARGET_CACHE = 256  # request targets remembered with their environ keys
TARGET_CACHED_LEN = 512  # longer targets are rare and not remembered
NAME_CACHE = 1000  # clients choose header names: the cache is bounded
SKIP = "-"  # header names that never become environ keys


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


def base_environ(server_name: str, server_port: str, scheme: str,
                 extra: dict[str, Any]) -> dict[str, Any]:
    """What stays the same for every request on one listener (with_headers adds the
    client's address). It holds the values of a usual request (HTTP/1.1, no body):
    fill() overrides them only for the others. The per-request keys are there too,
    so that filling them in a copy never grows (and rehashes) the dict."""
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
        "preforkd.peer": "",
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


def target_environ(target: bytes) -> dict[str, str]:
    """PATH_INFO, QUERY_STRING and RAW_URI for a request target."""
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


class EnvironBuilder:
    """One worker's environ layers and the caches behind them."""

    def __init__(self, extra: dict[str, Any], scheme: str = "http", trust: Trust | None = None,
                 forwarded_host: bool = False) -> None:
        self.extra = extra  # keys every environ gets (preforkd.worker, ...)
        self.scheme = scheme
        self.trust = trust if trust is not None else Trust(())  # forwarded_allow_ips
        self.forwarded_host = forwarded_host
        self.forwarding = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_FORWARDED")
        if forwarded_host:
            self.forwarding += ("HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT")
        self.targets: dict[bytes, dict[str, str]] = {}  # read directly on the hot path
        self._names: dict[bytes, str] = {}
        self.methods: dict[bytes, str] = {}  # read directly on the hot path
        self._listeners: dict[Any, dict[str, Any]] = {}

    def target(self, target: bytes) -> dict[str, str]:
        """target_environ(), remembered (callers look in `targets` first)."""
        line = target_environ(target)
        if len(target) <= TARGET_CACHED_LEN:
            targets = self.targets
            if len(targets) >= TARGET_CACHE:
                targets.clear()
            targets[target] = line
        return line

    def listener(self, listener: Any) -> dict[str, Any]:
        """The environ keys shared by every connection of one listener."""
        env = self._listeners.get(listener)
        if env is None:
            name, port = listener.address if listener is not None else ("localhost", "80")
            env = self._listeners[listener] = base_environ(name, port, self.scheme, self.extra)
        return env

    def env_name(self, name: bytes) -> str:
        """The environ key for a header name (cached); SKIP for Content-Length (set from
        what was received) and for names with "_", which would collide with their "-"
        twins after translation and let a client spoof a header."""
        key = self._names.get(name)
        if key is None:
            if b"_" in name:
                key = SKIP
            else:
                key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
                if key == "HTTP_CONTENT_TYPE":
                    key = "CONTENT_TYPE"
                elif key == "HTTP_CONTENT_LENGTH":
                    key = SKIP
            if len(self._names) < NAME_CACHE:
                self._names[name] = key
        return key

    def trusts(self, peer: Any) -> bool:
        """Whether this peer's forwarding fields are applied (asked once per connection)."""
        return self.trust.peer(peer)

    def with_headers(self, base: dict[str, Any], headers: list[tuple[bytes, bytes]],
                     remote: Any = None, trusted: bool = False) -> dict[str, Any]:
        """`base` plus the client's address and the HTTP_* keys (and CONTENT_TYPE) for
        these request headers, and when the peer `remote` is `trusted`, what its
        forwarding fields change. The result depends on nothing else, so a connection
        can reuse it while its client repeats the same header fields."""
        env = base.copy()
        if isinstance(remote, tuple):
            env["REMOTE_ADDR"] = remote[0]
            env["REMOTE_PORT"] = str(remote[1])
        if remote is not None:
            env["preforkd.peer"] = peer_text(remote)
        names = self._names
        for name, value in headers:
            key = names.get(name) or self.env_name(name)
            if key is SKIP:
                continue
            text = value.rstrip(b" \t").decode("latin-1")  # (trailing OWS: RFC 9110 §5.5)
            if key in env:
                env[key] += ("; " if key == "HTTP_COOKIE" else ", ") + text
            else:
                env[key] = text
        if trusted:
            for key in self.forwarding:
                if key in env:
                    env.update(resolve(env, self.trust, self.forwarded_host))
                    break
        return env

    def method(self, raw: bytes) -> str:
        """REQUEST_METHOD for `raw` (remembered: `methods` is read on the hot path)."""
        method = raw.decode("ascii")
        if len(self.methods) < 64:
            self.methods[raw] = method
        return method

    def fill(self, env: dict[str, Any], line: dict[str, str], req: Request) -> dict[str, Any]:
        """The environ for one request, made from `env`: with_headers() for its header
        fields (a copy, unless made for this request alone), and `line`, target() for
        its target. (WsgiExchange.respond has this inline for its busiest case.)"""
        env.update(line)
        env["REQUEST_METHOD"] = self.methods.get(req.method) or self.method(req.method)
        if not req.plain:
            self.fill_framing(env, req)
        return env

    def fill_framing(self, env: dict[str, Any], req: Request) -> None:
        """The keys a request that is not plain (see Request.plain) may change."""
        if req.version != "1.1":
            env["SERVER_PROTOCOL"] = "HTTP/" + req.version
        if req.content_length >= 0 or req.chunked:
            env["CONTENT_LENGTH"] = str(req.body_size)
            env["wsgi.input"] = req.body_file()
