"""The worker's event loop: readiness callbacks, a timer heap, call_soon.

It knows nothing of HTTP or processes. Each turn: poll, run I/O callbacks,
fire due timers, run the callbacks queued with call_soon (curio's three
phases, without coroutines). Linux uses epoll directly (EPOLLEXCLUSIVE for
listeners); elsewhere a selectors adapter speaks the same small interface.
"""

from __future__ import annotations

import heapq
import select
import selectors
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

EPOLLIN = getattr(select, "EPOLLIN", 0x001)
EPOLLOUT = getattr(select, "EPOLLOUT", 0x004)
EPOLLERR = getattr(select, "EPOLLERR", 0x008)
EPOLLHUP = getattr(select, "EPOLLHUP", 0x010)
EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)
_READ_EVENTS = EPOLLIN | EPOLLERR | EPOLLHUP
_WRITE_EVENTS = EPOLLOUT | EPOLLERR | EPOLLHUP


class _SelectorPoller:
    """epoll's register/modify/unregister/poll on top of selectors, for non-Linux."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()

    @staticmethod
    def _events(mask: int) -> int:
        return ((selectors.EVENT_READ if mask & EPOLLIN else 0)
                | (selectors.EVENT_WRITE if mask & EPOLLOUT else 0))

    def register(self, fd: int, mask: int) -> None:
        self._sel.register(fd, self._events(mask))

    def modify(self, fd: int, mask: int) -> None:
        self._sel.modify(fd, self._events(mask))

    def unregister(self, fd: int) -> None:
        self._sel.unregister(fd)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        out = []
        for key, ev in self._sel.select(None if timeout < 0 else timeout):
            out.append((key.fd, (EPOLLIN if ev & selectors.EVENT_READ else 0)
                        | (EPOLLOUT if ev & selectors.EVENT_WRITE else 0)))
        return out

    def close(self) -> None:
        self._sel.close()


class Timer:
    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when


class Loop:
    def __init__(self, use_epoll: bool = hasattr(select, "epoll")) -> None:
        self._poller: Any = select.epoll() if use_epoll else _SelectorPoller()
        self._epoll = use_epoll
        self.exclusive_supported = use_epoll and EPOLLEXCLUSIVE != 0
        self._readers: dict[int, Callable[[], Any]] = {}
        self._writers: dict[int, Callable[[], Any]] = {}
        self._masks: dict[int, int] = {}
        self._timers: list[Timer] = []
        self._ready: deque[tuple[Callable[..., Any], tuple]] = deque()
        # Objects whose end_turn() runs once this turn's I/O callbacks have all run (they
        # append themselves: Transport.write_later).
        self.flush_list: list[Any] = []
        self._running = False
        self.now = monotonic()

    # -- I/O registration -------------------------------------------------
    def _update(self, fd: int, mask: int) -> None:
        old = self._masks.get(fd, 0)
        if mask == old:
            return
        if not mask:
            del self._masks[fd]
            self._poller.unregister(fd)
        elif not old:
            self._masks[fd] = mask
            self._poller.register(fd, mask)
        else:
            self._masks[fd] = mask
            self._poller.modify(fd, mask)

    def add_reader(self, fd: int, callback: Callable[[], Any]) -> None:
        self._readers[fd] = callback
        self._update(fd, self._masks.get(fd, 0) | EPOLLIN)

    def add_exclusive_reader(self, fd: int, callback: Callable[[], Any]) -> None:
        """For listeners shared by workers: one connection wakes one worker, not all.

        EPOLLEXCLUSIVE cannot be modified later, so the fd must have no other interest."""
        if not self.exclusive_supported:
            return self.add_reader(fd, callback)
        self._readers[fd] = callback
        self._masks[fd] = EPOLLIN | EPOLLEXCLUSIVE
        self._poller.register(fd, EPOLLIN | EPOLLEXCLUSIVE)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._update(fd, self._masks.get(fd, 0) & ~(EPOLLIN | EPOLLEXCLUSIVE))

    def add_writer(self, fd: int, callback: Callable[[], Any]) -> None:
        self._writers[fd] = callback
        self._update(fd, self._masks.get(fd, 0) | EPOLLOUT)

    def forget(self, fd: int) -> None:
        """The caller is about to close `fd`: drop it. epoll forgets a closed fd by
        itself, so this costs no syscall there (one per connection saved)."""
        self._readers.pop(fd, None)
        self._writers.pop(fd, None)
        if self._masks.pop(fd, 0) and not self._epoll:
            self._poller.unregister(fd)

    def remove_writer(self, fd: int) -> None:
        if self._writers.pop(fd, None) is not None:
            self._update(fd, self._masks.get(fd, 0) & ~EPOLLOUT)

    # -- timers and deferred calls ---------------------------------------
    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        timer = Timer(monotonic() + delay, callback, args)
        heapq.heappush(self._timers, timer)
        return timer

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self._ready.append((callback, args))

    # -- running ---------------------------------------------------------
    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        self._running = True
        poll = self._poller.poll
        readers, writers = self._readers, self._writers
        timers, ready, flush = self._timers, self._ready, self.flush_list
        while self._running:
            if ready or flush:
                timeout = 0.0
            elif timers:
                timeout = max(0.0, timers[0].when - monotonic())
            else:
                timeout = -1.0
            events = poll(timeout)
            self.now = monotonic()
            for fd, ev in events:
                if ev & _READ_EVENTS:
                    cb = readers.get(fd)
                    if cb is not None:
                        cb()
                if ev & _WRITE_EVENTS:
                    cb = writers.get(fd)
                    if cb is not None:
                        cb()
            if flush:
                for obj in flush:
                    obj.end_turn()
                flush.clear()
            if timers:
                now = self.now
                while timers and timers[0].when <= now:
                    timer = heapq.heappop(timers)
                    if not timer.cancelled:
                        timer.callback(*timer.args)
            for _ in range(len(ready)):
                cb, args = ready.popleft()
                cb(*args)

    def close(self) -> None:
        self._poller.close()
        self._readers.clear()
        self._writers.clear()
        self._masks.clear()
