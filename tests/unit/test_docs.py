"""The README's signal table and the code's command table say the same."""

from __future__ import annotations

import re
from pathlib import Path

from preforkd.commands import COMMANDS, readme_rows, signal_table

README = (Path(__file__).parents[2] / "README.md").read_text()
SECTION = README.split("## Signals", 1)[1].split("\n## ", 1)[0]


def test_every_handled_signal_has_a_readme_row():
    rows = re.findall(r"^\| ([A-Z0-9 ,/]+) \|", SECTION, re.M)
    documented = {name.strip() for row in rows for name in re.split(r"[,/]", row)}
    documented.discard("signal")
    assert documented == {s.name.removeprefix("SIG") for s in signal_table("default")}


def test_readme_rows_are_the_command_tables_rows():
    rows = re.findall(r"^\| (.+?) \| (.+) \|$", SECTION, re.M)
    assert rows[0] == ("signal", "the master")
    assert rows[1:] == readme_rows()


def test_readme_names_each_signal_nginx_mode_changes():
    line = next(ln for ln in SECTION.splitlines() if ln.startswith('`signals = "nginx"`'))
    default, nginx = signal_table("default"), signal_table("nginx")
    changed = {s for s in default if nginx[s] is not default[s]}
    assert changed  # TERM, at least
    for sig in changed:
        assert sig.name.removeprefix("SIG") in line


def test_every_signal_row_has_readme_text():
    assert all(c.doc for c in COMMANDS if c.signals)
