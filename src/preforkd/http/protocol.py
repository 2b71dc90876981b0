"""HTTP/1.1 protocol: the one place where bytes from the socket meet the WSGI app.

Theory of operation
-------------------
Each connection has an HttpConnection (sans-I/O parser) and runs its events
in order: a Request runs the app synchronously and writes the response; the
next pipelined request waits until that response is fully handed to the
transport. A streamed body is pulled from the app only while the transport
accepts more (pause_writing stops the pull, resume_writing continues it), so
a slow reader never makes the worker buffer a whole large response.

Timers cost nothing per request: each connection keeps one `deadline`
(a float) and its `phase`; HttpServer sweeps all connections once a second
and acts on the expired ones (408 for a slow header or body, a quiet close
for an idle keep-alive, abort for a client that stopped reading).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from preforkd import __version__, logs
from preforkd.config import Config
from preforkd.http.connection import CONTINUE, HttpConnection, Limits, Request
from preforkd.http.wsgi import (
    END_CLOSE,
    END_KEEP,
    AppError,
    FileWrapper,
    Response,
    base_environ,
    build_environ,
    cl_line,
    close_iterable,
    fill_environ,
    head_parts,
    target_environ,
    with_headers,
)
from preforkd.loader import import_target
from preforkd.protocols.base import Protocol

log = logs.log

SWEEP_INTERVAL = 1.0
TARGET_CACHE = 256  # request targets remembered with their environ keys
TARGET_CACHED_LEN = 512  # longer targets are rare and not remembered
IDLE_TRIM_AFTER = 2.0  # seconds idle before a keep-alive connection gives back its caches

# phases
IDLE, HEADERS, BODY, RESPONDING, CLOSED = range(5)

REASONS = {400: "Bad Request", 404: "Not Found", 408: "Request Timeout",
           413: "Content Too Large", 414: "URI Too Long", 417: "Expectation Failed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable", 505: "HTTP Version Not Supported"}


class HttpServer:
    """Per-worker state shared by all HTTP connections: app, limits, clock, sweep."""

    def __init__(self, config: Config, worker: Any) -> None:
        self.config = config
        self.worker = worker
        self.app = load_app(config.app)
        self.limits = Limits(config.max_request_line_bytes, config.max_header_bytes,
                             config.max_header_count, config.max_body_bytes,
                             config.body_buffer_bytes)
        self.health_path = config.health_path.encode("latin-1")
        self.status_path = config.status_path.encode("latin-1")
        self.own_paths = frozenset(p for p in (self.health_path, self.status_path) if p)
        self.draining = False
        # Read on every request: plain attributes, not config.<key> chains.
        self.keepalive_timeout = config.keepalive_timeout
        self.header_timeout = config.header_timeout
        self.body_timeout = config.body_timeout
        self.write_timeout = config.write_timeout
        self.loop = worker.loop if worker else None
        self.slot = worker.slot if worker else None
        self._listener_environs: dict[Any, dict[str, Any]] = {}
        self.last_status: Any = None  # the last (status, headers) the app gave, encoded
        self.last_headers: Any = None
        self.last_parts: Any = None
        self.last_heads: dict[int, bytes] = {}  # whole heads for last_parts, by body length
        self.targets: dict[bytes, Any] = {}  # target -> its environ keys, or an own path
        self.access = logs.AccessLog.open(config.access_log, config.access_log_format,
                                          worker.index if worker else 0)
        self.access_enabled = self.access.enabled
        self.environ_extra = {
            "preforkd.worker": worker.index if worker else 0,
            "preforkd.generation": worker.generation if worker else 0,
            "preforkd.version": __version__,
        }
        self.extra_head = b""
        self._date = 0
        if worker is not None:
            self._tick()
            worker.loop.call_later(SWEEP_INTERVAL, self._sweep)
            worker.on_reopen.append(self.access.reopen)
            worker.on_exit.append(self.access.close)
            worker.on_drain.append(self._drain)
            worker.count_states = self.count_states
            worker.describe_busy = self.busy_request

    def count_states(self) -> tuple[int, int, int]:
        """(reading, writing, waiting) connections, as nginx's stub_status counts them;
        counted at heartbeat time, so requests pay nothing for it."""
        reading = writing = waiting = 0
        for proto in self.live():
            phase = proto.phase
            if phase == IDLE:
                waiting += 1
            elif phase == RESPONDING:
                writing += 1
            else:
                reading += 1
        return reading, writing, waiting

    def busy_request(self, frame: Any) -> tuple[bytes, bytes] | None:
        """(method, target) of the request that the code running in `frame` serves:
        the nearest caller that is a connection's method, with a request in hand."""
        while frame is not None:
            proto = frame.f_locals.get("self")
            if type(proto) is HttpProtocol and proto.request is not None:
                return proto.request.method, proto.request.target
            frame = frame.f_back
        return None

    def live(self) -> Iterator[HttpProtocol]:
        """The protocols of the worker's open connections (the worker keeps the set:
        one set add and discard per connection, not two)."""
        return (transport.protocol for transport in self.worker.connections)

    def _drain(self) -> None:
        self.draining = True

    def _tick(self) -> None:
        now = int(time.time())
        if now != self._date:
            self._date = now
            date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
            self.extra_head = f"date: {date}\r\nserver: preforkd\r\n".encode()
            self.last_heads = {}

    def _sweep(self) -> None:
        loop = self.loop
        now = loop.now
        self._tick()
        idle_since = now - self.config.keepalive_timeout + IDLE_TRIM_AFTER
        expired = []
        for proto in self.live():
            deadline = proto.deadline
            if deadline and deadline <= now:
                expired.append(proto)
            elif proto.phase == IDLE and proto.env_template is not None and deadline < idle_since:
                proto.trim()
        for proto in expired:
            proto.deadline_passed()
        self.access.flush()
        loop.call_later(SWEEP_INTERVAL, self._sweep)

    def target_info(self, target: bytes) -> Any:
        """The environ keys of a request target, or the path when it is one of the
        server's own paths (bytes); remembered, since the same targets keep coming."""
        path = target.split(b"?", 1)[0]
        info = path if path in self.own_paths else target_environ(target)
        if len(target) <= TARGET_CACHED_LEN:
            targets = self.targets
            if len(targets) >= TARGET_CACHE:
                targets.clear()
            targets[target] = info
        return info

    def head_for(self, status: str, headers: list) -> Any:
        """The encoded head of what the app gave, remembered as the last one."""
        parts = head_parts(status, headers)
        self.last_status, self.last_parts = status, parts
        self.last_headers = list(headers)  # a copy: apps may reuse the list
        self.last_heads = {}
        return parts

    def whole_head(self, parts: Any, length: int, close: bool) -> bytes:
        """Status line, headers, Content-Length, date and the end of the head for a
        body of `length` bytes. Remembered per length for the last parts (a negative
        key for a closing response) until the date changes."""
        head = b"".join((parts.prefix, cl_line(length), self.extra_head,
                         END_CLOSE if close else END_KEEP))
        if parts is self.last_parts:
            heads = self.last_heads
            if len(heads) >= 64:
                heads.clear()
            heads[~length if close else length] = head
        return head

    def listener_environ(self, listener: Any) -> dict[str, Any]:
        """The environ keys shared by every connection of one listener."""
        env = self._listener_environs.get(listener)
        if env is None:
            name, port = listener.address if listener is not None else ("localhost", "80")
            env = self._listener_environs[listener] = base_environ(
                name, port, "http", self.environ_extra)
        return env

    def make_protocol(self) -> HttpProtocol:
        return HttpProtocol(self)

    def status_document(self) -> bytes:
        sb = self.worker.scoreboard
        now = time.monotonic()
        workers = []
        for slot in range(sb.slots):
            info = sb.read(slot)
            if info.pid:
                workers.append({"index": info.index, "pid": info.pid,
                                "generation": info.generation, "requests": info.requests,
                                "accepted": info.accepted, "connections": info.connections,
                                "reading": info.reading, "writing": info.writing,
                                "waiting": info.waiting,
                                "heartbeat_age": round(now - info.heartbeat, 3)})
        return json.dumps({"version": __version__, "workers": workers}).encode()


