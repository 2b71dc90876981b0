"""The HTTP/1.1 connection driver: phases, deadlines, order, flow control, keep-alive.

Theory of operation
-------------------
One HttpProtocol per connection. Bytes go into its HttpConnection (sans-I/O
parser); events come out and run in order. A Request goes to the router
(the server's own paths) or to the connection's exchange (the responder, see
http/responder.py), which answers with a response plan: whole, streamed,
file, now or later. The next pipelined request waits until that response is
fully handed to the transport. The driver knows nothing of WSGI.

A connection is always in one phase (PHASES below: what bounds it, and what
its expiry does); TRANSITIONS lists every move the driver makes. Each
connection keeps one `deadline` (a float) for its phase, and the server
sweeps all connections once a second: timers cost nothing per request.

Keep-alive: a response closes the connection when the client asked, the
responder asked, the version needs it, or the worker is draining. A drain
never closes an idle connection (a request may be on its way): its next
request is answered with Connection: close; one that never comes is ended
by the keep-alive deadline, or by graceful_timeout.

Streams are pulled only while the transport accepts more (pause_writing
stops the pull, resume_writing continues it), so a slow reader never makes
the worker buffer a whole large response.

Phases are plain ints, not an Enum: the hot path compares them several times
per request, and CPython specialises comparisons of exact ints only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from preforkd import logs
from preforkd.http.bodies import BodyStream, send_file
from preforkd.http.connection import CONTINUE, HttpConnection, Request
from preforkd.http.response import (
    CONTINUE_HEAD,
    END_KEEP_10,
    Framing,
    HeadParts,
    ResponseError,
    build_head,
    cl_line,
)
from preforkd.protocols.base import Protocol, Transport, set_nodelay

log = logs.log

IDLE, HEADERS, BODY, RESPONDING, CLOSED = range(5)
PHASE_NAMES = ("IDLE", "HEADERS", "BODY", "RESPONDING", "CLOSED")

# phase: (the setting that bounds it, what happens when that runs out)
PHASES = {
    IDLE: ("keepalive_timeout", "close quietly"),
    HEADERS: ("header_timeout", "408, or a quiet close if no byte came"),
    BODY: ("body_timeout", "408 (between two reads; and below min_body_rate)"),
    RESPONDING: ("write_timeout", "abort (only while the client reads nothing)"),
    CLOSED: ("", ""),
}

# Every change of phase the driver makes, and why (the tests check that the moves
# taken are exactly these). CLOSED is final.
TRANSITIONS = {
    (IDLE, HEADERS): "part of a request's head arrived",
    (IDLE, BODY): "a head arrived whole, its body in part",
    (IDLE, RESPONDING): "a whole request arrived",
    (IDLE, CLOSED): "EOF, drain, keep-alive timeout, or an error answered",
    (HEADERS, BODY): "the head is complete, the body is not",
    (HEADERS, RESPONDING): "the rest of the request arrived",
    (HEADERS, CLOSED): "408, 4xx, or the client left",
    (BODY, RESPONDING): "the rest of the body arrived",
    (BODY, CLOSED): "408, 413, 400, or the client left",
    (RESPONDING, IDLE): "the response is handed over; keep-alive",
    (RESPONDING, CLOSED): "the response ends the connection, or it failed",
}


class HttpProtocol(Protocol):
    __slots__ = ("server", "transport", "conn", "exchange", "phase", "deadline", "paused",
                 "read_paused", "framing", "stream", "on_done", "request", "started",
                 "served")

    def __init__(self, server: Any) -> None:
        self.server = server
        self.conn = HttpConnection(server.limits)
        self.exchange = server.responder.exchange(self)
        self.phase, self.deadline = IDLE, 0.0
        self.paused = False  # the transport asked us to stop writing
        self.read_paused = False  # we stopped reading (a response in flight, or paused)
        self.framing: Framing | None = None  # a response that is not one known chunk
        self.stream: BodyStream | None = None
        self.on_done: Callable[[], Any] | None = None  # the responder's, once it is sent
        self.request: Request | None = None
        self.started = 0.0
        self.served = 0  # from the third request on, the parser and caches are kept

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        self.deadline = self.server.loop.now + self.server.header_timeout

    def trim(self) -> None:
        """Idle a while: give back what the next request can rebuild; young again."""
        self.exchange.trim()
        self.conn.release()
        self.served = 2

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase, self.deadline = CLOSED, 0.0
        self._done()
        # Break the cycles (transport <-> protocol, parser <-> connection, exchange <->
        # driver) so memory goes back at once by reference counting.
        self.conn.close()
        self.exchange.close()
        self.transport = self.stream = None

    # -- input -------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.receive_data(data)
        if self.phase == RESPONDING:
            if conn.events:
                # Pipelined requests while a response is in flight: stop reading until
                # we get to them, so the queue stays one read long.
                self._pause_reading()
            return
        self._process()

    def eof_received(self) -> bool:
        self.conn.receive_eof()
        if self.phase != RESPONDING:
            self._process()
        return True  # a response in flight still goes out; _settle closes after it

    def proceed(self) -> None:
        """Run what queued up behind a response that was answered later."""
        if self.phase != CLOSED:
            self._process()

    def _process(self) -> None:
        """Run queued events until one needs more data or a response is in flight.
        Responses go out with write_later: those of one read (pipelining), and of
        every connection served in this loop turn, leave in one send each."""
        events, server = self.conn.events, self.server
        routes = server.routes
        while events and self.phase < RESPONDING:
            event = events.pop(0)
            if type(event) is Request:
                # A request: the router's, or the exchange's. (Inline: this runs for
                # every request, and a call costs as much as the rest of it.)
                self.phase = RESPONDING
                self.deadline = 0.0
                self.request = event
                server.slot.requests += 1
                if server.observing:  # (the access log's or the metrics' hook is on)
                    # From when this turn's reads began: the request's bytes were in
                    # by then (nginx's $request_time also counts from the read).
                    self.started = server.loop.now
                target = event.target
                route = routes.get(target)
                if route is None and 63 in target:  # ("?": the path may be one of ours)
                    route = server.router.match_query(target)
                if route is not None:
                    route(self, event)
                else:
                    self.served += 1
                    self.exchange.respond(event)
            elif event is CONTINUE:
                self.transport.write_later(CONTINUE_HEAD)
            else:
                self.send_error(event.status, event.detail)
        if self.phase < RESPONDING:
            self._settle()

    def _pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _close(self) -> None:
        """Close once what was written is sent (with the turn's other writes)."""
        self.transport.close()
        self.phase = CLOSED

    def _settle(self) -> None:
        """Between requests or inside one: pick the phase and its deadline."""
        conn = self.conn
        if conn.request is None:
            server = self.server
            if conn.eof:
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
            self._body_deadline(conn.request.body_size)
        if self.read_paused and not self.paused:
            self.read_paused = False
            self.transport.resume_reading()

    def _body_deadline(self, received: int) -> None:
        """body_timeout runs between reads; past a first body_timeout the body must
        also average min_body_rate (so a byte trickled now and then is cut off)."""
        server, now = self.server, self.server.loop.now
        if self.phase != BODY:
            self.phase, self.started = BODY, now  # (started: in BODY, when it began)
        deadline = now + server.body_timeout
        if server.min_body_rate:
            deadline = min(deadline, self.started + server.body_timeout
                           + received / server.min_body_rate)
        self.deadline = deadline

    # -- requests ------------------------------------------------------------------
    def send_whole(self, parts: HeadParts, body: bytes) -> None:
        """A response whose whole body is known: one write with its head. Raises
        ResponseError (nothing sent) when the body contradicts the head."""
        if parts.bodyless:
            self._send_whole_framed(parts, body)
            return
        n = len(body)
        if parts.content_length != n and parts.content_length >= 0:
            raise ResponseError(f"body of {n} bytes, Content-Length {parts.content_length}")
        server = self.server
        req = self.request
        self.request = None
        if req.method == b"HEAD":
            body = b""
        if server.observing:
            server.observe(self, req, parts.code, n)
        # (the server's memo of whole heads, looked up here: a call fewer per request)
        if parts.close or server.draining or not req.keep_alive:
            head = server.memo.get(~n) if parts is server.memo_parts else None
            self.transport.write_later((head or server.whole_head(parts, n, True)) + body)
            self._close()
            return
        if req.plain or req.version != "1.0":
            head = server.memo.get(n) if parts is server.memo_parts else None
            head = head or server.whole_head(parts, n, False)
        else:  # HTTP/1.0 with keep-alive: its answer must say so (RFC 9112 §9.3)
            head = build_head(parts, cl_line(n), server.extra_head, False, END_KEEP_10)
        self.transport.write_later(head + body)
        self.phase = IDLE
        if self.served <= 2:
            # A young connection: it may well go idle now, so keep nothing (the
            # parser costs ~1 µs to make again).
            self.conn.release()
            if self.served == 1:
                set_nodelay(self.transport)  # it lives on: small writes go now

    def _send_whole_framed(self, parts: HeadParts, body: bytes) -> None:
        """send_whole's slow twin: a status without a body (1xx, 204, 304) follows the
        framing rules (no Content-Length of our own)."""
        resp = self.new_framing(parts)
        self.transport.write_later(resp.head(len(body), self.server.extra_head)
                                   + resp.frame(body) + resp.end())
        self.finish()

    def new_framing(self, parts: HeadParts) -> Framing:
        """The framing state of the current response, for a body not known whole."""
        req = self.request
        self.framing = Framing(parts, req.version, req.method == b"HEAD",
                               not req.keep_alive or self.server.draining)
        return self.framing

    def write_body(self, head: Callable[[], HeadParts], data: bytes) -> None:
        """A piece of a body of unknown length, sent at once (the head goes first)."""
        resp = self.framing or self.new_framing(head())
        if not resp.head_sent:
            self.transport.write_later(resp.head(-1, self.server.extra_head))
        self.transport.write(resp.frame(data))  # (after the head, in one send)

    def send_stream(self, it: Iterator[bytes], head: Callable[[], HeadParts],
                    done: Callable[[], Any] | None = None) -> None:
        """Body chunks pulled from `it` while the client keeps reading. `head()` is
        asked after the first pull (a WSGI generator calls start_response in it)."""
        self.on_done = done
        stream = self.stream = BodyStream(self, it)
        if self.served == 1:
            set_nodelay(self.transport)  # streamed chunks must not wait for Nagle
        try:
            stream.start(head)
        except Exception as e:
            self.fail(e)

    def send_file(self, parts: HeadParts, fd: int, offset: int, count: int,
                  done: Callable[[], Any] | None = None) -> None:
        """A file span after the head, with sendfile; `done` once it is handed over."""
        self.on_done = done
        send_file(self, parts, fd, offset, count)

    def file_sent(self) -> None:
        self.finish()
        self.proceed()

    def fail(self, e: Exception) -> None:
        """The responder could not answer: a 500, or an abort once a head went out
        (mid-body, only a broken connection tells the client the truth)."""
        resp = self.framing
        _log_failure(self.request, e)
        self.stream = None
        if resp is not None and resp.head_sent:
            self.transport.flush()  # earlier responses of this turn still go out
            self._done()
            self.transport.abort()
            self.phase = CLOSED
            return
        self._done()
        self.send_error(500, "internal server error")

    def _done(self) -> None:
        done = self.on_done
        if done is not None:
            self.on_done = None
            done()

    def finish(self) -> None:
        """The response is fully handed over: log it; the caller runs _process for more."""
        resp, req = self.framing, self.request
        self.stream = None
        self._done()
        if self.server.observing and req is not None:
            self.server.observe(self, req, resp.parts.code if resp is not None else 0,
                                resp.sent if resp is not None else 0)
        self.framing = self.request = None
        if self.phase != CLOSED:
            if resp is None or resp.close:
                self._close()
            else:
                self.phase = IDLE

    # -- errors, timeouts, flow control -----------------------------------------------
    def send_error(self, status: int, detail: str) -> None:
        if self.phase == CLOSED:
            return
        self.transport.write_later(self.server.error_response(self, status, detail))
        self.transport.close_lingering()  # the client may still be sending: no RST
        self.phase = CLOSED
        if status < 500:
            log.info("event=client-error status=%d detail=%s", status, detail)

    def deadline_passed(self) -> None:
        phase, self.deadline = self.phase, 0.0
        if phase == BODY or (phase == HEADERS and self.conn.request is not None):
            self.send_error(408, "request not received in time")
        elif phase == RESPONDING:
            self.transport.abort()  # the client stopped reading (write_timeout)
        else:
            self._close()  # idle keep-alive, or connected and never sent a byte
        self.phase = CLOSED

    def pause_writing(self) -> None:
        self.paused = True
        self._pause_reading()
        if self.phase == RESPONDING:
            self.deadline = self.server.loop.now + self.server.write_timeout

    def resume_writing(self) -> None:
        self.paused = False
        if self.phase == CLOSED:
            return
        if self.read_paused and not self.conn.events:
            self.read_paused = False  # (queued requests keep it paused until their turn)
            self.transport.resume_reading()
        if self.phase == RESPONDING:
            self.deadline = 0.0
            if self.stream is not None:
                try:
                    self.stream.pull()
                except Exception as e:
                    self.fail(e)
                    return
        self._process()

    # close_when_idle stays the base class's no-op: a drain never closes an idle
    # connection, because its next request may already be on the way. That request is
    # answered with Connection: close (server.draining), and what never comes is ended
    # by the keep-alive deadline or the worker's graceful_timeout.


def _log_failure(req: Request | None, e: Exception) -> None:
    what = f"{req.method.decode()} {req.target.decode('latin-1')}" if req else "?"
    if isinstance(e, ResponseError):
        log.error("event=app-error request=%r error=%s", what, e)
    else:
        log.error("event=app-exception request=%r", what, exc_info=e)
