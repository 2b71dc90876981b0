"""The echo protocol under concurrency, half-close, backpressure and reload."""

from __future__ import annotations

import selectors
import signal
import socket
import threading
import time

import pytest

from harness import echo_roundtrip, wait_until


def open_many(address: tuple[str, int], n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(address, timeout=10)
        socks.append(s)
    return socks


def echo_all(socks: list[socket.socket], rounds: int, deadline_s: float = 60.0) -> None:
    """Send a distinct message on every socket, then read every echo, `rounds` times.

    Non-blocking and multiplexed, so thousands of sockets are in flight at once."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
    deadline = time.monotonic() + deadline_s
    for r in range(rounds):
        want = {}
        for i, s in enumerate(socks):
            msg = f"round {r} socket {i} ".encode() * 2
            s.sendall(msg)  # small: fits the socket buffer at once
            want[s] = msg
            sel.register(s, selectors.EVENT_READ)
        got = {s: b"" for s in socks}
        pending = len(socks)
        while pending:
            assert time.monotonic() < deadline, f"{pending} echoes missing"
            for key, _ in sel.select(1.0):
                s = key.fileobj
                data = s.recv(65536)
                assert data, "connection closed by the server"
                got[s] += data
                if len(got[s]) >= len(want[s]):
                    assert got[s] == want[s]
                    sel.unregister(s)
                    pending -= 1
    sel.close()


def test_echo_1000_concurrent(server):
    srv = server("-w", "4", "--protocol", "echo")
    srv.wait_ready(4)
    socks = open_many(srv.address, 1000)
    try:
        echo_all(socks, rounds=3)
    finally:
        for s in socks:
            s.close()


@pytest.mark.slow
def test_echo_10000_sockets_default_settings(server):
    """The seed's client: 10,000 sockets, three messages each, every echo checked."""
    srv = server("-w", "4", "--protocol", "echo")
    srv.wait_ready(4)
    socks = open_many(srv.address, 10000)
    try:
        echo_all(socks, rounds=3, deadline_s=120)
        status = srv.cli("status", "--json")
        import json

        data = json.loads(status.stdout)
        assert sum(w["accepted"] for w in data["workers"]) == 10000
    finally:
        for s in socks:
            s.close()


def test_half_close_gets_everything_then_eof(server):
    srv = server("-w", "1", "--protocol", "echo")
    srv.wait_ready(1)
    payload = bytes(range(256)) * 4096  # 1 MiB
    with socket.create_connection(srv.address, timeout=10) as s:
        got = bytearray()

        def reader() -> None:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return
                got.extend(chunk)

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        t.join(10)
        assert not t.is_alive()
        assert bytes(got) == payload


def _worker_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_client_that_never_reads_costs_bounded_memory(server):
    srv = server("-w", "1", "--protocol", "echo")
    (worker,) = srv.wait_ready(1)
    before = _worker_rss_kib(worker)
    s = socket.create_connection(srv.address, timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    chunk = b"x" * 65536
    sent = 0
    stalled_since = None
    deadline = time.monotonic() + 20
    # Push until the server stops reading (its buffer is full, so it paused us):
    while time.monotonic() < deadline:
        try:
            sent += s.send(chunk)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 0.5:
                break
            time.sleep(0.01)
    assert stalled_since is not None, "the server kept reading from a client that never reads"
    assert sent < 64 * 1024 * 1024
    grown = _worker_rss_kib(worker) - before
    assert grown < 8 * 1024, f"worker grew {grown} KiB for one slow reader"
    # meanwhile other clients are served
    with socket.create_connection(srv.address, timeout=5) as other:
        echo_roundtrip(other, b"not stalled")
    s.close()


def test_hup_under_load_loses_nothing(server):
    """200 clients keep sending through a reload: no reset, no lost or reordered byte."""
    srv = server("-w", "2", "--protocol", "echo", "--graceful-timeout", "30")
    old = srv.wait_ready(2)
    socks = open_many(srv.address, 200)
    errors: list[str] = []
    stop = threading.Event()
    rounds = [0]

    def client_loop() -> None:
        try:
            while not stop.is_set():
                echo_all(socks, rounds=1, deadline_s=20)
                rounds[0] += 1
        except Exception as e:  # reported below, with the reason
            errors.append(repr(e))

    t = threading.Thread(target=client_loop)
    t.start()
    try:
        wait_until(lambda: rounds[0] >= 3 or errors, what="traffic flowing")
        srv.signal(signal.SIGHUP)
        new = srv.wait_ready(2, gen=2)
        srv.wait_event("reloaded", gen=2)
        start = rounds[0]
        wait_until(lambda: rounds[0] >= start + 5 or errors, what="traffic after reload")
        # new connections go to the new generation
        with socket.create_connection(srv.address, timeout=5) as s:
            echo_roundtrip(s, b"new connection")
        # old workers holding clients are still alive (one with none may have left)
        assert any(p in srv.workers() for p in old)
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors
    for s in socks:
        s.close()
    wait_until(lambda: sorted(srv.workers()) == sorted(new), timeout=10,
               what="old workers exit once their clients leave")
