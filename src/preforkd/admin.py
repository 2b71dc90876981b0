"""admin_bind: health, status and metrics on a listener of their own, answered by
the master (at health_path, status_path or /status, metrics_path or /metrics).

Why the master: it is the one process no application code ever runs in, so it
answers while every worker is saturated, stuck in a slow app call, or being
replaced; and it sees the whole server (the scoreboard, which workers are
ready, whether it is stopping), which is what a health check should judge. It
stays small: one request per connection (Connection: close), parsed by the
same sans-I/O HttpConnection the workers use under tight limits, answered from
a few bytes of state, written without blocking; every connection has a
deadline, swept from the master's loop. Nothing here can hold up the master:
reads and writes are non-blocking and bounded, connections are capped.
"""

from __future__ import annotations

import os
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from preforkd import logs
from preforkd.exposition import OPENMETRICS_TYPE, TEXT_TYPE, listen_queues, render
from preforkd.http.connection import NEED_DATA, HttpConnection, HttpError, Limits, Request
from preforkd.http.metrics import wants_openmetrics
from preforkd.http.response import REASONS
from preforkd.http.router import OwnPaths
from preforkd.listeners import Listener, open_listeners
from preforkd.supervise import State

log = logs.log

# (status, content type, body) for a request
Answer = tuple[int, str, bytes]
Page = Callable[[Request], Answer]

LIMITS = Limits(max_request_line_bytes=2048, max_header_bytes=8192, max_header_count=64,
                max_body_bytes=0, body_buffer_bytes=0)
DEADLINE = 5.0  # for the whole exchange: a scraper sends its request at once
MAX_CONNECTIONS = 64


class AdminServer:
    """Made when the master binds (as early as its other listeners: a bind error is a
    start-up error); serving once `attach`ed to the master's loop."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.sock = listener.sock
        self.selector: Any = None
        self.pages: dict[bytes, Page] = {}
        self.conns: set[_AdminConn] = set()

    def attach(self, master: Any) -> None:
        config = master.config

        def healthy() -> bool:
            return not master.stopping and any(w.state is State.READY
                                               for w in master.workers.values())

        own = OwnPaths(master.scoreboard, lambda: False)

        def metrics(req: Request) -> Answer:
            openmetrics = wants_openmetrics(req.headers)
            body = render(master.scoreboard.meters(), master.scoreboard.master(),
                          listen_queues(master.listeners), openmetrics)
            return 200, OPENMETRICS_TYPE if openmetrics else TEXT_TYPE, body

        self.pages = pages(config.health_path, healthy, config.status_path,
                           own.status_document,
                           {config.metrics_path or "/metrics": metrics})
        self.selector = master.selector
        self.sock.setblocking(False)
        self.selector.register(self.sock.fileno(), selectors.EVENT_READ, self._accept)

    def _accept(self) -> None:
        for _ in range(16):
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if len(self.conns) >= MAX_CONNECTIONS:
                conn.close()  # (a flood must not grow the master)
                continue
            self.conns.add(_AdminConn(self, conn))

    def answer(self, req: Request) -> Answer:
        page = self.pages.get(req.target.split(b"?", 1)[0])
        if req.method not in (b"GET", b"HEAD"):
            return 405, "text/plain", b"405 Method Not Allowed\n"
        if page is None:
            return 404, "text/plain", b"404 Not Found\n"
        return page(req)

    def sweep(self, now: float) -> float:
        """Close what ran past its deadline; the next deadline (inf: none)."""
        for conn in [c for c in self.conns if c.deadline <= now]:
            conn.close()
        return min((c.deadline for c in self.conns), default=float("inf"))

    def close(self, unlink: bool = False) -> None:
        """At exit (`unlink`: remove a unix socket's path), and in a forked child,
        which must not hold the socket."""
        for conn in list(self.conns):
            conn.close()
        try:
            if self.selector is not None:
                self.selector.unregister(self.sock.fileno())
        except (KeyError, ValueError, RuntimeError):
            pass  # (a child's selector is already closed)
        self.listener.close(unlink=unlink)


class _AdminConn:
    __slots__ = ("server", "sock", "http", "out", "deadline")

    def __init__(self, server: AdminServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.http = HttpConnection(LIMITS)
        self.out = b""
        self.deadline = time.monotonic() + DEADLINE
        sock.setblocking(False)
        server.selector.register(sock.fileno(), selectors.EVENT_READ, self._readable)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(8192)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.http.receive_data(data)
        else:
            self.http.receive_eof()
        event = self.http.next_event()
        if event is NEED_DATA:
            if not data:
                self.close()
            return
        if isinstance(event, Request):
            status, ctype, body = self.server.answer(event)
            head_only = event.method == b"HEAD"
        elif isinstance(event, HttpError):
            status, ctype, body = event.status, "text/plain", f"{event.detail}\n".encode()
            head_only = False
        else:
            return  # (100-continue: no body is accepted anyway)
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\ncontent-type: {ctype}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        self.out = head if head_only else head + body
        self.server.selector.modify(self.sock.fileno(), selectors.EVENT_WRITE, self._writable)
        self._writable()

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        if not self.out:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.close()

    def close(self) -> None:
        if self in self.server.conns:
            self.server.conns.discard(self)
            try:
                self.server.selector.unregister(self.sock.fileno())
            except (KeyError, ValueError, RuntimeError):
                pass
            self.sock.close()


def bind(spec: str, unix_mode: int, upgraded: bool) -> AdminServer | None:
    """Bind admin_bind (ListenError: refused, as any bind). A new master during an
    upgrade takes over a unix path the old one still holds; TCP binds use
    SO_REUSEPORT, so that both masters hold the port meanwhile."""
    if not spec:
        return None
    if upgraded and spec.startswith("unix:"):
        try:
            os.unlink(spec[5:])
        except OSError:
            pass
    (listener,) = open_listeners((spec,), 64, unix_mode,
                                 reuseport=not spec.startswith(("unix:", "fd://")))
    return AdminServer(listener)


def pages(health_path: str, health: Callable[[], bool], status_path: str,
          status: Callable[[], bytes], extra: dict[str, Page] | None = None
          ) -> dict[bytes, Page]:
    """The admin listener's pages: health (200 "ok" / 503 "unavailable") and status
    (JSON) at the configured paths, or /healthz and /status where those are unset."""
    def health_page(req: Request) -> Answer:
        if health():
            return 200, "text/plain", b"ok\n"
        return 503, "text/plain", b"unavailable\n"

    out: dict[bytes, Page] = {
        (health_path or "/healthz").encode(): health_page,
        (status_path or "/status").encode(): lambda req: (200, "application/json", status()),
    }
    for path, page in (extra or {}).items():
        out[path.encode()] = page
    return out
