"""Inline WSGI (PEP 3333): the app runs in the loop, between reads.

WsgiResponder holds what one worker's connections share (the app, the
environ layers, the last head the app gave); a WsgiExchange per connection
calls the app and turns what it returns into a response plan for the driver
(see http/responder.py): a list of one chunk -> send_whole (the hot path), a
FileWrapper over a regular file -> send_file, anything else -> send_stream,
pulled under backpressure. start_response validates the head (a bad status or
header is a 500, never injected); exc_info follows PEP 3333: replace the head
if none went out yet, else re-raise so the connection is aborted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from preforkd import logs
from preforkd.http.connection import Request
from preforkd.http.environ import EnvironBuilder, FileWrapper
from preforkd.http.response import HeadParts, ResponseError, encode_head
from preforkd.loader import LoadError, import_target

log = logs.log

DEFAULT_APP = "preforkd.examples.welcome:app"
HEAD_CACHE = 4096


class AppError(ResponseError):
    """The application broke PEP 3333 (bad status or header, wrong length, ...)."""


def load_app(spec: str) -> Callable[..., Any]:
    app = import_target(spec or DEFAULT_APP)
    if not callable(app):
        raise LoadError(f"cannot load {spec}: not callable")
    return app


def close_iterable(result: Iterable[bytes] | None) -> None:
    """PEP 3333: the server calls the iterable's close(); what it raises is logged."""
    close = getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            log.exception("event=app-close-error")


class WsgiResponder:
    """Per worker: the app, its environ layers, and a cache of validated heads."""

    def __init__(self, app: Callable[..., Any], environ: EnvironBuilder) -> None:
        self.app = app
        self.environ = environ
        self.targets = environ.targets
        self.fill = environ.fill  # (bound once: per request)
        self.methods, self.method = environ.methods, environ.method
        # The last (status, headers) the app gave and their encoding: apps answer
        # the same way again and again, so most requests skip validation.
        self.last_status: Any = None
        self.last_headers: Any = None
        self.last_parts: Any = None
        self._heads: dict[tuple, HeadParts] = {}

    def exchange(self, driver: Any) -> WsgiExchange:
        return WsgiExchange(self, driver)

    def head_for(self, status: str, headers: list) -> HeadParts:
        """The encoded head of what the app gave, remembered as the last one."""
        try:
            key: Any = (status, tuple(headers))
            parts = self._heads.get(key)
        except TypeError:  # unhashable pieces: validate without the cache
            key, parts = None, None
        if parts is None:
            parts = encode_head(status, headers)
            if key is not None:
                if len(self._heads) >= HEAD_CACHE:
                    self._heads.clear()
                self._heads[key] = parts
        self.last_status, self.last_parts = status, parts
        self.last_headers = list(headers)  # a copy: apps may reuse the list
        return parts


class WsgiExchange:
    __slots__ = ("wsgi", "driver", "status", "headers", "result", "env_headers",
                 "env_template", "start_response_cb", "write_cb", "trusted")

    def __init__(self, wsgi: WsgiResponder, driver: Any) -> None:
        self.wsgi = wsgi
        self.driver = driver
        self.status: str | None = None  # from start_response
        self.headers: Any = None
        self.result: Any = None  # what the app returned, until it is close()d
        self.env_headers: Any = None  # the header fields env_template was built for
        self.env_template: Any = None
        self.start_response_cb = self.start_response  # bound once, not per request
        self.write_cb: Any = None  # bound once a connection proves busy (like env_template)
        self.trusted: bool | None = None  # may the peer forward? (asked at the first request)

    def respond(self, req: Request) -> None:
        """Call the app and hand its answer to the driver. The common case (a list of
        one chunk) goes straight to send_whole: this is the hot path of the server."""
        wsgi = self.wsgi
        driver = self.driver
        line = wsgi.targets.get(req.target) or wsgi.environ.target(req.target)
        self.status = None
        if req.headers is self.env_headers:  # (equal lists arrive as one: connection.py)
            # (environ.fill, inline: on the busiest path a call costs as much as this)
            env = self.env_template.copy()
            env.update(line)
            env["REQUEST_METHOD"] = wsgi.methods.get(req.method) or wsgi.method(req.method)
            if not req.plain:
                wsgi.environ.fill_framing(env, req)
        elif driver.served > 2:
            # Cached only once a connection proves busy: a freed template leaves
            # a hole in the heap, and idle connections would keep RSS at the peak.
            template = self.connection_environ(req.headers)
            self.env_headers, self.env_template = req.headers, template
            env = wsgi.fill(template.copy(), line, req)
        else:
            env = wsgi.fill(self.connection_environ(req.headers), line, req)
        try:
            result = self.result = wsgi.app(env, self.start_response_cb)
            status = self.status
            # (driver.framing is set once write() sent a head: then no whole response)
            if (type(result) is list and len(result) == 1 and status is not None
                    and driver.framing is None):
                headers = self.headers
                if status is wsgi.last_status and headers == wsgi.last_headers:
                    parts = wsgi.last_parts  # the app answered as last time (usual)
                else:
                    parts = wsgi.head_for(status, headers)
                self.result = None  # a list has nothing to close
                driver.send_whole(parts, result[0])
                return
            if type(result) is FileWrapper and driver.framing is None:
                span = result.sendfile_span()
                if span is not None:
                    driver.send_file(self.parts(), *span, self.close_result)
                    return
            driver.send_stream(iter(result), self.parts, self.close_result)
        except Exception as e:
            self.close_result()
            driver.fail(e)

    def connection_environ(self, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        """What stays the same for every request on this connection while its client
        sends these header fields."""
        transport = self.driver.transport
        environ = self.wsgi.environ
        peer = transport.get_extra_info("peername")
        trusted = self.trusted
        if trusted is None:  # once per connection: its peer does not change
            trusted = self.trusted = environ.trusts(peer)
        return environ.with_headers(environ.listener(transport.get_extra_info("listener")),
                                    headers, peer, trusted)

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> Any:
        if exc_info is not None:
            try:
                framing = self.driver.framing
                if framing is not None and framing.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no cycle through the frame
        elif self.status is not None:
            raise AppError("start_response called a second time without exc_info")
        self.status = status
        self.headers = headers
        write = self.write_cb
        if write is None:
            write = self.write
            if self.driver.served > 2:
                self.write_cb = write
        return write

    def parts(self) -> HeadParts:
        """The head start_response gave, validated."""
        if self.status is None:
            raise AppError("the app returned without calling start_response")
        return self.wsgi.head_for(self.status, self.headers)

    def write(self, data: bytes) -> None:
        """PEP 3333's write(): the head goes first, then the data, unbuffered."""
        self.driver.write_body(self.parts, data)

    def close_result(self) -> None:
        result, self.result = self.result, None
        close_iterable(result)

    def trim(self) -> None:
        """Idle for a while: give back what the next request can rebuild."""
        self.env_headers = self.env_template = self.write_cb = None

    def close(self) -> None:
        self.close_result()  # the client left mid-response: the app still gets close()
        self.start_response_cb = self.write_cb = self.driver = None  # no cycles left
