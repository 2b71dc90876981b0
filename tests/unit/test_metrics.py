"""metrics_path: the exposition of known scoreboard contents, parsed by prometheus_client,
and what the in-memory server counts with metrics on and off."""

from __future__ import annotations

import socket
import time

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from preforkd.exposition import OPENMETRICS_TYPE, TEXT_TYPE, listen_queues, render
from preforkd.http.metrics import RequestMeter, wants_openmetrics
from preforkd.listeners import Listener
from preforkd.scoreboard import DURATION_BUCKETS, Scoreboard

from httpkit import exchange, make_server, parse_responses

W0 = {"worker": "0", "generation": "2"}
W1 = {"worker": "1", "generation": "2"}


def known_scoreboard() -> Scoreboard:
    """Worker 0 (two slots: a recycled worker and its successor), worker 1, and the
    master area, with known contents."""
    sb = Scoreboard(4)
    for slot, pid, index in ((0, 100, 0), (1, 101, 1), (2, 102, 0)):
        sb.claim(slot, pid, index, 2, 0.0)
    w = sb.view(0)
    w.accepted, w.bytes_in, w.bytes_out = 5, 1000, 9000
    w.classes[2], w.classes[4], w.classes[5] = 6, 2, 1
    w.buckets[0], w.buckets[3], w.buckets[-1] = 4, 3, 1  # <= 1 ms, <= 25 ms, > 10 s
    w.duration_sum = 11.5
    w.overdue, w.overdue_total = 1, 3
    w.beat(1.0, 3, (1, 0, 2))
    w = sb.view(2)  # worker 0's successor: summed into the same series
    w.accepted, w.bytes_in, w.bytes_out = 1, 10, 90
    w.classes[2] = 1
    w.buckets[0] = 1
    w.duration_sum = 0.5
    w.beat(1.0, 1, (0, 1, 0))
    w = sb.view(1)
    w.draining = True
    w.classes[1] = 1
    w.beat(1.0, 0)
    sb.set_generation(2)
    sb.count_respawn("crash")
    sb.count_respawn("reload")
    sb.count_respawn("reload")
    sb.count_boot_failure()
    return sb


def families(text: str, parse=parse_text) -> dict:
    return {f.name: f for f in parse(text)}


def value(fams: dict, family: str, sample: str, **labels: str) -> float:
    found = [s.value for s in fams[family].samples if s.name == sample and s.labels == labels]
    assert len(found) == 1, (family, sample, labels, fams[family].samples)
    return found[0]


def scrape(sb: Scoreboard, openmetrics: bool = False,
           queues=(("127.0.0.1:8000", 3, 2048),)) -> dict:
    text = render(sb.meters(), sb.master(), queues, openmetrics).decode()
    if openmetrics:
        assert text.endswith("# EOF\n")
        return families(text, parse_openmetrics)
    assert "# EOF" not in text
    return families(text)


def test_families_types_and_help():
    for openmetrics in (False, True):
        fams = scrape(known_scoreboard(), openmetrics)
        assert {name: f.type for name, f in fams.items()} == {
            "preforkd_connections": "gauge",
            "preforkd_connections_accepted": "counter",
            "preforkd_http_requests": "counter",
            "preforkd_http_request_duration_seconds": "histogram",
            "preforkd_received_bytes": "counter",
            "preforkd_sent_bytes": "counter",
            "preforkd_worker_draining": "gauge",
            "preforkd_requests_overdue": "gauge",
            "preforkd_requests_overdue_logged": "counter",
            "preforkd_generation": "gauge",
            "preforkd_worker_respawns": "counter",
            "preforkd_worker_boot_failures": "counter",
            "preforkd_listen_queue": "gauge",
            "preforkd_listen_backlog": "gauge",
        }
        assert all(f.documentation for f in fams.values())


