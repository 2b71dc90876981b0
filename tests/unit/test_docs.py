"""The README's signal table and the code's signal table say the same."""

from __future__ import annotations

import re
from pathlib import Path

from preforkd.signals import ACTIONS

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_handled_signal_has_a_readme_row():
    section = README.split("## Signals", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([A-Z0-9 ,/]+) \|", section, re.M)
    documented = {name.strip() for row in rows for name in re.split(r"[,/]", row)}
    documented.discard("signal")
    assert documented == {s.name.removeprefix("SIG") for s in ACTIONS}
