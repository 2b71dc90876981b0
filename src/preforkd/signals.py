"""Signals become data: a no-op handler plus set_wakeup_fd on a non-blocking pipe.

The C-level handler writes the signal number into the pipe; the loop reads
those bytes and acts between events. Handlers never log or touch state, so
nothing re-enters code a signal interrupted. What each signal asks the master
for is the command table's (preforkd.commands); this module is the mechanism
both the master and the workers use.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable

S = signal.Signals


# What a worker does on a signal sent to it directly (the master uses the channel).
WORKER_SIGNALS = (S.SIGTERM, S.SIGQUIT, S.SIGINT, S.SIGUSR1)
# Master to a worker whose loop went silent: write the request you are stuck in to the
# scoreboard (a Python handler, run in the stuck code; then SIGABRT dumps the stack).
# A real-time signal, outside what operators send (USR2 is the master's upgrade, and
# `systemctl kill` or `kill -- -PGID` reach the workers too).
NAME_BUSY_SIGNAL = S.SIGRTMIN


_KNOWN = frozenset(int(s) for s in S)


def _noop(signum: int, frame: object) -> None:
    pass


class SignalPipe:
    """Wakes a poll loop on signals; `drain()` returns what arrived, in order.

    Repeats are kept: two TTINs mean two workers more."""

    def __init__(self, signals: Iterable[S]) -> None:
        self.signals = tuple(signals)
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for sig in self.signals:
            signal.signal(sig, _noop)
        signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)

    def fileno(self) -> int:
        return self.rfd

    def drain(self) -> list[S]:
        seen: list[S] = []
        while True:
            try:
                data = os.read(self.rfd, 256)
            except BlockingIOError:
                return seen
            if not data:
                return seen
            seen.extend(S(n) for n in data if n in _KNOWN)

    def close(self) -> None:
        """Detach in a forked child: default handlers, no wakeup fd, pipe closed."""
        signal.set_wakeup_fd(-1)
        for sig in self.signals:
            signal.signal(sig, signal.SIG_DFL)
        os.close(self.rfd)
        os.close(self.wfd)


def block(signals: Iterable[S]) -> set[int]:
    """Block signals around fork so none lands between fork and the child's reset."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, signals)


def restore(mask: set[int]) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
