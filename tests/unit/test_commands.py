"""The command table: every consumer finds what it needs in it, and nothing twice."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from preforkd.cli import main
from preforkd.commands import BY_WORD, COMMANDS, Action, signal_table
from preforkd.master import Master


@pytest.mark.parametrize("mode", ["default", "nginx"])
def test_each_signal_means_one_thing(mode):
    named = [sig for c in COMMANDS for sig in c.signals_for(mode)]
    assert len(named) == len(set(named)) == len(signal_table(mode))


def test_term_is_graceful_by_default_and_fast_with_nginx_signals():
    assert signal_table("default")[signal.SIGTERM].action is Action.GRACEFUL_STOP
    assert signal_table("nginx")[signal.SIGTERM].action is Action.FAST_STOP
    assert signal_table("nginx")[signal.SIGQUIT].action is Action.GRACEFUL_STOP


def test_rows_are_in_priority_order():
    # nginx's master cycle: terminate, quit, reconfigure, reopen, then the worker count
    assert [c.priority for c in COMMANDS] == sorted(c.priority for c in COMMANDS)
    order = [c.action for c in COMMANDS]
    assert order[:4] == [Action.FAST_STOP, Action.GRACEFUL_STOP, Action.RELOAD, Action.REOPEN]
    counts = {c.priority for c in COMMANDS if c.action in (
        Action.STOP_WORKERS, Action.ADD_WORKER, Action.REMOVE_WORKER)}
    assert len(counts) == 1  # worker-count changes keep their arrival order


def test_every_control_word_is_a_cli_verb():
    assert set(BY_WORD) == {"stop", "stop fast", "reload", "reopen", "upgrade", "status"}
    for word in BY_WORD:
        verb, *flags = word.split()
        assert verb in main.commands
        params = {p.name for p in main.commands[verb].params}
        assert all(flag in params for flag in flags)


class _Recorder:
    """Stands in for the Master: records which attributes a handler uses."""

    num_workers = 2

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))


def test_handlers_name_real_master_methods():
    for c in COMMANDS:
        if c.handler is None:
            assert c.action is Action.REAP  # the loop reaps every turn; CHLD only wakes it
            continue
        m = _Recorder()
        c.handler(m, None)  # type: ignore[arg-type]
        assert m.calls, c.action
        for name, _ in m.calls:
            assert callable(getattr(Master, name, None)), (c.action, name)
