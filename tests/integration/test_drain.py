"""The drain protocol: a stopping server fails its health check while it still serves
(drain_delay), then stops listening; a reloading one never fails it."""

from __future__ import annotations

import http.client
import signal
import threading
import time

from harness import wait_until

APP = ("--app", "preforkd.examples.checksum:app")


def status_of(srv, path: str) -> int | None:
    """A fresh connection's answer to GET path (None: refused or reset)."""
    c = http.client.HTTPConnection(*srv.address, timeout=5)
    try:
        c.request("GET", path)
        return c.getresponse().status
    except OSError:
        return None
    finally:
        c.close()


def test_stop_fails_health_at_once_serves_through_drain_delay_then_refuses(server):
    srv = server("-w", "2", "--drain-delay", "1.5", *APP)
    srv.wait_ready(2)
    kept = http.client.HTTPConnection(*srv.address, timeout=5)  # a balancer's pooled one
    kept.request("GET", "/")
    kept.getresponse().read()
    assert status_of(srv, "/healthz") == 200
    srv.signal(signal.SIGTERM)
    t0 = time.monotonic()
    wait_until(lambda: status_of(srv, "/healthz") == 503, timeout=1.0, what="health 503")
    while time.monotonic() - t0 < 1.2:  # still serving new and kept connections
        assert status_of(srv, "/") == 200
        kept.request("GET", "/")
        r = kept.getresponse()
        assert r.status == 200 and r.getheader("Connection") != "close"
        r.read()
        time.sleep(0.1)
    # After the delay: refused (no listener), while the kept connection still gets its
    # answer, with Connection: close (it is idle: a drain never closes it under a request
    # that may be on its way).
    wait_until(lambda: status_of(srv, "/") is None, timeout=3.0, what="listeners closed")
    assert time.monotonic() - t0 >= 1.5
    kept.request("GET", "/")
    r = kept.getresponse()
    assert r.status == 200 and r.getheader("Connection") == "close"
    r.read()
    kept.close()
    assert srv.wait_exit(10) == 0


def test_reload_never_fails_health(server):
    """Probes on a kept-alive connection (as a balancer's checks often are) reach the old
    generation while it drains: it answers 200 with Connection: close."""
    srv = server("-w", "2", "--drain-delay", "1", *APP)
    srv.wait_ready(2)
    seen: list[int | None] = []
    done = threading.Event()

    def probe() -> None:
        c = None
        while not done.is_set():
            c = c or http.client.HTTPConnection(*srv.address, timeout=5)
            try:
                c.request("GET", "/healthz")
                r = c.getresponse()
                r.read()
                seen.append(r.status)
                if r.getheader("Connection") == "close":
                    c.close()
                    c = None
            except OSError:
                seen.append(None)
                c.close()
                c = None
            time.sleep(0.01)

    t = threading.Thread(target=probe)
    t.start()
    try:
        for gen in (2, 3):
            time.sleep(0.2)
            srv.signal(signal.SIGHUP)
            srv.wait_event("reloaded", gen=gen, timeout=15)
        time.sleep(0.3)  # (the old generation's workers drain meanwhile)
    finally:
        done.set()
        t.join()
    assert len(seen) > 20 and set(seen) == {200}, set(seen)
