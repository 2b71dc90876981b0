"""The shipped systemd units pass `systemd-analyze verify`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONF = Path(__file__).parents[2] / "conf"


def systemd_version() -> int:
    out = subprocess.run(["systemctl", "--version"], capture_output=True, text=True).stdout
    return int(re.match(r"systemd (\d+)", out).group(1))


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_units_verify(tmp_path):
    # The unit names the installed console script; verify checks that it exists.
    exe = shutil.which("preforkd") or str(Path(sys.executable).parent / "preforkd")
    service = (CONF / "preforkd.service").read_text().replace("/usr/local/bin/preforkd", exe)
    (tmp_path / "preforkd.service").write_text(service)
    shutil.copy(CONF / "preforkd.socket", tmp_path / "preforkd.socket")
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "preforkd.service"),
                             str(tmp_path / "preforkd.socket")],
                            capture_output=True, text=True, cwd=tmp_path)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if line]
    if systemd_version() < 253:  # Type=notify-reload is newer: the one thing it may not know
        complaints = [c for c in complaints if "notify-reload" not in c]
    assert result.returncode == 0 and not complaints, complaints