def test_per_worker_values_with_one_index_and_generation_summed():
    for openmetrics in (False, True):
        fams = scrape(known_scoreboard(), openmetrics)
        c = "preforkd_connections"
        assert value(fams, c, c, **W0, state="reading") == 1
        assert value(fams, c, c, **W0, state="writing") == 1
        assert value(fams, c, c, **W0, state="waiting") == 2
        assert value(fams, c, c, **W1, state="waiting") == 0
        accepted = "preforkd_connections_accepted"
        assert value(fams, accepted, accepted + "_total", **W0) == 6
        req = "preforkd_http_requests"
        got = {k: value(fams, req, req + "_total", **W0, **{"class": k})
               for k in ("1xx", "2xx", "3xx", "4xx", "5xx")}
        assert got == {"1xx": 0, "2xx": 7, "3xx": 0, "4xx": 2, "5xx": 1}
        assert value(fams, req, req + "_total", **W1, **{"class": "1xx"}) == 1
        assert value(fams, "preforkd_received_bytes", "preforkd_received_bytes_total",
                     **W0) == 1010
        assert value(fams, "preforkd_sent_bytes", "preforkd_sent_bytes_total", **W0) == 9090
        d = "preforkd_worker_draining"
        assert (value(fams, d, d, **W0), value(fams, d, d, **W1)) == (0, 1)
        o = "preforkd_requests_overdue"
        assert (value(fams, o, o, **W0), value(fams, o, o, **W1)) == (1, 0)
        assert value(fams, o + "_logged", o + "_logged_total", **W0) == 3


def test_duration_histogram_is_cumulative_with_fixed_buckets():
    fams = scrape(known_scoreboard())
    h = "preforkd_http_request_duration_seconds"
    buckets = [(s.labels["le"], s.value) for s in fams[h].samples
               if s.name == h + "_bucket" and s.labels["worker"] == "0"]
    assert [float(le) for le, _ in buckets] == [*DURATION_BUCKETS, float("inf")]
    assert [n for _, n in buckets] == [5, 5, 5, 8, 8, 8, 8, 8, 8, 8, 8, 8, 9]
    assert value(fams, h, h + "_count", **W0) == 9
    assert value(fams, h, h + "_sum", **W0) == 12.0
    assert value(fams, h, h + "_count", **W1) == 0


def test_master_values_and_listen_queues():
    for openmetrics in (False, True):
        fams = scrape(known_scoreboard(), openmetrics)
        assert value(fams, "preforkd_generation", "preforkd_generation") == 2
        r = "preforkd_worker_respawns"
        assert {s.labels["reason"]: s.value for s in fams[r].samples} == {
            "crash": 1, "timeout": 0, "recycle": 0, "reload": 2}
        b = "preforkd_worker_boot_failures"
        assert value(fams, b, b + "_total") == 1
        q = {"listener": "127.0.0.1:8000"}
        assert value(fams, "preforkd_listen_queue", "preforkd_listen_queue", **q) == 3
        assert value(fams, "preforkd_listen_backlog", "preforkd_listen_backlog", **q) == 2048


def test_no_worker_and_no_listener_still_parses():
    sb = Scoreboard(2)
    fams = scrape(sb, queues=())
    assert "preforkd_listen_queue" not in fams and "preforkd_connections" not in fams
    assert value(fams, "preforkd_generation", "preforkd_generation") == 0
    scrape(sb, openmetrics=True, queues=())


def test_listener_names_are_escaped():
    fams = scrape(Scoreboard(1), queues=(('unix:/tmp/a"b\\c', 0, 5),))
    assert fams["preforkd_listen_queue"].samples[0].labels == {"listener": 'unix:/tmp/a"b\\c'}


def test_listen_queue_of_a_tcp_listener_from_tcp_info(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(7)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "s"))
    unix.listen(3)
    clients = [socket.create_connection(sock.getsockname()) for _ in range(2)]
    try:
        listeners = [Listener(sock, "tcp"), Listener(unix, "unix")]
        name = f"127.0.0.1:{sock.getsockname()[1]}"
        assert listen_queues(listeners) == [(name, 2, 7)]  # (unix sockets: left out)
        sock.close()
        assert listen_queues(listeners) == []  # a closed listener (a draining worker)
    finally:
        for c in clients:
            c.close()
        sock.close()
        unix.close()