def load_app(spec: str) -> Callable[..., Any]:
    app = import_target(spec or "preforkd.examples.welcome:app")
    if not callable(app):
        from preforkd.loader import LoadError

        raise LoadError(f"cannot load {spec}: not callable")
    return app


def http_factory(config: Config, worker: Any) -> Callable[[], HttpProtocol]:
    return HttpServer(config, worker).make_protocol


# HttpProtocol turns TCP_NODELAY on itself, once a connection outlives its first
# response: one-shot connections skip the syscall. The worker reads this flag.
HttpServer.make_protocol.nodelay = False  # type: ignore[attr-defined]


class HttpProtocol(Protocol):
    __slots__ = ("server", "transport", "conn", "phase", "deadline", "paused",
                 "response", "result", "body_iter", "request", "started", "status",
                 "headers", "env_headers", "env_template", "served",
                 "start_response_cb")

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.conn = HttpConnection(server.limits)
        self.phase = IDLE
        self.deadline = 0.0
        self.paused = False
        self.response: Response | None = None  # a response that is not one known chunk
        self.result: Any = None  # what the app returned, until it is close()d
        self.body_iter: Iterator[bytes] | None = None
        self.request: Request | None = None
        self.started = 0.0
        self.status: str | None = None  # from start_response
        self.headers: Any = None
        self.env_headers: Any = None  # the header fields env_template was built for
        self.env_template: Any = None
        # Most connections that stop after a request or two never need the caches;
        # only from the third request on are the parser and environ template kept.
        self.served = 0
        self.start_response_cb = self.start_response  # bound once, not per request

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        server = self.server
        self.deadline = server.loop.now + server.header_timeout

    def set_nodelay(self) -> None:
        transport = self.transport
        listener = transport.listener
        if listener is None or listener.family != socket.AF_UNIX:
            try:
                transport.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # (a unix socket without a listener, or the client is gone)

    def connection_environ(self, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        """What stays the same for every request on this connection while its client
        sends these header fields (built on demand)."""
        transport = self.transport
        return with_headers(self.server.listener_environ(transport.listener),
                            headers, transport.get_extra_info("peername"))

    def trim(self) -> None:
        """Idle for a while: give back what the next request can rebuild."""
        self.env_headers = self.env_template = None
        self.conn.release()

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = CLOSED
        self.deadline = 0.0
        if self.result is not None:  # the client left mid-response: the app still gets close()
            self._close_result()
        # Break the cycles (transport <-> protocol, parser <-> connection) so memory goes
        # back at once by reference counting, not at the next garbage collection.
        self.conn.close()
        self.transport = self.start_response_cb = None

    # -- input -------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.receive_data(data)
        if self.phase == RESPONDING:
            if conn.has_events:
                # Pipelined requests while a response streams: stop reading until we
                # get to them, so the queue stays one read long.
                self.transport.pause_reading()
            return
        self._process()

    def eof_received(self) -> bool:
        self.conn.receive_eof()
        if self.phase != RESPONDING:
            self._process()
        return True  # a response in flight still goes out; _settle closes after it

    def _process(self) -> None:
        """Run queued events until one needs more data or a response is in flight.

        Responses go out with write_later: those of one read (pipelining), and of
        every connection served in this loop turn, leave in one send each."""
        events = self.conn.events
        while events and self.phase < RESPONDING:
            event = events.pop(0)
            if type(event) is Request:
                self.handle_request(event)
            elif event is CONTINUE:
                self.transport.write_later(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:
                self.send_error(event.status, event.detail)
        if self.phase < RESPONDING:
            self._settle()

    def _close(self) -> None:
        """Close once what was written is sent (with the turn's other writes)."""
        self.transport.close()
        self.phase = CLOSED

    def _settle(self) -> None:
        """Between requests or inside one: pick the phase and its deadline."""
        conn = self.conn
        if conn.request is None:
            server = self.server
            if conn.eof or server.draining:
                self._close()
                return
            if self.phase != IDLE or not self.deadline:
                self.phase = IDLE
                self.deadline = server.loop.now + server.keepalive_timeout
        elif conn.in_headers:
            if self.phase != HEADERS:
                self.phase = HEADERS  # the whole header section gets header_timeout
                if self.served or not self.deadline:  # (a new connection's runs from accept)
                    self.deadline = self.server.loop.now + self.server.header_timeout
        else:
            self.phase = BODY  # body_timeout runs between reads
            self.deadline = self.server.loop.now + self.server.body_timeout
        if not self.paused and not self.transport.reading:
            self.transport.resume_reading()

    # -- requests ------------------------------------------------------------------
    def handle_request(self, req: Request) -> None:
        """Answer one request. The common case (one body chunk of known length) is
        handled inline: this is the hot path of the whole server."""
        self.phase = RESPONDING
        self.deadline = 0.0
        self.request = req
        server = self.server
        server.slot.requests += 1
        if server.access_enabled:
            self.started = time.monotonic()
        target = req.target
        line = server.targets.get(target) or server.target_info(target)
        if type(line) is bytes:
            self.answer_own_path(req, line)
            return
        self.status = None
        served = self.served = self.served + 1
        if req.headers == self.env_headers:
            env = build_environ(self.env_template, line, req)
        elif served > 2:
            # Cached only once a connection proves busy: a freed template leaves
            # a hole in the heap, and idle connections would keep RSS at the peak.
            template = self.connection_environ(req.headers)
            self.env_headers, self.env_template = req.headers, template
            env = build_environ(template, line, req)
        else:
            env = fill_environ(self.connection_environ(req.headers), line, req)
        try:
            result = self.result = server.app(env, self.start_response_cb)
            status = self.status
            if (type(result) is list and len(result) == 1 and status is not None
                    and self.response is None):
                headers = self.headers
                if status is server.last_status and headers == server.last_headers:
                    parts = server.last_parts  # the app answered as last time (usual)
                else:
                    parts = server.head_for(status, headers)
                if not parts.bodyless:
                    body = result[0]
                    n = len(body)
                    if parts.content_length != n and parts.content_length >= 0:
                        raise AppError(f"body of {n} bytes, Content-Length "
                                       f"{parts.content_length}")
                    self.result = self.request = None  # a list has nothing to close
                    if req.method == b"HEAD":
                        body = b""
                    if server.access_enabled:
                        self._log_access(req, n)
                    if parts.close or server.draining or not req.keep_alive:
                        self.transport.write_later((server.last_heads.get(~n)
                                                    or server.whole_head(parts, n, True)) + body)
                        self._close()
                        return
                    self.transport.write_later((server.last_heads.get(n)
                                                or server.whole_head(parts, n, False)) + body)
                    self.phase = IDLE
                    if served <= 2:
                        # A young connection: it may well go idle now, so keep
                        # nothing (the parser costs ~1 µs to make again).
                        self.conn.release()
                        if served == 1:
                            self.set_nodelay()  # it lives on: small writes go now
                    return
            if type(result) is FileWrapper and self.response is None and self._send_file(result):
                return
            self.body_iter = iter(result)
        except Exception as e:
            self._app_failed(e)
            return
        self._pull_body()

    def answer_own_path(self, req: Request, path: bytes) -> None:
        server = self.server
        if path == server.health_path:
            if server.draining:
                self.send_simple(req, "503 Service Unavailable", b"draining\n")
            else:
                self.send_simple(req, "200 OK", b"ok\n")
        else:
            self.send_simple(req, "200 OK", server.status_document(), "application/json")

    def send_simple(self, req: Request, status: str, body: bytes,
                    content_type: str = "text/plain") -> None:
        """A response whose whole body is known (the server's own answers)."""
        self.status, self.headers = status, [("content-type", content_type)]
        resp = self._response()
        self.transport.write_later(resp.head(len(body), self.server.extra_head)
                                   + resp.frame(body))
        self._finish()

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> Any:
        if exc_info is not None:
            try:
                if self.response is not None and self.response.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no cycle through the frame
            self.response = None
        elif self.status is not None:
            raise AppError("start_response called a second time without exc_info")
        self.status = status
        self.headers = headers
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's write(): the head goes first, then the data, unbuffered."""
        resp = self._response()
        if not resp.head_sent:
            self.transport.write_later(resp.head(-1, self.server.extra_head))
        self.transport.write(resp.frame(data))  # (after the head, in one send)

    def _response(self) -> Response:
        resp = self.response
        if resp is None:
            if self.status is None:
                raise AppError("the app returned without calling start_response")
            req = self.request
            assert req is not None
            resp = self.response = Response(head_parts(self.status, self.headers), req.version,
                                            req.method == b"HEAD",
                                            not req.keep_alive or self.server.draining)
        return resp

    def _pull_body(self) -> None:
        """Write body chunks until the iterator ends or the transport asks us to pause."""
        it = self.body_iter
        assert it is not None
        extra = self.server.extra_head
        if self.served == 1:
            self.set_nodelay()  # streamed chunks must not wait for Nagle
        try:
            if self.response is None or not self.response.head_sent:
                # Look one chunk ahead: a body of one chunk still gets a Content-Length.
                # (A generator calls start_response on its first next(), so pull first.)
                first = next(it, None)
                second = None if first is None else next(it, None)
                resp = self._response()
                if first is None:
                    data = resp.head(0, extra)
                elif second is None:
                    data = resp.head(len(first), extra) + resp.frame(first)
                else:
                    # Each piece is written once validated: if the next one breaks the
                    # framing, what went before is a true start of the response.
                    self.transport.write_later(resp.head(-1, extra) + resp.frame(first))
                    self.transport.write(resp.frame(second))
                    if not self.paused:
                        self._pull_rest(it)
                    return
            else:
                self._pull_rest(it)
                return
            self.transport.write_later(data)
            end = resp.end()
            if end:
                self.transport.write_later(end)
        except Exception as e:
            self._app_failed(e)
            return
        self._finish()

    def _pull_rest(self, it: Iterator[bytes]) -> None:
        resp, transport = self.response, self.transport
        assert resp is not None
        for data in it:
            chunk = resp.frame(data)
            if chunk:
                transport.write(chunk)
            if self.paused or self.phase == CLOSED:
                return  # resume_writing continues from here
        end = resp.end()
        if end:
            transport.write(end)
        self._finish()

    def _send_file(self, wrapper: FileWrapper) -> bool:
        span = wrapper.sendfile_span()
        if span is None:
            return False
        fd, offset, count = span
        resp = self._response()
        head = resp.head(count, self.server.extra_head)
        if resp.content_length >= 0:
            if resp.content_length > count:
                raise AppError(f"Content-Length {resp.content_length} is past the end "
                               f"of the file ({count} bytes)")
            count = resp.content_length
        self.transport.write(head)
        if resp.head_only or count == 0:
            self._finish()
        else:
            resp.sent = count
            self.transport.sendfile(fd, offset, count, self._file_sent)
        return True

    def _file_sent(self) -> None:
        self._finish()
        self._process()

    def _app_failed(self, e: Exception) -> None:
        resp, req = self.response, self.request
        what = f"{req.method.decode()} {req.target.decode('latin-1')}" if req else "?"
        if isinstance(e, AppError):
            log.error("event=app-error request=%r error=%s", what, e)
        else:
            log.error("event=app-exception request=%r", what, exc_info=e)
        if resp is not None and resp.head_sent:
            self.transport.flush()  # earlier responses of this turn still go out
            self._close_result()
            self.transport.abort()  # mid-body: only a broken connection tells the truth
            self.phase = CLOSED
        else:
            self.body_iter = None
            self._close_result()
            self.send_error(500, "internal server error")

    def _close_result(self) -> None:
        result, self.result, self.body_iter = self.result, None, None
        try:
            close_iterable(result)
        except Exception:
            log.exception("event=app-close-error")

    def _finish(self) -> None:
        """The response is fully handed over: log it; the caller runs _process for more."""
        resp, req = self.response, self.request
        if self.result is not None:
            self._close_result()
        if self.server.access_enabled and req is not None:
            self._log_access(req, resp.sent if resp is not None else 0)
        self.response = self.request = None
        if self.phase == CLOSED:
            return
        if resp is None or resp.close:
            self.transport.close()
            self.phase = CLOSED
            return
        self.phase = IDLE

    def _log_access(self, req: Request, sent: int) -> None:
        peer = self.transport.get_extra_info("peername")
        self.server.access.log(peer[0] if isinstance(peer, tuple) else "", req, self.status, sent,
                               time.monotonic() - self.started)

    # -- errors, timeouts, flow control -----------------------------------------------
    def send_error(self, status: int, detail: str) -> None:
        if self.phase == CLOSED:
            return
        reason = REASONS.get(status, "Error")
        body = f"{status} {reason}: {detail}\n".encode("latin-1", "replace")
        head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\n"
                f"content-length: {len(body)}\r\n").encode() + self.server.extra_head
        if self.request is not None and self.request.method == b"HEAD":
            body = b""
        self.transport.write_later(head + b"connection: close\r\n\r\n" + body)
        self.transport.close()
        self.phase = CLOSED
        if status >= 500:
            return
        log.info("event=client-error status=%d detail=%s", status, detail)

    def deadline_passed(self) -> None:
        phase = self.phase
        self.deadline = 0.0
        if phase == HEADERS and self.conn.request is None:
            self._close()  # connected but never sent a byte: nothing to answer
        elif phase in (HEADERS, BODY):
            self.send_error(408, "request not received in time")
        elif phase == RESPONDING:
            self.transport.abort()  # the client stopped reading (write_timeout)
        else:
            self._close()  # idle keep-alive
        self.phase = CLOSED

    def pause_writing(self) -> None:
        self.paused = True
        self.transport.pause_reading()
        if self.phase == RESPONDING:
            self.deadline = self.server.loop.now + self.server.write_timeout

    def resume_writing(self) -> None:
        self.paused = False
        if self.phase == CLOSED:
            return
        self.transport.resume_reading()
        if self.phase == RESPONDING:
            self.deadline = 0.0
            if self.body_iter is not None:
                self._pull_body()
        self._process()

    def close_when_idle(self) -> None:
        if self.phase != RESPONDING and self.conn.request is None:
            self._close()

