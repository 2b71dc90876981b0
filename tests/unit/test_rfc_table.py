"""The RFC table (tests/rfc_table.py) points at tests that exist, and the README's error
table answers every status the table and the parser give."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from rfc_table import RULES  # noqa: E402
from smuggling import CASES  # noqa: E402

README = (ROOT / "README.md").read_text()
ERRORS = README.split("| what the client does | answer |", 1)[1].split("\n\n", 1)[0]


def _exists(ref: str) -> bool:
    if "::" not in ref:
        return any(c.name == ref for c in CASES)
    path, name = ref.split("::")
    text = (ROOT / path).read_text()
    return f"def {name}(" in text or f'"{name}":' in text


def test_every_test_the_table_names_exists():
    missing = [ref for rule in RULES for ref in rule.tests if not _exists(ref)]
    assert not missing


def test_the_table_covers_every_status_the_parser_answers():
    raised = set()
    for path in (ROOT / "src/preforkd/http").glob("*.py"):
        raised |= {int(s) for s in re.findall(r"HttpError\((\d{3})", path.read_text())}
    assert raised <= {rule.status for rule in RULES}, raised


def test_the_readme_error_table_answers_every_refusal():
    answers = {int(s) for s in re.findall(r"\| (\d{3})(?: |$)", ERRORS, re.M)}
    assert {rule.status for rule in RULES if rule.status} <= answers
