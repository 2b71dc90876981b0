"""The master's worker processes: fork them, hear them, reap them, carry out the plan.

The worker table (pid -> WorkerSlot) lives here, with everything the master
does *to* workers: spawn (fork), read their channel messages, reap them,
and the decisions of supervise.plan (tell to stop, name-request signal,
SIGABRT, SIGKILL). What to do is never decided here; what a worker's READY
or exit means for the master (backoff, rollback, start-up) is the master's,
told through `on_ready` and `on_exit`.

The master's counters for the metrics page are kept here, in the scoreboard's
master area: boot failures, and respawns by reason (a worker that died unasked:
crash; killed for its heartbeat: timeout; retired at a limit: recycle; replaced
by a new generation: reload).
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import socket
import time
from collections.abc import Callable, Iterable

from preforkd import logs
from preforkd.config import Config
from preforkd.control import Channel, FromWorker, ToWorker
from preforkd.listeners import Listener
from preforkd.process import EX_BOOT, EventLog, describe_status, rss_kib
from preforkd.scoreboard import Scoreboard
from preforkd.signals import NAME_BUSY_SIGNAL, block, restore
from preforkd.supervise import (
    Abort,
    Decision,
    Goal,
    Kill,
    NameRequest,
    Plan,
    Retire,
    Spawn,
    State,
    Stop,
    StopMode,
    WorkerSlot,
    plan,
)
from preforkd.worker import worker_main

log = logs.log


class Pool:
    def __init__(self, scoreboard: Scoreboard, selector: selectors.BaseSelector,
                 events: EventLog, handled: Iterable[signal.Signals],
                 in_child: Callable[[], None], on_ready: Callable[[WorkerSlot], None],
                 on_exit: Callable[[WorkerSlot, str], None],
                 on_other: Callable[[int, int], None] | None = None) -> None:
        self.workers: dict[int, WorkerSlot] = {}  # pid -> slot
        self.scoreboard = scoreboard
        self.selector = selector
        self.events = events
        self.handled = tuple(handled)  # blocked around fork
        self.in_child = in_child  # the master closes what is its own in a new child
        self.on_ready = on_ready
        self.on_exit = on_exit  # (worker, how it ended) once it has been reaped
        self.on_other = on_other  # (pid, status) of a child that is no worker (a new master)

    def beats(self) -> dict[int, float]:
        return {w.pid: self.scoreboard.heartbeat(w.slot) for w in self.workers.values()}

    def plan(self, goal: Goal, now: float) -> Plan:
        """supervise.plan for this table. The goal's generation is published first (the
        scoreboard's master area: the generation the metrics page reports)."""
        self.scoreboard.set_generation(goal.generation)
        return plan(self.workers.values(), goal, self.beats(), now, self.usage())

    def carry_out(self, decisions: Iterable[Decision], config: Config,
                  listeners_for: Callable[[int], list[Listener]]) -> None:
        """Do what supervise.plan decided (`config` and `listeners_for(index)`: for new
        workers)."""
        for d in decisions:
            if isinstance(d, Spawn):
                if self._replaces_older_generation(d):
                    self.scoreboard.count_respawn("reload")
                self.spawn(d.index, d.generation, config, listeners_for(d.index))
                continue
            w = self.workers[d.pid]
            if isinstance(d, Stop):
                self._stop(w, d)
            elif isinstance(d, NameRequest):
                # First the worker names the request it is stuck in (its handler finds it
                # on the interrupted stack, so requests pay nothing for this), then
                # SIGABRT: faulthandler dumps the stack to the log.
                self.event("timeout", w)
                self.scoreboard.count_respawn("timeout")
                w.aborted, w.abort_at, w.state = True, d.abort_at, State.DRAINING
                self._signal(w, NAME_BUSY_SIGNAL)
            elif isinstance(d, Abort):
                self._abort(w, d, config.timeout)
            elif isinstance(d, Kill):
                self._signal(w, signal.SIGKILL)
                w.kill_at = d.again_at
            elif isinstance(d, Retire):
                w.retiring = d.reason
                log.info("worker=%d pid=%d gen=%d event=recycle reason=%s", w.index, w.pid,
                         w.generation, d.reason)
                self.event("recycle", w, reason=d.reason.split()[0])
                self.scoreboard.count_respawn("recycle")

    def _replaces_older_generation(self, d: Spawn) -> bool:
        """A spawn for a reload: its index is still served by another generation's worker
        (not one on its way out: a timeout's or a crash's respawn is counted as such)."""
        return any(w.index == d.index and w.generation != d.generation
                   and w.state is not State.DRAINING for w in self.workers.values())

    def tell_all(self, order: ToWorker) -> None:
        for w in self.workers.values():
            if w.channel is not None:
                w.channel.send(order)

    # -- spawn ----------------------------------------------------------------
    def spawn(self, index: int, generation: int, config: Config,
              listeners: list[Listener]) -> WorkerSlot:
        """Fork a worker: the one seam where a later preload mode forks from a
        per-generation template instead."""
        now = time.monotonic()
        used = {w.slot for w in self.workers.values()}
        slot_no = next(i for i in range(self.scoreboard.slots) if i not in used)
        master_end, worker_end = socket.socketpair()
        self.scoreboard.claim(slot_no, 0, index, generation, now)
        mask = block(self.handled)
        pid = os.fork()
        if pid == 0:  # the child: shed the master's state, become a worker
            code = EX_BOOT
            try:
                master_end.close()
                self.in_child()
                self.close_channels()
                restore(mask)
                code = worker_main(config, listeners, index, generation, self.scoreboard,
                                   slot_no, worker_end)
            finally:
                os._exit(code)
        restore(mask)
        worker_end.close()
        self.scoreboard.set_pid(slot_no, pid)
        w = WorkerSlot(index, generation, pid, slot_no, Channel(master_end), now)
        _draw_limits(w, config, now)
        self.workers[pid] = w
        self.selector.register(master_end.fileno(), selectors.EVENT_READ,
                               lambda: self._read(w))
        log.info("worker=%d pid=%d gen=%d event=spawned", index, pid, generation)
        self.event("spawned", w)
        return w

    def close_channels(self) -> None:
        for w in self.workers.values():
            if w.channel is not None:
                w.channel.close()

    # -- hear and reap ----------------------------------------------------------
    def _read(self, w: WorkerSlot) -> None:
        messages = w.channel.receive() if w.channel is not None else None
        if messages is None:  # the worker exited (or closed it); reaping does the rest
            self._forget_channel(w)
            return
        for kind, text in messages:
            if kind is FromWorker.READY and w.state is State.BOOTING:
                w.state = State.READY
                log.info("worker=%d pid=%d gen=%d event=ready boot=%.3fs", w.index, w.pid,
                         w.generation, time.monotonic() - w.spawned_at)
                self.event("ready", w)
                self.on_ready(w)
            elif kind is FromWorker.ERROR:
                w.error = text

    def _forget_channel(self, w: WorkerSlot) -> None:
        if w.channel is None:
            return
        try:
            self.selector.unregister(w.channel)
        except (KeyError, ValueError):
            pass

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            w = self.workers.pop(pid, None)
            if w is not None:
                self._exited(w, status)
            elif self.on_other is not None:
                self.on_other(pid, status)

    def _exited(self, w: WorkerSlot, status: int) -> None:
        self._read(w)  # a last "error" line may still be in the channel
        self._forget_channel(w)
        if w.channel is not None:
            w.channel.close()
        self.scoreboard.release(w.slot)
        if w.state is State.BOOTING:
            self.scoreboard.count_boot_failure()
        elif w.state is State.READY:  # never told to stop (a draining worker was)
            self.scoreboard.count_respawn("crash")
        how = describe_status(status)
        level = log.info if w.state is State.DRAINING else log.error
        level("worker=%d pid=%d gen=%d event=exited status=%s", w.index, w.pid,
              w.generation, how)
        self.event("exited", w, status=how.replace(" ", "-"))
        self.on_exit(w, how)

    # -- stop and kill ------------------------------------------------------------
    def _stop(self, w: WorkerSlot, d: Stop) -> None:
        graceful = d.mode is StopMode.GRACEFUL
        w.state, w.stop, w.kill_at = State.DRAINING, d.mode, d.kill_at
        # (by signal, the worker reads TERM as the server's stop, QUIT as a retirement)
        if not graceful:
            order, sig = ToWorker.FAST, signal.SIGINT
        elif d.final:
            order, sig = ToWorker.STOP, signal.SIGTERM
        else:
            order, sig = ToWorker.GRACEFUL, signal.SIGQUIT
        if w.channel is None or not w.channel.send(order):
            self._signal(w, sig)
        log.info("worker=%d pid=%d gen=%d event=stopping mode=%s", w.index, w.pid,
                 w.generation, d.mode.value)
        self.event("stopping", w, mode=d.mode.value)

    def _abort(self, w: WorkerSlot, d: Abort, timeout: float) -> None:
        info = self.scoreboard.read(w.slot)
        # A request stamped after the last beat is the one the worker is stuck in.
        busy = f" request={info.request!r}" if info.request_started > info.heartbeat > 0 else ""
        log.error("worker=%d pid=%d gen=%d event=timeout age=%.1f limit=%.1f%s action=kill",
                  w.index, w.pid, w.generation, time.monotonic() - info.heartbeat, timeout,
                  busy)
        self._signal(w, signal.SIGABRT)
        w.abort_at, w.kill_at = 0.0, d.kill_at

    def _signal(self, w: WorkerSlot, sig: signal.Signals) -> None:
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    def usage(self) -> dict[int, tuple[int, int]]:
        """pid -> (requests served, RSS in KiB), for the recycling limits."""
        return {w.pid: (self.scoreboard.read(w.slot).requests, rss_kib(w.pid))
                for w in self.workers.values() if w.max_requests or w.max_rss_kib}

    def event(self, name: str, w: WorkerSlot, **extra: object) -> None:
        """A lifecycle event line about `w` (PREFORKD_EVENTS names the file)."""
        self.events.write(name, index=w.index, gen=w.generation, pid=w.pid, **extra)


def _draw_limits(w: WorkerSlot, config: Config, now: float) -> None:
    """This worker's recycling limits: each drawn from [limit, limit x (1 + jitter)], so
    workers started together are not all replaced together."""
    def draw(limit: float) -> float:
        return limit * (1.0 + random.uniform(0.0, config.recycle_jitter)) if limit else 0.0

    w.max_requests = int(draw(config.max_requests))
    w.retire_at = now + draw(config.max_worker_lifetime) if config.max_worker_lifetime else 0.0
    w.max_rss_kib = int(draw(config.max_worker_rss * 1024))
