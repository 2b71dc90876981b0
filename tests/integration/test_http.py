"""HTTP/1.1 against a real preforkd with real clients (http.client and raw sockets)."""

from __future__ import annotations

import http.client
import select
import signal
import socket
import time

import pytest

from harness import wait_until


@pytest.fixture
def http_server(server):
    srv = server("-w", "2", "--app", "wsgiapps:app", "--header-timeout", "1")
    srv.wait_ready(2)
    return srv


def client(srv, timeout: float = 10.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(*srv.address, timeout=timeout)


def read_until_closed(s: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_keep_alive_reuses_one_connection_for_1000_requests(http_server):
    c = client(http_server)
    c.connect()
    local = c.sock.getsockname()
    for _ in range(1000):
        c.request("GET", "/")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"Hello, World!"
    assert c.sock.getsockname() == local  # never reconnected
    c.close()


def test_environ_names_both_ends_of_the_connection(http_server):
    conn = client(http_server)
    for version in ("HTTP/1.1", "HTTP/1.1", "HTTP/1.1"):  # fresh, then kept-alive requests
        conn.request("GET", "/where")
        assert conn.getresponse().read().decode() == (
            f"127.0.0.1 127.0.0.1 {http_server.address[1]} {version}")
    conn.close()
    with socket.create_connection(http_server.address, timeout=10) as s:
        s.sendall(b"GET /where HTTP/1.0\r\n\r\n")
        assert read_until_closed(s).endswith(
            f"127.0.0.1 127.0.0.1 {http_server.address[1]} HTTP/1.0".encode())


def test_http_over_a_unix_socket(server, tmp_path):
    path = tmp_path / "http.sock"
    srv = server("-b", f"unix:{path}", "--app", "wsgiapps:app", "-w", "1", bind=False)
    srv.wait_ready(1)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        for _ in range(3):  # past the first response, where TCP connections get NODELAY
            s.sendall(b"GET /where HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"HTTP/1.1"):
                chunk = s.recv(4096)
                assert chunk, data
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b" localhost 80 HTTP/1.1")


def test_20_pipelined_requests_in_one_send(http_server):
    with socket.create_connection(http_server.address, timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 19
                  + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_until_closed(s)
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 20
    assert data.count(b"Hello, World!") == 20


def test_1mb_upload_echo(http_server):
    body = bytes(range(256)) * 4096
    c = client(http_server)
    c.request("POST", "/echo", body=body)
    r = c.getresponse()
    assert r.status == 200 and r.read() == body
    c.close()


def test_chunked_upload(http_server):
    c = client(http_server)
    parts = [b"a" * 1000, b"b" * 70000, b"c"]
    c.request("POST", "/echo", body=iter(parts), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    assert r.read() == b"".join(parts)
    c.close()


def test_streamed_generator_response(http_server):
    c = client(http_server)
    c.request("GET", "/stream")
    r = c.getresponse()
    assert r.getheader("Transfer-Encoding") == "chunked"
    assert r.read() == b"".join(f"line {i}\n".encode() for i in range(100))
    c.close()


def test_head(http_server):
    c = client(http_server)
    c.request("HEAD", "/")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Length") == "13" and r.read() == b""
    c.request("GET", "/")  # the connection is still in sync
    assert c.getresponse().read() == b"Hello, World!"
    c.close()


def test_expect_100_continue(http_server):
    with socket.create_connection(http_server.address, timeout=10) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        data = s.recv(1000)
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"hello")


def test_slowloris_is_cut_off_while_others_are_served(http_server):
    slow = socket.create_connection(http_server.address, timeout=10)
    slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    c = client(http_server)
    for _ in range(20):  # meanwhile everyone else is served at once
        c.request("GET", "/")
        assert c.getresponse().read() == b"Hello, World!"
    for _ in range(5):
        try:
            slow.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
        time.sleep(0.1)
    data = read_until_closed(slow)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - t0 < 4.0  # header_timeout is 1 s (swept once a second)
    slow.close()
    c.close()


@pytest.mark.parametrize("rate", [0, 200])
def test_a_trickled_body_is_cut_off_by_min_body_rate(server, rate):
    """Each byte comes well within body_timeout, so only min_body_rate can end it: after
    the first body_timeout (1 s) plus received/rate seconds. Off (0), it goes on."""
    srv = server("-w", "1", "--app", "wsgiapps:app", "--body-timeout", "1",
                 "--min-body-rate", str(rate))
    srv.wait_ready(1)
    slow = socket.create_connection(srv.address, timeout=10)
    slow.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    t0 = time.monotonic()
    cut = False
    while time.monotonic() - t0 < 3.5:
        try:
            slow.sendall(b"b")
        except OSError:
            cut = True
            break
        if select.select([slow], [], [], 0.3)[0]:
            cut = True
            break
    if rate:
        assert cut and read_until_closed(slow).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - t0 < 3.0  # 1 s + ~10 bytes / 200 B/s, swept each second
    else:
        assert not cut  # body_timeout alone never ends a body that keeps coming
    slow.close()


def test_app_exception_gives_500_then_healthy_service(http_server):
    c = client(http_server)
    c.request("GET", "/error")
    r = c.getresponse()
    assert r.status == 500 and r.getheader("Connection") == "close"
    r.read()
    c.close()
    http_server.allow_traceback = True
    http_server.allowed_errors.append("event=app-exception")
    c = client(http_server)
    for _ in range(10):
        c.request("GET", "/")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"Hello, World!"
    c.close()
    assert "the test app fails on purpose" in http_server.log()


def test_garbage_gets_400_and_close_others_unaffected(http_server):
    with socket.create_connection(http_server.address, timeout=10) as s:
        s.sendall(b"\x16\x03\x01garbage\r\n\r\n")
        assert read_until_closed(s).startswith(b"HTTP/1.1 400 ")
    c = client(http_server)
    c.request("GET", "/")
    assert c.getresponse().status == 200
    c.close()


@pytest.mark.parametrize("name,request_bytes,status", [
    ("target of 70 KB", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("endless header", b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Long: " + b"b" * 200_000, 431),
    ("body over the limit, still coming",
     b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000000\r\n\r\n" + b"c" * 300_000,
     413),
], ids=["414", "431", "413"])
def test_error_answers_reach_a_client_that_is_still_sending(http_server, name, request_bytes,
                                                            status):
    """The answer is sent, then a FIN, and what the client still sends is dropped: never
    a RST in place of the answer (a lingering close)."""
    s = socket.create_connection(http_server.address, timeout=10)
    s.sendall(request_bytes)
    data = read_until_closed(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 %d " % status), (name, data[:80])
    assert b"connection: close" in data


def test_health_path(http_server):
    c = client(http_server)
    c.request("GET", "/healthz")
    r = c.getresponse()
    assert r.status == 200 and r.read() == b"ok\n"
    c.close()


def test_graceful_stop_finishes_in_flight_request_with_close(http_server):
    s = socket.create_connection(http_server.address, timeout=10)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe")
    idle = client(http_server)
    idle.request("GET", "/")
    idle.getresponse().read()
    http_server.signal(signal.SIGTERM)
    wait_until(lambda: "mode=graceful" in http_server.log(), what="graceful stop begun")
    time.sleep(0.2)  # let the workers act on it
    s.sendall(b"llo")
    data = read_until_closed(s)
    assert data.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in data
    assert data.endswith(b"hello")
    # The idle keep-alive connection was not closed under a request that may have been
    # on its way: its next request is answered, with Connection: close.
    idle.request("POST", "/echo", body=b"late")
    resp = idle.getresponse()
    assert resp.status == 200 and resp.read() == b"late"
    assert resp.getheader("connection") == "close"
    assert http_server.wait_exit(10) == 0
    s.close()


def test_access_log_and_reopen(server, tmp_path):
    log = tmp_path / "access.log"
    srv = server("-w", "1", "--app", "wsgiapps:app", "--access-log", str(log))
    srv.wait_ready(1)
    c = client(srv)
    c.request("GET", "/?q=1", headers={"User-Agent": "pytest-agent", "Referer": "http://r/"})
    c.getresponse().read()
    wait_until(lambda: log.exists() and b"pytest-agent" in log.read_bytes(), what="access line")
    line = log.read_text().splitlines()[0]
    assert '"GET /?q=1 HTTP/1.1" 200 13 "http://r/" "pytest-agent" rt_us=' in line
    assert line.startswith("127.0.0.1 - - [") and line.endswith("worker=0")
    log.rename(tmp_path / "access.log.1")
    srv.signal(signal.SIGUSR1)
    wait_until(lambda: log.exists(), what="access log reopened")
    c.request("GET", "/second")
    c.getresponse().read()
    wait_until(lambda: b"/second" in log.read_bytes(), what="line in the new file")
    c.close()


def test_json_access_log(server, tmp_path):
    import json

    log = tmp_path / "access.json"
    srv = server("-w", "1", "--app", "wsgiapps:app", "--access-log", str(log),
                 "--access-log-format", "json")
    srv.wait_ready(1)
    c = client(srv)
    c.request("GET", "/")
    c.getresponse().read()
    c.close()
    wait_until(lambda: log.exists() and log.read_text().strip(), what="json line")
    entry = json.loads(log.read_text().splitlines()[0])
    assert entry["status"] == 200 and entry["bytes"] == 13 and entry["worker"] == 0
    assert entry["duration_us"] >= 0 and entry["target"] == "/"


def test_default_serves_the_welcome_page(server):
    srv = server("-w", "1")
    srv.wait_ready(1)
    c = client(srv)
    c.request("GET", "/")
    r = c.getresponse()
    assert r.status == 200 and b"Welcome to preforkd" in r.read()
    c.close()


def test_stuck_request_is_named_when_the_worker_is_killed(server):
    srv = server("-w", "1", "--app", "sleepyapp:app", "--timeout", "1")
    (pid,) = srv.wait_ready(1)
    s = socket.create_connection(srv.address, timeout=10)
    s.sendall(b"GET /sleep/forever HTTP/1.1\r\nHost: x\r\n\r\n")
    srv.wait_event("timeout", pid=pid)
    wait_until(lambda: "request='GET /sleep/forever'" in srv.log(), what="request named")
    s.close()
    srv.allow_traceback = True
    srv.allowed_errors += ["event=timeout", "event=exited"]


def test_accept_spread_over_workers(server):
    """4 workers, 4,000 short connections one after another: EPOLLEXCLUSIVE alone would
    hand nearly all to worker 0; no worker may take more than 1.5x its fair share."""
    import json

    srv = server("-w", "4", "--app", "wsgiapps:app")
    srv.wait_ready(4)
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for _ in range(4000):
        with socket.create_connection(srv.address, timeout=10) as s:
            s.sendall(request)
            read_until_closed(s)

    def accepted() -> list[int] | None:
        out = srv.cli("status", "--json")
        counts = [w["accepted"] for w in json.loads(out.stdout)["workers"]]
        return counts if sum(counts) == 4000 else None

    counts = wait_until(accepted, what="heartbeats carrying all 4,000 accepts")
    assert max(counts) <= 1.5 * 1000, counts


def test_status_path_counts_connection_states(server):
    import json

    srv = server("-w", "1", "--app", "wsgiapps:app", "--status-path", "/_status")
    srv.wait_ready(1)
    idle = client(srv)
    idle.request("GET", "/")
    idle.getresponse().read()
    partial = socket.create_connection(srv.address, timeout=10)
    partial.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")

    def doc() -> dict | None:
        c = client(srv)
        c.request("GET", "/_status")
        r = c.getresponse()
        data = json.loads(r.read())
        c.close()
        (w,) = data["workers"]
        return w if (w["waiting"], w["reading"]) == (1, 1) else None

    w = wait_until(doc, what="one waiting and one reading connection in the status")
    assert w["requests"] >= 1 and w["generation"] == 1 and w["heartbeat_age"] < 2
    idle.close()
    partial.close()
