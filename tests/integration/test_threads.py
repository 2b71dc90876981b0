"""threads = N: blocking apps without blocking the loop."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time

from harness import wait_until

APP = ("--app", "threadapps:app")


def get(srv, path: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection(*srv.address, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_eight_waits_run_side_by_side_and_health_answers_meanwhile(server):
    srv = server("-w", "1", "--threads", "8", *APP)
    srv.wait_ready(1)
    results: list = []
    t0 = time.monotonic()
    threads = [threading.Thread(target=lambda: results.append(get(srv, "/wait?ms=200")))
               for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    h0 = time.monotonic()
    assert get(srv, "/healthz")[0] == 200
    health = time.monotonic() - h0
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    assert [r[0] for r in results] == [200] * 8
    assert {r[2].split()[1] for r in results} == {b"True"}  # wsgi.multithread
    assert len({r[2].split()[0] for r in results}) == 8  # eight threads at once
    assert took < 0.9, took  # one after another would take 1.6 s
    assert health < 0.05, health


def test_streams_write_files_and_errors_as_inline(server):
    srv = server("-w", "1", "--threads", "2", *APP)
    srv.wait_ready(1)
    status, headers, body = get(srv, "/big?chunks=40")
    assert status == 200 and body == b"x" * 65536 * 40
    assert get(srv, "/big?chunks=1")[1]["content-length"] == "65536"  # one chunk: a length
    assert get(srv, "/big?chunks=0")[1]["content-length"] == "0"
    assert get(srv, "/write")[2] == b"one two three"
    assert get(srv, "/file")[2] == b"0123456789" * 10_000
    srv.allow_traceback = True
    srv.allowed_errors.append("event=app-exception")
    status, headers, _ = get(srv, "/error")
    assert status == 500 and headers["connection"] == "close"
    assert get(srv, "/")[2] == b"ok"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_slow_reader_of_a_big_stream_keeps_the_worker_small(server):
    srv = server("-w", "1", "--threads", "2", *APP)
    (pid,) = srv.wait_ready(1)
    get(srv, "/big?chunks=4")  # warm up
    idle = rss_kib(pid)
    s = socket.create_connection(srv.address, timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.sendall(b"GET /big?chunks=1600 HTTP/1.1\r\nHost: x\r\n\r\n")  # 100 MiB
    got = 0
    for _ in range(40):  # read slowly: 40 small reads over ~0.4 s
        got += len(s.recv(16384))
        time.sleep(0.01)
    assert rss_kib(pid) - idle < 8 * 1024, (idle, rss_kib(pid))
    assert got > 0
    s.close()  # the client goes: the thread stops pulling
    assert get(srv, "/")[2] == b"ok"
    assert get(srv, "/")[2] == b"ok"  # both threads are free again


def test_max_pending_answers_503_with_retry_after(server):
    srv = server("-w", "1", "--threads", "1", "--max-pending", "1", *APP)
    srv.wait_ready(1)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(get(srv, "/wait?ms=500")))
               for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)  # one running, one waiting
    status, headers, _ = get(srv, "/")
    assert status == 503 and headers["retry-after"] == "1"
    for t in threads:
        t.join()
    assert sorted(r[0] for r in results) == [200, 200]


def test_request_timeout_names_the_request_and_its_stack(server):
    srv = server("-w", "1", "--threads", "2", "--request-timeout", "0.3",
                 "--status-path", "/status", "--metrics-path", "/metrics", *APP)
    srv.wait_ready(1)
    slow = threading.Thread(target=get, args=(srv, "/wait?ms=3000"))
    slow.start()
    try:
        log = wait_until(lambda: "event=request-timeout" in srv.log() and srv.log(),
                         timeout=4)
        assert "request='GET /wait?ms=3000'" in log and "time.sleep" in log
        # Status and metrics show it while it runs (published with the next beat).
        wait_until(lambda: json.loads(get(srv, "/status")[2])["workers"][0]["overdue"] == 1,
                   timeout=3)
        page = get(srv, "/metrics")[2].decode()
        assert 'preforkd_requests_overdue{worker="0",generation="1"} 1' in page
    finally:
        slow.join()
    wait_until(lambda: json.loads(get(srv, "/status")[2])["workers"][0]["overdue"] == 0,
               timeout=3)
    page = get(srv, "/metrics")[2].decode()
    assert 'preforkd_requests_overdue_logged_total{worker="0",generation="1"} 1' in page


def test_graceful_stop_waits_for_running_app_calls(server):
    srv = server("-w", "1", "--threads", "2", *APP)
    srv.wait_ready(1)
    c = http.client.HTTPConnection(*srv.address, timeout=10)
    c.request("GET", "/wait?ms=1000")
    time.sleep(0.2)
    srv.signal(signal.SIGTERM)
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Connection") == "close"
    r.read()
    c.close()
    assert srv.wait_exit(10) == 0
