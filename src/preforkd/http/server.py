"""Per-worker HTTP state: what all of one worker's connections share.

HttpServer holds the limits and timeouts, the router (the server's own
paths), the responder (inline WSGI, behind the static mounts when there are
any), the access log, the clock for the Date header and the whole-head memo,
and the once-a-second sweep that acts on expired deadlines. It talks to its
worker only through the Host it was given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from preforkd import __version__, logs
from preforkd.config import Config
from preforkd.http.connection import Limits
from preforkd.http.driver import IDLE, RESPONDING, HttpProtocol
from preforkd.http.environ import EnvironBuilder
from preforkd.http.forwarded import Trust
from preforkd.http.metrics import MetricsPage, RequestMeter, both
from preforkd.http.response import HeadParts, build_head, cl_line, error_response
from preforkd.http.router import OwnPaths, Router
from preforkd.http.static import with_mounts
from preforkd.http.threaded import ThreadedResponder
from preforkd.http.wsgi import WsgiResponder, load_app
from preforkd.protocols.base import Host, StateCounts

SWEEP_INTERVAL = 1.0
IDLE_TRIM_AFTER = 2.0  # seconds idle before a keep-alive connection gives back its caches
HEAD_MEMO = 64  # whole heads remembered for the last parts (by body length)


class HttpServer:
    def __init__(self, config: Config, host: Host, responder: Any = None) -> None:
        self.config = config
        self.host = host
        self.loop = host.loop
        self.slot = host.slot
        self.limits = Limits.from_config(config)
        self.draining = False  # keep-alive connections close after their next response
        self.stopping = False  # the server stops (not a reload): health answers 503
        # Read on every request: plain attributes, not config.<key> chains.
        self.keepalive_timeout = config.keepalive_timeout
        self.header_timeout = config.header_timeout
        self.body_timeout = config.body_timeout
        self.min_body_rate = config.min_body_rate
        self.write_timeout = config.write_timeout
        self.router = Router()
        OwnPaths(host.scoreboard, lambda: self.stopping).install(
            self.router, config.health_path, config.status_path)
        if config.metrics_path:
            self.router.add(config.metrics_path,
                            MetricsPage(host.scoreboard, host.slot, host.listeners))
        self.routes = self.router.routes
        app = responder or wsgi_responder(config, host)
        self.pool = getattr(app, "pool", None)  # (threads: for request_timeout)
        # [[static]] mounts wrap the app's responder (none: nothing in between)
        self.responder = with_mounts(app, config)
        self.access = logs.AccessLog(config.access_log, config.access_log_format, host.index)
        self._observe_responses(config)
        self.extra_head = b""  # the date and server lines, renewed each second
        self._date = 0
        self.memo_parts: HeadParts | None = None
        self.memo: dict[int, bytes] = {}
        self._tick()
        self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        host.on_drain(self._drain)
        host.on_stop(self._stop)
        host.on_reopen(self.access.reopen)
        host.on_exit(self.access.close)
        host.report_states(self.count_states)
        host.report_busy(self.busy_request)
        host.set_nodelay_itself()  # only connections that outlive a response need it

    def make_protocol(self) -> HttpProtocol:
        return HttpProtocol(self)

    def whole_head(self, parts: HeadParts, length: int, close: bool) -> bytes:
        """The head for a body of `length` bytes. Remembered in `memo` per length (a
        negative key for a closing response) for the last parts (`memo_parts`), until
        the date changes; the driver looks there first."""
        key = ~length if close else length
        if parts is not self.memo_parts:
            self.memo_parts, self.memo = parts, {}
        head = build_head(parts, cl_line(length), self.extra_head, close)
        memo = self.memo
        if len(memo) >= HEAD_MEMO:
            memo.clear()
        memo[key] = head
        return head

    def _observe_responses(self, config: Config) -> None:
        """The driver's per-response hook, chosen once: `observing` (is there one; the
        driver then also notes when each request was whole) and `observe(driver, req,
        code, sent)`: the access log's, the metrics', or both. With neither, requests
        pay nothing."""
        self.meter = RequestMeter(self.slot, self.loop) if config.metrics_path else None
        self.observing = self.access.enabled or self.meter is not None
        self.observe: Callable[[HttpProtocol, Any, int, int], None] = self.log_access
        if self.meter is not None:
            self.observe = (both(self.log_access, self.meter.response) if self.access.enabled
                            else self.meter.response)
            self.host.meter_bytes(self.slot)  # connections count their bytes in our slot

    def error_response(self, driver: HttpProtocol, status: int, detail: str) -> bytes:
        """An error response for `driver`'s connection (counted, when metrics are on)."""
        if self.meter is not None:
            self.meter.error(driver, status)
        req = driver.request
        return error_response(status, detail, self.extra_head,
                              req is not None and req.method == b"HEAD")

    def log_access(self, driver: HttpProtocol, req: Any, code: int, sent: int) -> None:
        peer = driver.transport.get_extra_info("peername")
        self.access.log(peer[0] if isinstance(peer, tuple) else "", req, code, sent,
                        time.monotonic() - driver.started)

    def live(self) -> Iterator[HttpProtocol]:
        """The HTTP protocols of the worker's open connections (the worker keeps the
        set: one add and discard per connection, not two)."""
        for transport in self.host.connections:
            proto = transport.get_protocol()
            if type(proto) is HttpProtocol:
                yield proto

    def count_states(self) -> StateCounts:
        """(reading, writing, waiting) connections, counted at heartbeat time, so
        requests pay nothing for it."""
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

    def _drain(self) -> None:
        self.draining = True

    def _stop(self) -> None:
        self.stopping = True

    def _tick(self) -> None:
        now = int(time.time())
        if now != self._date:
            self._date = now
            date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
            self.extra_head = f"date: {date}\r\nserver: preforkd\r\n".encode()
            self.memo_parts, self.memo = None, {}

    def _sweep(self) -> None:
        loop = self.loop
        now = loop.now
        self._tick()
        idle_since = now - self.keepalive_timeout + IDLE_TRIM_AFTER
        expired = []
        for proto in self.live():
            deadline = proto.deadline
            if deadline and deadline <= now:
                expired.append(proto)
            elif proto.phase == IDLE and proto.served > 2 and deadline < idle_since:
                proto.trim()
        for proto in expired:
            proto.deadline_passed()
        self.access.flush()
        if self.pool is not None and self.config.request_timeout:
            slot = self.slot  # (status and metrics show them: scoreboard.SlotWriter)
            slot.overdue, logged = self.pool.report_overdue(self.config.request_timeout, now)
            slot.overdue_total += logged
        loop.call_later(SWEEP_INTERVAL, self._sweep)


def wsgi_responder(config: Config, host: Host) -> WsgiResponder:
    """The app, inline (threads = 0) or in a pool of threads."""
    extra = {"preforkd.worker": host.index, "preforkd.generation": host.generation,
             "preforkd.version": __version__, "wsgi.multithread": config.threads > 0}
    environ = EnvironBuilder(extra, trust=Trust(config.forwarded_allow_ips),
                             forwarded_host=config.forwarded_host)
    app = load_app(config.app)
    if not config.threads:
        return WsgiResponder(app, environ)
    return ThreadedResponder(app, environ, host.loop, config.threads, config.max_pending)


def http_factory(config: Config, host: Host) -> Callable[[], HttpProtocol]:
    return HttpServer(config, host).make_protocol
