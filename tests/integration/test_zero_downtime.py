"""Operations under load drop nothing: scripts/loadgen (no retries, half POSTs on reused
keep-alive connections) runs while the master reloads, stops and replaces workers."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time

import pytest

from harness import Load, serving_counts, wait_until

pytestmark = pytest.mark.slow

APP = ("--app", "preforkd.examples.checksum:app")


def target(srv) -> str:
    return f"{srv.address[0]}:{srv.address[1]}"


def reload_times(srv, generations, pause: float) -> None:
    """HUP once per generation, each once the one before serves, `pause` s apart."""
    for gen in generations:
        srv.signal(signal.SIGHUP)
        srv.wait_event("reloaded", gen=gen, timeout=15)
        time.sleep(pause)


@pytest.mark.parametrize("mode", [(), ("--threads", "4")], ids=["inline", "threads"])
def test_ten_hups_under_load_drop_nothing(server, mode):
    srv = server("-w", "2", *mode, *APP)
    first = srv.wait_ready(2)
    load = Load(target(srv), 8.0, "--keepalive", "8", "--fresh", "8")
    time.sleep(1.0)
    reload_times(srv, range(2, 12), 0.3)
    report = load.result()
    assert report["failed"] == 0, report
    assert report["ok"] > 1000
    ready = {g: srv.wait_ready(2, gen=g) for g in range(1, 12)}
    assert ready[1] == first
    for g in range(1, 11):  # every worker of every generation was replaced
        assert not set(ready[g]) & set(ready[g + 1])
        for pid in ready[g]:
            wait_until(lambda p=pid: not os.path.exists(f"/proc/{p}/cmdline")
                       or "preforkd" not in open(f"/proc/{p}/cmdline").read(),
                       timeout=10, what=f"old worker {pid} gone")
    assert srv.proc.poll() is None and srv.workers() == sorted(ready[11])
    counts = serving_counts(srv.events())
    assert min(counts[counts.index(2):]) >= 2, counts  # never fewer than N serving


def test_graceful_stop_serves_or_refuses_new_connections_and_finishes_in_flight(server):
    srv = server("-w", "1", *APP)
    srv.wait_ready(1)
    slow = http.client.HTTPConnection(*srv.address, timeout=10)
    slow.request("GET", "/slow?ms=1500")
    time.sleep(0.2)  # the worker is inside the slow request now
    outcomes: list[str] = []

    def knock() -> None:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            outcomes.append(_one_fresh_request(srv.address))
            time.sleep(0.05)

    t = threading.Thread(target=knock)
    t.start()
    time.sleep(0.3)
    srv.signal(signal.SIGTERM)
    answer = slow.getresponse()
    assert answer.status == 200 and len(answer.read()) == 84
    slow.close()  # (kept alive: the drain began while its head went out)
    t.join()
    assert srv.wait_exit(10) == 0
    assert "reset" not in outcomes and "closed" not in outcomes, outcomes
    assert "served" in outcomes and outcomes[-1] == "refused", outcomes


def _one_fresh_request(address, path: str = "/fast") -> str:
    try:
        s = socket.create_connection(address, timeout=5)
    except ConnectionRefusedError:
        return "refused"
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        data = _read_all(s)
    except ConnectionResetError:
        return "reset"
    finally:
        s.close()
    return "served" if data.startswith(b"HTTP/1.1 200 OK") else "closed"


def _read_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def test_reload_to_a_broken_app_under_load_keeps_serving(server, tmp_path):
    srv = server(config='workers = 2\napp = "preforkd.examples.checksum:app"\n')
    old = srv.wait_ready(2)
    load = Load(target(srv), 4.0)
    time.sleep(0.5)
    srv.config_path.write_text('workers = 2\napp = "brokenapp:app"\n')
    result = srv.cli("reload")
    assert result.returncode == 1 and "broken on purpose" in result.stderr
    report = load.result()
    assert report["failed"] == 0, report
    assert srv.workers() == sorted(old)
    srv.allow_traceback = True
    srv.allowed_errors += ["boot-failed", "reload-failed", "event=exited"]


def test_sigkill_workers_under_load_fails_only_their_connections(server):
    srv = server("-w", "2", *APP)
    srv.wait_ready(2)
    clients = 12
    load = Load(target(srv), 6.0, "--keepalive", "6", "--fresh", "6", "--slow-ratio", "0")
    kills = 0
    time.sleep(0.5)
    for _ in range(8):
        before = srv.workers()
        os.kill(before[kills % 2], signal.SIGKILL)
        kills += 1
        wait_until(lambda b=before: len(srv.workers()) == 2 and srv.workers() != b,
                   timeout=5, what="the killed worker replaced")
        time.sleep(0.5)
    report = load.result()
    reasons = {k for k, v in report["by_reason"].items() if v}
    assert reasons <= {"reset", "closed"}, report
    assert report["failed"] <= kills * clients, report
    assert report["ok"] > 500
    srv.allowed_errors += ["killed by SIGKILL"]


def test_sd_notify_messages_in_order(server, tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(10)
    srv = server("-w", "2", env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
    srv.wait_ready(2)
    first = sock.recv(4096).decode()
    srv.signal(signal.SIGHUP)
    reloading, ready_again = sock.recv(4096).decode(), sock.recv(4096).decode()
    srv.signal(signal.SIGTERM)
    stopping = sock.recv(4096).decode()
    assert srv.wait_exit() == 0
    assert first.startswith("READY=1\n") and "STATUS=serving, 2 workers" in first
    fields = dict(line.split("=", 1) for line in reloading.splitlines())
    assert fields["RELOADING"] == "1"
    usec = int(fields["MONOTONIC_USEC"])  # CLOCK_MONOTONIC, as systemd compares it
    assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 30
    assert ready_again.startswith("READY=1\n") and "generation 2 serving" in ready_again
    assert stopping.startswith("STOPPING=1\n")
    sock.close()


@pytest.mark.parametrize("limit,reason", [
    (("--max-requests", "50"), "max_requests"),
    (("--max-worker-lifetime", "2"), "max_worker_lifetime"),
    (("--max-worker-rss", "80"), "max_worker_rss"),
], ids=["requests", "lifetime", "rss"])
def test_recycling_under_load_drops_nothing_and_never_dips(server, limit, reason):
    srv = server("-w", "2", *APP, *limit)
    first = srv.wait_ready(2)
    load = Load(target(srv), 6.0, "--slow-ratio", "0.01")
    if reason == "max_worker_rss":
        for _ in range(4):  # whichever worker gets these grows past the limit
            assert _one_fresh_request(srv.address, "/alloc?mb=40") == "served"
    wait_until(lambda: f"reason={reason}" in srv.log(), timeout=10, what="a recycle")
    report = load.result()
    assert report["failed"] == 0, report
    events = srv.events()
    recycled = [e for e in events if e["event"] == "recycle"]
    assert recycled and all(e["reason"] == reason for e in recycled)
    assert not set(first) <= {int(p) for p in srv.workers()}  # someone was replaced
    counts = serving_counts(events)
    assert min(counts[counts.index(2):]) >= 2, counts  # surge first: never fewer than N


def _accepted(srv, total: int) -> list[int]:
    import json

    def counts() -> list[int] | None:
        out = srv.cli("status", "--json")
        got = [w["accepted"] for w in json.loads(out.stdout)["workers"]]
        return got if sum(got) >= total else None

    return wait_until(counts, what=f"heartbeats carrying {total} accepts")


@pytest.mark.parametrize("accept", ["exclusive", "reuseport", "shared"])
def test_accept_strategies_spread_connections(server, accept):
    srv = server("-w", "4", *APP, "--accept", accept, reuseport=accept == "reuseport")
    srv.wait_ready(4)
    for _ in range(2000):
        assert _one_fresh_request(srv.address) == "served"
    counts = _accepted(srv, 2000)
    print(f"accept={accept} spread={counts}")
    if accept != "shared":  # (the herd's winner is the kernel's choice: no promise)
        assert min(counts) >= 200, counts  # every worker takes at least 10 %


def test_ttou_and_ttin_under_load_drop_nothing(server):
    srv = server("-w", "3", *APP)
    srv.wait_ready(3)
    load = Load(target(srv), 5.0)
    time.sleep(0.5)
    for sig, want in ((signal.SIGTTOU, 2), (signal.SIGTTOU, 1), (signal.SIGTTIN, 2)):
        srv.signal(sig)
        wait_until(lambda w=want: len(srv.workers()) == w, timeout=10, what=f"{want} workers")
        time.sleep(0.5)
    report = load.result()
    assert report["failed"] == 0, report


def test_reuseport_hup_and_recycling_under_load_drop_nothing(server):
    srv = server("-w", "2", *APP, "--accept", "reuseport", "--max-requests", "200",
                 reuseport=True)
    srv.wait_ready(2)
    load = Load(target(srv), 6.0)
    time.sleep(0.5)
    reload_times(srv, range(2, 5), 0.5)
    report = load.result()
    assert report["failed"] == 0, report
    assert any(e["event"] == "recycle" for e in srv.events())
