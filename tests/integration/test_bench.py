"""scripts/bench is a benchmark, not a test; this only proves it still runs (--quick)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("what", ["http", "echo", "idle"])
def test_bench_quick_smoke(what):
    results = ROOT / ".bench" / "results.jsonl"
    before = results.read_text().count("\n") if results.exists() else 0
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench"), what, "--quick"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [json.loads(line) for line in results.read_text().splitlines()[before:]]
    mine = [row for row in rows if row["server"] == "preforkd"]
    assert mine, r.stdout
    if what == "http":
        assert {row["mode"] for row in mine} == {"keepalive", "close", "pipeline16"}
        assert all(row["rps"] > 0 and row["errors"] == 0 for row in mine)
    elif what == "echo":
        assert mine[0]["roundtrips_per_s"] > 0
    else:
        assert mine[0]["bytes_per_connection"] > 0 and mine[0]["fresh_p99_ms"] > 0