def test_accept_negotiation():
    def accept(v: bytes) -> list[tuple[bytes, bytes]]:
        return [(b"Host", b"x"), (b"Accept", v)]

    prometheus = (b"application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                  b"version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    assert wants_openmetrics(accept(prometheus))
    assert wants_openmetrics([(b"ACCEPT", b"Application/OpenMetrics-Text")])
    assert not wants_openmetrics(accept(b"text/plain;version=0.0.4"))
    assert not wants_openmetrics(accept(b"application/openmetrics-text;q=0, text/plain"))
    assert not wants_openmetrics([(b"Host", b"x")])


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/error":
        raise RuntimeError("fails on purpose")
    start_response("404 Not Found" if path == "/missing" else "200 OK",
                   [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def get(srv, target: str, accept: str = "") -> tuple[bytes, bool]:
    extra = f"Accept: {accept}\r\n" if accept else ""
    return exchange(srv, [f"GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()])


def test_the_server_counts_responses_by_class_and_times_requests(caplog):
    srv = make_server(app, metrics_path="/metrics")
    srv.host.scoreboard.claim(0, 4711, 0, 1, 0.0)
    for target in ("/", "/", "/missing", "/error", "/?q=1"):
        get(srv, target)
    exchange(srv, [b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n"])  # a 400
    out, _ = get(srv, "/metrics")
    resp = parse_responses(out)[0]
    assert resp.headers["content-type"] == TEXT_TYPE
    fams = families(resp.body.decode())
    labels = {"worker": "0", "generation": "1"}
    req = "preforkd_http_requests"
    got = {s.labels["class"]: s.value for s in fams[req].samples}
    assert got == {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 2, "5xx": 1}
    h = "preforkd_http_request_duration_seconds"
    assert value(fams, h, h + "_count", **labels) == 5  # (not the refused one)
    assert 0 < value(fams, h, h + "_sum", **labels) < 1
    # the scrape itself is counted once it is sent
    out, _ = get(srv, "/metrics", "application/openmetrics-text; version=1.0.0")
    resp = parse_responses(out)[0]
    assert resp.headers["content-type"] == OPENMETRICS_TYPE
    fams = families(resp.body.decode(), parse_openmetrics)
    assert value(fams, req, req + "_total", **labels, **{"class": "2xx"}) == 4


def test_metrics_on_installs_the_hooks_and_off_installs_none():
    on = make_server(app, metrics_path="/metrics")
    assert on.observing and on.observe == on.meter.response
    assert on.host.byte_meter is on.slot
    assert b"/metrics" in on.routes
    off = make_server(app)
    assert not off.observing and off.meter is None and off.host.byte_meter is None
    get(off, "/")
    assert off.slot.classes == [0] * 10 and off.slot.buckets == [0] * 13


def test_metrics_and_access_log_together(tmp_path):
    log = tmp_path / "access.log"
    srv = make_server(app, metrics_path="/metrics", access_log=str(log))
    get(srv, "/")
    srv.access.flush()
    assert srv.slot.classes[2] == 1 and " 200 " in log.read_text()


def test_durations_land_in_their_buckets():
    class Driver:
        request = None
        started = 0.0

    class Loop:
        now = 0.0
        call_soon = None

    sb = Scoreboard(1)
    slot = sb.view(0)
    meter = RequestMeter(slot, Loop())
    d = Driver()
    for ago in (0.0, 0.3, 20.0):
        d.started = time.monotonic() - ago
        meter.response(d, None, 200, 0)
    assert slot.buckets[0] == 1  # le 0.001
    assert slot.buckets[DURATION_BUCKETS.index(0.5)] == 1
    assert slot.buckets[-1] == 1  # +Inf
    meter.error(d, 408)  # no request: counted, not timed
    assert slot.classes[4] == 1 and sum(slot.buckets) == 3


def test_responses_of_the_turn_their_requests_came_in_are_timed_at_its_end():
    class Driver:
        request = None

    class Loop:
        def __init__(self) -> None:
            self.now = time.monotonic()
            self.soon: list = []

        def call_soon(self, fn) -> None:
            self.soon.append(fn)

    sb = Scoreboard(1)
    slot, loop = sb.view(0), Loop()
    meter = RequestMeter(slot, loop)
    d = Driver()
    loop.now -= 0.3  # (a turn that has taken 300 ms so far: an app computing inline)
    d.started = loop.now
    for _ in range(16):  # a pipelined batch: one end-of-turn timing
        meter.response(d, None, 200, 0)
    assert slot.classes[2] == 16 and sum(slot.buckets) == 0 and len(loop.soon) == 1
    loop.now = time.monotonic()  # (the end-of-turn call may come after the next poll)
    loop.soon.pop()()
    assert slot.buckets[DURATION_BUCKETS.index(0.5)] == 16
    assert 16 * 0.3 <= slot.duration_sum < 16 * 0.31
    d.started = loop.now = time.monotonic()
    meter.response(d, None, 404, 0)  # the next turn schedules its own
    assert len(loop.soon) == 1 and slot.classes[4] == 1
