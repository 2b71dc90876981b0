"""Prometheus exposition of the scoreboard: text format 0.0.4, or OpenMetrics 1.0.

`render` is a pure function of what the scoreboard holds (every worker's
published meters and the master area) and the listen queues, so it is tested
without a server. Per-worker series carry `worker` (the index) and
`generation`; the slots of one index and generation (a recycled worker and
its successor, while both live) are summed into one series, so recycling
looks like a counter reset rather than a new series each time.

What is exported (every name prefixed `preforkd_`): FAMILIES below.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from preforkd.scoreboard import DURATION_BUCKETS, RESPAWN_REASONS, MasterInfo, Meters

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# name (counters without _total), type, help
FAMILIES = {
    "connections": ("gauge", "Open connections by state (reading, writing, waiting)."),
    "connections_accepted": ("counter", "Connections accepted."),
    "http_requests": ("counter", "HTTP responses sent, by status class (1xx..5xx); "
                                 "refusals of malformed requests included."),
    "http_request_duration_seconds": (
        "histogram", "Time from a whole request to its response handed to the connection "
                     "(requests the server's paths or the app answered)."),
    "received_bytes": ("counter", "Bytes read from connections."),
    "sent_bytes": ("counter", "Bytes handed to connections to send."),
    "worker_draining": ("gauge", "1 while the worker drains (graceful stop or replacement)."),
    "requests_overdue": ("gauge", "App calls running longer than request_timeout now "
                                  "(threads = N)."),
    "requests_overdue_logged": ("counter", "App calls logged for running longer than "
                                           "request_timeout."),
    "generation": ("gauge", "The reload generation the master serves (1 at start)."),
    "worker_respawns": ("counter", "Workers replaced, by reason: crash (died unasked), "
                                   "timeout (heartbeat), recycle (a limit), reload."),
    "worker_boot_failures": ("counter", "Workers that exited before they were ready."),
    "listen_queue": ("gauge", "Connections waiting in a TCP listener's accept queue."),
    "listen_backlog": ("gauge", "The accept queue's limit (the listen backlog)."),
}
STATES = ("reading", "writing", "waiting")
LE = tuple(repr(float(b)) for b in DURATION_BUCKETS) + ("+Inf",)

_TCP_INFO = getattr(socket, "TCP_INFO", 0)
# struct tcp_info: 8 one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked,
# sacked. For a LISTEN socket, unacked is the accept queue and sacked its limit.
_QUEUE = struct.Struct("=24xII")
_TCP_LISTEN = 10  # tcpi_state


def render(meters: Iterable[Meters], master: MasterInfo,
           queues: Sequence[tuple[str, int, int]] = (), openmetrics: bool = False) -> bytes:
    out: list[str] = []
    workers = _merge(meters)

    def family(name: str, samples: Iterable[tuple[str, str, Any]]) -> None:
        samples = list(samples)
        if not samples:
            return  # (no TCP listener, say)
        kind, help_ = FAMILIES[name]
        full = "preforkd_" + name
        shown = full + "_total" if kind == "counter" and not openmetrics else full
        out.append(f"# HELP {shown} {help_}\n# TYPE {shown} {kind}\n")
        out.extend(f"{full}{suffix}{{{labels}}} {value}\n" if labels else
                   f"{full}{suffix} {value}\n" for suffix, labels, value in samples)

    family("connections", (("", f'{w},state="{s}"', getattr(m, s))
                           for w, m in workers for s in STATES))
    family("connections_accepted", (("_total", w, m.accepted) for w, m in workers))
    family("http_requests", (("_total", f'{w},class="{c + 1}xx"', n)
                             for w, m in workers for c, n in enumerate(m.classes)))
    family("http_request_duration_seconds", _histogram(workers))
    family("received_bytes", (("_total", w, m.bytes_in) for w, m in workers))
    family("sent_bytes", (("_total", w, m.bytes_out) for w, m in workers))
    family("worker_draining", (("", w, int(m.draining)) for w, m in workers))
    family("requests_overdue", (("", w, m.overdue) for w, m in workers))
    family("requests_overdue_logged", (("_total", w, m.overdue_total) for w, m in workers))
    family("generation", [("", "", master.generation)])
    family("worker_respawns", (("_total", f'reason="{r}"', master.respawns.get(r, 0))
                               for r in RESPAWN_REASONS))
    family("worker_boot_failures", [("_total", "", master.boot_failures)])
    family("listen_queue", (("", f'listener="{_escape(n)}"', q) for n, q, _ in queues))
    family("listen_backlog", (("", f'listener="{_escape(n)}"', b) for n, _, b in queues))
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode()


def _histogram(workers: list[tuple[str, Meters]]) -> Iterable[tuple[str, str, Any]]:
    for w, m in workers:
        total = 0
        for le, n in zip(LE, m.buckets, strict=True):
            total += n
            yield "_bucket", f'{w},le="{le}"', total
        yield "_sum", w, repr(float(m.duration_sum))
        yield "_count", w, total


def _merge(meters: Iterable[Meters]) -> list[tuple[str, Meters]]:
    """(the labels, the meters) per worker index and generation, in that order; slots
    of the same index and generation summed."""
    by_key: dict[tuple[int, int], Meters] = {}
    for m in meters:
        key = (m.index, m.generation)
        seen = by_key.get(key)
        by_key[key] = m if seen is None else _sum(seen, m)
    return [(f'worker="{i}",generation="{g}"', by_key[i, g]) for i, g in sorted(by_key)]


def _sum(a: Meters, b: Meters) -> Meters:
    def add(x: tuple[int, ...], y: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(p + q for p, q in zip(x, y, strict=True))

    return Meters(a.index, a.generation, a.pid, a.accepted + b.accepted,
                  a.reading + b.reading, a.writing + b.writing, a.waiting + b.waiting,
                  a.draining or b.draining, a.bytes_in + b.bytes_in, a.bytes_out + b.bytes_out,
                  add(a.classes, b.classes), a.duration_sum + b.duration_sum,
                  add(a.buckets, b.buckets), a.overdue + b.overdue,
                  a.overdue_total + b.overdue_total)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def listen_queues(listeners: Iterable[Any]) -> list[tuple[str, int, int]]:
    """(name, accept queue, backlog) of each TCP listener, from TCP_INFO (Linux); a
    listener where that is unavailable (unix sockets, a closed socket, another OS) is
    left out."""
    out = []
    for listener in listeners:
        if listener.family not in (socket.AF_INET, socket.AF_INET6) or not _TCP_INFO:
            continue
        try:
            info = listener.sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _QUEUE.size)
            name = listener.name
        except OSError:
            continue
        if len(info) == _QUEUE.size and info[0] == _TCP_LISTEN:
            out.append((name, *_QUEUE.unpack(info)))
    return out
