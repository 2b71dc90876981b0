"""admin_bind: health, status (and metrics) answered by the master, on a listener of their
own, while every worker is stuck in the app."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time

from harness import wait_until


def ask(path: str, target: str, method: str = "GET") -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(f"{method} {target} HTTP/1.1\r\nHost: admin\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), body


def test_the_master_answers_while_every_worker_is_stuck(server, tmp_path):
    admin = str(tmp_path / "admin.sock")
    srv = server("-w", "2", "--app", "preforkd.examples.checksum:app", "--admin-bind",
                 f"unix:{admin}", "--drain-delay", "1")
    srv.wait_ready(2)
    assert ask(admin, "/healthz") == (200, b"ok\n")
    status, body = ask(admin, "/status")
    assert status == 200 and len(json.loads(body)["workers"]) == 2
    assert ask(admin, "/elsewhere")[0] == 404 and ask(admin, "/healthz", "POST")[0] == 405
    assert ask(admin, "/healthz", "HEAD") == (200, b"")
    status, body = ask(admin, "/metrics")  # (metrics_path unset: /metrics there)
    assert status == 200 and b"preforkd_generation 1" in body
    # Both workers busy in a 2 s app call: the public listener answers nothing meanwhile.
    stuck = []
    for _ in range(2):
        c = http.client.HTTPConnection(*srv.address, timeout=10)
        c.request("GET", "/slow?ms=2000")
        stuck.append(c)
    time.sleep(0.3)
    t0 = time.monotonic()
    assert ask(admin, "/healthz") == (200, b"ok\n")
    assert time.monotonic() - t0 < 0.5
    for c in stuck:
        assert c.getresponse().status == 200
        c.close()
    srv.signal(signal.SIGTERM)  # stopping: the admin health says so at once
    wait_until(lambda: ask(admin, "/healthz")[0] == 503, timeout=1.0, what="admin 503")
    assert srv.wait_exit(10) == 0


def test_a_slow_admin_client_holds_nothing_up(server, tmp_path):
    admin = str(tmp_path / "admin.sock")
    srv = server("-w", "1", "--app", "wsgiapps:app", "--admin-bind", f"unix:{admin}")
    srv.wait_ready(1)
    idle = [socket.socket(socket.AF_UNIX) for _ in range(10)]
    for s in idle:
        s.connect(admin)
        s.sendall(b"GET /heal")  # and never more
    assert ask(admin, "/healthz") == (200, b"ok\n")
    srv.signal(signal.SIGHUP)  # the master's other work goes on
    srv.wait_event("reloaded", gen=2)
    for s in idle:
        s.close()
