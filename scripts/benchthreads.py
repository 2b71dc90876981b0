"""scripts/bench threads: the thread pool against gunicorn gthread, and its hand-off cost.

- an app that waits 10 ms per request, 64 clients, 32 threads (one worker pinned):
  req/s of preforkd --threads 32 and gunicorn -k gthread --threads 32, against the
  ideal 32 / 10 ms = 3,200 req/s; meanwhile the health path's latency (p50, p99)
  from a separate client: preforkd answers it on the loop, gthread needs a thread;
- a hello-world app: preforkd --threads 8 against inline preforkd (the hand-off).
"""

from __future__ import annotations

import http.client
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

IDEAL = 32 / 0.010


def _probe(port: int, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            c.request("GET", "/healthz")
            c.getresponse().read()
            out.append((time.perf_counter() - t0) * 1e3)
        except OSError:
            pass
        finally:
            c.close()
        time.sleep(0.02)


def servers(venv: Path) -> dict[str, Any]:
    py = sys.executable

    def pf(app: str, *extra: str) -> Any:
        return lambda p, d: [py, "-m", "preforkd", "start", "-w", "1", "-b", f"127.0.0.1:{p}",
                             "--app", app, "--pid", str(d / "p.pid"), *extra]

    return {
        ("sleep10", "preforkd threads=32"): pf("benchapps:sleep10", "--threads", "32"),
        ("sleep10", "gunicorn gthread 32"): lambda p, d: [
            str(venv / "gunicorn"), "-w", "1", "-k", "gthread", "--threads", "32",
            "-b", f"127.0.0.1:{p}", "benchapps:sleep10"],
        ("hello", "preforkd inline"): pf("benchapps:wsgi"),
        ("hello", "preforkd threads=8"): pf("benchapps:wsgi", "--threads", "8"),
    }


def bench_threads(args: Any, bench: Any) -> list[dict]:
    samples: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="preforkd-bench-") as tmp:
        for rnd in range(args.rounds):
            for (app, name), make in servers(bench.VENV / "bin").items():
                d = Path(tmp) / f"{app}-{name.replace(' ', '_')}-{rnd}"
                d.mkdir()
                port = bench.free_port()
                srv = bench.Server(name.split()[0], make(port, d), port, d)
                health: list[float] = []
                stop = threading.Event()
                probe = threading.Thread(target=_probe, args=(port, stop, health))
                try:
                    bench.run_wrk(port, "keepalive", 1.0, d)  # warm-up
                    if app == "sleep10":
                        probe.start()
                    r = bench.run_wrk(port, "keepalive", args.duration, d)
                finally:
                    stop.set()
                    if probe.is_alive():
                        probe.join()
                    srv.stop()
                health.sort()
                r["health_p50"] = health[len(health) // 2] if health else float("nan")
                r["health_p99"] = health[int(len(health) * 0.99)] if health else float("nan")
                samples.setdefault((app, name), []).append(r)
                bench.log(f"bench: round {rnd + 1} {app:8} {name:20} {r['rps']:>9,.0f} req/s "
                          f"health p99 {r['health_p99']:.1f} ms")
    rows = []
    for (app, name), runs in samples.items():
        rows.append({"bench": "threads", "app": app, "server": name,
                     "rps": statistics.median(r["rps"] for r in runs),
                     "health_p50_ms": statistics.median(r["health_p50"] for r in runs),
                     "health_p99_ms": statistics.median(r["health_p99"] for r in runs),
                     "errors": sum(r["errors"] for r in runs), "rounds": len(runs)})
    _print(rows)
    return rows


def _print(rows: list[dict]) -> None:
    by = {(r["app"], r["server"]): r for r in rows}
    print(f"\n{'app':8} {'server':21} {'req/s':>9} {'health p50':>11} {'p99 ms':>7} "
          f"{'errors':>6}  ratios")
    for r in rows:
        if r["app"] == "sleep10":
            peer = by.get(("sleep10", "gunicorn gthread 32"))
            ratio = (f"×gthread {r['rps'] / peer['rps']:.2f}, ×ideal {r['rps'] / IDEAL:.2f}"
                     if peer and peer["rps"] else "")
            health = f"{r['health_p50_ms']:>11.2f} {r['health_p99_ms']:>7.2f}"
        else:
            peer = by.get(("hello", "preforkd inline"))
            ratio = f"×inline {r['rps'] / peer['rps']:.2f}" if peer and peer["rps"] else ""
            health = f"{'-':>11} {'-':>7}"
        print(f"{r['app']:8} {r['server']:21} {r['rps']:>9,.0f} {health} {r['errors']:>6}  "
              f"{ratio}")
