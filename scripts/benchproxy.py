"""scripts/bench proxy: what the PROXY protocol costs, against the same server without it.

The header comes once per connection, so its cost shows where connections are short:
one request per connection (scripts/closeload.c, 64 at a time, a PROXY v2 header
before each request when on). Requests after the first on a kept-alive connection pay
nothing: the wrapper has stepped out of the way.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def _load(bench: Any, port: int, duration: float, proxy: bool) -> dict:
    """scripts/closeload.c: one request per connection, a PROXY v2 header first if asked."""
    out = subprocess.run(["taskset", "-c", bench.CLIENT_CPU, str(bench.BENCH / "closeload"),
                          str(port), "64", f"{duration:g}", "1" if proxy else "0"],
                         capture_output=True, text=True, check=True).stdout
    fields = dict(kv.split("=") for kv in out.split())
    return {"rps": int(fields["requests"]) / float(fields["seconds"]),
            "errors": int(fields["errors"])}


def bench_proxy(args: Any, bench: Any) -> list[dict]:
    py = sys.executable
    runs = {"off": ((), False), "v2": (("--proxy-protocol", "v2"), True)}
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="preforkd-bench-") as tmp:
        for rnd in range(args.rounds):
            for name, (extra, proxy) in runs.items():
                d = Path(tmp) / f"{name}-{rnd}"
                d.mkdir()
                port = bench.free_port()
                srv = bench.Server("preforkd", [py, "-m", "preforkd", "start", "-w", "1", "-b",
                                                f"127.0.0.1:{port}", "--app", "benchapps:wsgi",
                                                "--pid", str(d / "p.pid"), *extra], port, d)
                try:
                    _load(bench, port, 1.0, proxy)  # warm-up
                    r = _load(bench, port, args.duration, proxy)
                finally:
                    srv.stop()
                if r["errors"]:
                    bench.log(f"bench: proxy {name}: {r['errors']} errors")
                samples.setdefault(name, []).append(r["rps"])
                bench.log(f"bench: round {rnd + 1} close proxy_protocol={name:3} "
                          f"{r['rps']:>9,.0f} req/s")
    off = statistics.median(samples["off"])
    rows = [{"bench": "proxy", "proxy_protocol": k, "mode": "close",
             "rps": statistics.median(v), "rounds": len(v)} for k, v in samples.items()]
    print(f"\n{'Connection: close':18} {'req/s':>9} {'×off':>6}")
    for r in rows:
        print(f"proxy_protocol={r['proxy_protocol']:3} {r['rps']:>9,.0f} {r['rps'] / off:>6.2f}")
    return rows
