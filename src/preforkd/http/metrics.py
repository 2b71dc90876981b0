"""metrics_path: the Prometheus page, and what a worker counts for it.

Counting is chosen once, when the HttpServer is made: with metrics_path off
nothing below is installed and requests do no extra work. With it on:

- the driver's per-response hook (the one the access log uses: `observing`,
  `observe`) runs RequestMeter.response, which adds to plain lists on the
  worker's SlotWriter (responses by status class, the duration histogram);
  error responses are counted by RequestMeter.error;
- connections are served by a transport that counts the bytes it reads and is
  given to send (transport.MeteredTransport);
- the heartbeat publishes all of it into the worker's scoreboard slot.

Any worker answers the page from the scoreboard (every worker's slot and the
master area), its own slot published first so its numbers are current.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from time import monotonic
from typing import Any

from preforkd.exposition import OPENMETRICS_TYPE, TEXT_TYPE, listen_queues, render
from preforkd.http.connection import Request
from preforkd.http.response import encode_head
from preforkd.scoreboard import DURATION_BUCKETS

TEXT = encode_head("200 OK", [("content-type", TEXT_TYPE)])
OPENMETRICS = encode_head("200 OK", [("content-type", OPENMETRICS_TYPE)])
_FIRST_BUCKET = DURATION_BUCKETS[0]


class RequestMeter:
    """Counts responses into the worker's own memory (the SlotWriter's lists).

    A request is timed from the start of the loop turn that read it (its bytes were
    in by then). A response to a request begun in this same turn leaves with the
    turn's writes, at its end: such responses are counted as they come and timed
    together once, when the turn ends (one clock read a turn, not one a response:
    pipelined and busy connections answer many per turn). Others (a thread's
    answer, a stream, a file sent over many turns) are timed as they finish."""

    __slots__ = ("slot", "classes", "buckets", "loop", "in_turn", "turn_start")

    def __init__(self, slot: Any, loop: Any) -> None:
        self.slot = slot
        self.classes = slot.classes
        self.buckets = slot.buckets
        self.loop = loop
        self.in_turn = 0  # responses of this turn's requests, timed at its end
        self.turn_start = 0.0

    def response(self, driver: Any, req: Any, code: int, sent: int) -> None:
        """A response handed over (the driver's observe hook; `driver.started` is the
        start of the turn its request was whole in)."""
        self.classes[code // 100] += 1
        if driver.started == self.loop.now:
            self.in_turn += 1
            if self.in_turn == 1:
                self.turn_start = driver.started  # (end_turn may run in the next turn)
                self.loop.call_soon(self.end_turn)  # (runs after the turn's I/O)
        else:
            self.time(monotonic() - driver.started, 1)

    def end_turn(self) -> None:
        count, self.in_turn = self.in_turn, 0
        self.time(monotonic() - self.turn_start, count)

    def time(self, duration: float, count: int) -> None:
        if duration <= _FIRST_BUCKET:
            self.buckets[0] += count  # (most responses: no search)
        else:
            self.buckets[bisect_left(DURATION_BUCKETS, duration)] += count
        self.slot.duration_sum += duration * count

    def error(self, driver: Any, status: int) -> None:
        """An error response: timed if it answers a request (an app failure's 500),
        only counted by class if it refuses one the parser rejected."""
        if driver.request is not None:
            self.response(driver, driver.request, status, 0)
        else:
            self.classes[status // 100] += 1


def both(first: Any, second: Any) -> Any:
    """One observe hook running two (the access log's and the meter's)."""
    def observe(driver: Any, req: Any, code: int, sent: int) -> None:
        first(driver, req, code, sent)
        second(driver, req, code, sent)

    return observe


class MetricsPage:
    """The route: every worker's meters, in the format the scraper's Accept asks for."""

    def __init__(self, scoreboard: Any, slot: Any, listeners: Sequence[Any]) -> None:
        self.scoreboard = scoreboard
        self.slot = slot
        self.listeners = listeners

    def __call__(self, driver: Any, req: Request) -> None:
        driver.send_whole(*self.page(req.headers))

    def page(self, headers: list[tuple[bytes, bytes]]) -> tuple[Any, bytes]:
        self.slot.publish_meters()  # (ours current; the others' are as of their last beat)
        openmetrics = wants_openmetrics(headers)
        body = render(self.scoreboard.meters(), self.scoreboard.master(),
                      listen_queues(self.listeners), openmetrics)
        return (OPENMETRICS if openmetrics else TEXT), body


def wants_openmetrics(headers: list[tuple[bytes, bytes]]) -> bool:
    """Does an Accept field list application/openmetrics-text (with q above 0)?"""
    for name, value in headers:
        if name.lower() != b"accept":
            continue
        for item in value.split(b","):
            media, *params = item.split(b";")
            if media.strip().lower() == b"application/openmetrics-text" and _q(params) > 0:
                return True
    return False


def _q(params: list[bytes]) -> float:
    for param in params:
        key, _, value = param.partition(b"=")
        if key.strip().lower() == b"q":
            try:
                return float(value.strip())
            except ValueError:
                return 0.0
    return 1.0
