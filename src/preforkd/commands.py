"""The master's commands: one table for its signals, its control socket, the CLI and the README.

Theory of operation
-------------------
Each row of COMMANDS is one thing the master can be asked to do, with every
name it goes by: the signal(s) that ask for it (by default, and with
`signals = "nginx"`), the control-socket word that asks for it (the CLI verb:
`preforkd <word>`, a second word being a flag, so "stop fast" is `preforkd
stop --fast`), the Master method that does it, and the row the README's
signal table shows for it. Consumers, none with a vocabulary of its own:

- the master maps a signal (`signal_table(mode)`) or a control word
  (`BY_WORD`) to its row and queues it; the loop runs the queue through the
  rows' handlers;
- the CLI sends a row's word, and its first signal when there is no control
  socket to talk to;
- tests/unit/test_docs.py checks the README's "## Signals" table against
  `readme_rows()`.

Order is priority, as in nginx's master cycle (terminate, quit, reconfigure,
reopen, ...): commands that arrive in the same turn of the master loop run in
table order, so a stop always wins over what came with it, and rows sharing a
priority (the worker-count changes) keep their arrival order. A command from
a signal that arrives while the master is stopping is dropped unless its row
says `while_stopping`; one from the control socket still runs and answers.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from preforkd.supervise import StopMode

if TYPE_CHECKING:
    from preforkd.control import Reply
    from preforkd.master import Master

S = signal.Signals


class Action(enum.Enum):
    FAST_STOP = "fast-stop"
    GRACEFUL_STOP = "graceful-stop"
    RELOAD = "reload"
    REOPEN = "reopen"
    UPGRADE = "upgrade"
    STOP_WORKERS = "stop-workers"
    ADD_WORKER = "add-worker"
    REMOVE_WORKER = "remove-worker"
    STATUS = "status"
    REAP = "reap"


# The master's method for a row: the reply is None when a signal asked.
Handler = Callable[["Master", "Reply | None"], None]


@dataclass(frozen=True)
class Command:
    action: Action
    priority: int  # lower runs first
    signals: tuple[S, ...] = ()  # the default meaning
    nginx_signals: tuple[S, ...] | None = None  # with signals = "nginx" (None: the same)
    word: str | None = None  # on the control socket; `preforkd <word>` (2nd word: a flag)
    handler: Handler | None = None  # None: the loop does it anyway (CHLD only wakes it)
    doc: str = ""  # its row in the README's signal table
    while_stopping: bool = False  # a signal for it still counts during a stop

    def signals_for(self, mode: str) -> tuple[S, ...]:
        if mode == "nginx" and self.nginx_signals is not None:
            return self.nginx_signals
        return self.signals


COMMANDS: tuple[Command, ...] = (
    Command(Action.FAST_STOP, 0, (S.SIGINT,), (S.SIGINT, S.SIGTERM), "stop fast",
            lambda m, r: m.stop(StopMode.FAST, r),
            "fast stop: workers exit at once, the master within about a second.",
            while_stopping=True),
    Command(Action.GRACEFUL_STOP, 1, (S.SIGTERM, S.SIGQUIT), (S.SIGQUIT,), "stop",
            lambda m, r: m.stop(StopMode.GRACEFUL, r),
            "graceful stop: close the listeners, let open connections finish (up to "
            "`graceful_timeout`), exit 0. A second stop signal makes it fast.",
            while_stopping=True),
    Command(Action.RELOAD, 2, (S.SIGHUP,), None, "reload", lambda m, r: m.reload(r),
            "reload: re-read and validate the config (invalid: log why, change nothing); "
            "boot one new-generation worker, and once it is ready roll the rest, each new "
            "worker ready before the old one with its index retires. If a new worker fails "
            "to boot, the new generation is dropped and the old one keeps serving."),
    Command(Action.REOPEN, 3, (S.SIGUSR1,), None, "reopen", lambda m, r: m.reopen_logs(r),
            "reopen log files, in the master and every worker."),
    Command(Action.UPGRADE, 4, (S.SIGUSR2,), None, "upgrade", lambda m, r: m.upgrade(r),
            "upgrade: start a new master (new code, new config) that inherits the listening "
            "sockets; the pid file is `<pid>.oldbin` until the new master serves and writes "
            "its own. Both serve until QUIT/TERM to the old master completes the upgrade; "
            "to roll back, HUP the old master (after a WINCH) and QUIT the new one. A new "
            "master that fails leaves the old one serving, pid file restored."),
    Command(Action.STOP_WORKERS, 5, (S.SIGWINCH,), None, None,
            lambda m, r: m.stop_workers(),
            "stop all workers gracefully, keep the master and the listeners (TTIN or HUP "
            "bring workers back)."),
    Command(Action.ADD_WORKER, 5, (S.SIGTTIN,), None, None,
            lambda m, r: m.want_workers(m.num_workers + 1),
            "one worker more."),
    Command(Action.REMOVE_WORKER, 5, (S.SIGTTOU,), None, None,
            lambda m, r: m.want_workers(m.num_workers - 1),
            "one worker fewer: the highest index retires, once every other one is ready."),
    Command(Action.STATUS, 6, (), None, "status", lambda m, r: m.report_status(r),
            while_stopping=True),
    Command(Action.REAP, 7, (S.SIGCHLD,), None, None, None,
            "reap; a worker that died unexpectedly is replaced with the same index."),
)

BY_ACTION: dict[Action, Command] = {c.action: c for c in COMMANDS}
BY_WORD: dict[str, Command] = {c.word: c for c in COMMANDS if c.word}


def signal_table(mode: str) -> dict[S, Command]:
    """What each signal asks the master for, in `signals = mode` ("default" or "nginx")."""
    return {sig: c for c in COMMANDS for sig in c.signals_for(mode)}


def readme_rows() -> list[tuple[str, str]]:
    """(signals, text) of each row of the README's signal table, in table order."""
    return [(", ".join(s.name.removeprefix("SIG") for s in c.signals), c.doc)
            for c in COMMANDS if c.signals]
