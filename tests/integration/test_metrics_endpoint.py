"""metrics_path on a real server: what two workers count, a reload and a crash, scraped
as Prometheus text and as OpenMetrics and parsed by prometheus_client."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from harness import wait_until

SCRAPE = b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
OPENMETRICS_SCRAPE = (b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                      b"Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n"
                      b"\r\n")


def roundtrip(srv, request: bytes) -> bytes:
    """One request on its own connection; the whole answer, up to the server's close."""
    with socket.create_connection(srv.address, timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def scrape(srv, request: bytes = SCRAPE) -> tuple[str, dict]:
    raw = roundtrip(srv, request)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert status_of(raw) == 200, raw
    ctype = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-type:"))
    parse = parse_openmetrics if ctype.startswith("application/openmetrics") else parse_text
    return ctype, {f.name: f for f in parse(body.decode())}


def total(fams: dict, family: str, sample: str, **labels: str) -> float:
    """The sum of `sample` over the series whose labels include `labels`."""
    return sum(s.value for s in fams[family].samples
               if s.name == sample and labels.items() <= s.labels.items())


def published_since(srv, since: float) -> bool:
    """Every worker has beaten since `since` (monotonic), so what it counted before is in
    its scoreboard slot (the beat stamps its heartbeat after the counters). Asked over
    the control socket, which counts no HTTP request."""
    asked = time.monotonic()
    result = srv.cli("status", "--json")
    workers = json.loads(result.stdout)["workers"] if result.returncode == 0 else []
    # (heartbeat_age is rounded to 1 ms)
    return bool(workers) and all(w["heartbeat_age"] + 0.001 < asked - since for w in workers)


def test_metrics_count_requests_and_follow_a_reload_and_a_crash(server):
    srv = server("-w", "2", "--app", "wsgiapps:app", "--metrics-path", "/metrics")
    srv.wait_ready(2)
    srv.allow_traceback = True  # (the /error request's)
    srv.allowed_errors += ["event=app-exception", "killed by SIGKILL"]
    requests = [b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"] * 10
    requests += [b"GET /missing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"] * 2
    requests += [b"GET /error HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"]
    requests += [b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n"]  # refused: 400
    answers = [roundtrip(srv, r) for r in requests]
    assert [status_of(a) for a in answers] == [200] * 10 + [404] * 2 + [500, 400]
    done = time.monotonic()
    wait_until(lambda: published_since(srv, done), timeout=10, what="every worker's beat")

    ctype, fams = scrape(srv)
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    req, hist = "preforkd_http_requests", "preforkd_http_request_duration_seconds"
    by_class = {c: total(fams, req, req + "_total", **{"class": c})
                for c in ("1xx", "2xx", "3xx", "4xx", "5xx")}
    assert by_class == {"1xx": 0, "2xx": 10, "3xx": 0, "4xx": 3, "5xx": 1}
    # timed: every request the app answered (the refused one is counted by class only)
    assert total(fams, hist, hist + "_count") == 13
    assert total(fams, hist, hist + "_bucket", le="+Inf") == 13
    assert 0 < total(fams, hist, hist + "_sum") < 13 * 10
    # one connection per request, and the scrape's own (its worker publishes before answering)
    accepted = "preforkd_connections_accepted"
    assert total(fams, accepted, accepted + "_total") == len(requests) + 1
    assert total(fams, "preforkd_received_bytes", "preforkd_received_bytes_total") == \
        sum(map(len, requests)) + len(SCRAPE)
    assert total(fams, "preforkd_sent_bytes", "preforkd_sent_bytes_total") == \
        sum(map(len, answers))
    workers = {(s.labels["worker"], s.labels["generation"])
               for s in fams["preforkd_connections"].samples}
    assert workers == {("0", "1"), ("1", "1")}
    assert total(fams, "preforkd_generation", "preforkd_generation") == 1
    assert total(fams, "preforkd_worker_draining", "preforkd_worker_draining") == 0
    respawns = "preforkd_worker_respawns"
    assert total(fams, respawns, respawns + "_total") == 0
    assert fams["preforkd_listen_backlog"].samples[0].value == 2048  # (the harness's)
    assert fams["preforkd_listen_queue"].samples[0].value >= 0

    ctype, fams = scrape(srv, OPENMETRICS_SCRAPE)
    assert ctype == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    # (the first scrape is in it once its worker beats, or if this worker served it)
    assert total(fams, req, req + "_total", **{"class": "2xx"}) in (10, 11)
    assert total(fams, hist, hist + "_count") in (13, 14)

    # A reload: generation 2, two workers replaced for it
    n = len(srv.events())
    srv.signal(signal.SIGHUP)
    new = srv.wait_ready(2, gen=2)
    srv.wait_event("reloaded", after=n, gen=2)
    _, fams = scrape(srv)
    assert total(fams, "preforkd_generation", "preforkd_generation") == 2
    assert total(fams, respawns, respawns + "_total", reason="reload") == 2
    assert total(fams, respawns, respawns + "_total", reason="crash") == 0
    assert {s.labels["worker"] for s in fams["preforkd_connections"].samples
            if s.labels["generation"] == "2"} == {"0", "1"}

    # A crash: worker 0 of generation 2 killed, respawned with its index
    n = len(srv.events())
    os.kill(new[0], signal.SIGKILL)
    srv.wait_event("ready", after=n, index=0, gen=2)
    _, fams = scrape(srv)
    assert total(fams, respawns, respawns + "_total", reason="crash") == 1
    assert total(fams, respawns, respawns + "_total", reason="reload") == 2
    assert total(fams, "preforkd_worker_boot_failures",
                 "preforkd_worker_boot_failures_total") == 0


def test_metrics_path_off_by_default(server):
    srv = server("-w", "1", "--app", "wsgiapps:app")
    srv.wait_ready(1)
    raw = roundtrip(srv, SCRAPE)
    assert status_of(raw) == 200 and raw.endswith(b"Hello, World!")  # (the app's)


def test_a_recycled_worker_is_counted_and_its_successor_keeps_the_series(server):
    srv = server("-w", "1", "--app", "wsgiapps:app", "--metrics-path", "/metrics",
                 "--max-requests", "3", "--recycle-jitter", "0")
    old = srv.wait_ready(1)
    for _ in range(3):
        assert status_of(roundtrip(srv, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"[:-2]
                                   + b"Connection: close\r\n\r\n")) == 200
    srv.wait_event("recycle", pid=old[0])
    wait_until(lambda: old[0] not in srv.workers(), what="the recycled worker gone")
    _, fams = scrape(srv)
    respawns = "preforkd_worker_respawns"
    assert total(fams, respawns, respawns + "_total", reason="recycle") == 1
    assert total(fams, respawns, respawns + "_total", reason="crash") == 0
    assert {(s.labels["worker"], s.labels["generation"])
            for s in fams["preforkd_connections"].samples} == {("0", "1")}
