"""What the master and workers agree on about processes: exit codes, titles, channel bytes."""

from __future__ import annotations

import os
import signal

from setproctitle import setproctitle

# Exit codes are a protocol: the master tells a boot failure from a crash.
EX_OK = 0
EX_BOOT = 3  # the worker failed before it was ready (internal error)
EX_APP = 4  # the application or protocol could not be loaded

# Master -> worker commands over the per-worker socketpair, one byte each.
CMD_GRACEFUL = b"q"
CMD_FAST = b"t"
CMD_REOPEN = b"o"
# Worker -> master messages are lines.
MSG_READY = b"ready"
MSG_ERROR = b"error"


def set_title(title: str) -> None:
    setproctitle("preforkd: " + title)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
