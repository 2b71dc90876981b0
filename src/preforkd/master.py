"""The master process: binds, forks, supervises. Never imports the application.

Theory of operation
-------------------
The master owns the listeners, the worker table (a Pool of WorkerSlots) and
one small loop:

    wait for an event or the earliest deadline
    -> read signals (bytes from the wakeup pipe), worker messages, control requests
    -> run the commands they asked for, in the command table's priority order
    -> reap (pool.reap)
    -> plan (supervise.plan: a pure function of the table, the goal and the time)
       and carry the plan out (pool.carry_out: spawn, tell to stop, signal)

Invariants:
- Signal handlers do nothing; a signal is a byte in a pipe, read here. What
  it means is its row in the command table (preforkd.commands), which also
  serves the control socket.
- What to spawn, retire or kill is decided in preforkd.supervise and only
  done here; the rules (canary, surge-first rolls, heartbeat escalation,
  backoff) are written down there.
- Each worker has an `index` (0..N-1, kept across respawns) and the
  `generation` it was spawned for. `self.generation` is the one being served
  or rolled out.
- A worker that exits before READY is a boot failure: at start-up the master
  gives up with the worker's error; during a reload the new generation is
  abandoned and the old one keeps serving; otherwise respawns back off.
- Workers get commands over their channel (a socketpair, preforkd.control);
  EOF on it tells a worker the master died.
- Spawning a worker is one function (Pool.spawn): the seam where a later
  preload mode forks from a per-generation template instead.
"""

from __future__ import annotations

import json
import os
import selectors
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

# The server's own modules (never the app) load here once, so every fork starts warm,
# shares them copy-on-write, and needs no read access to them after dropping privileges.
import preforkd.protocols.registry  # noqa: F401
from preforkd import config as configmod
from preforkd import logs, pidfile, upgrade
from preforkd.admin import AdminServer
from preforkd.commands import BY_WORD, Command, signal_table
from preforkd.config import Config, ConfigError
from preforkd.control import ControlServer, Reply, ToWorker
from preforkd.listeners import Listener, ListenError, ReuseportGroups, rebind
from preforkd.notify import Notifier
from preforkd.pool import Pool
from preforkd.process import (
    EventLog,
    StartupReport,
    hand_logs_to_workers,
    raise_nofile_limit,
    rss_kib,
    set_title,
)
from preforkd.scoreboard import Scoreboard
from preforkd.signals import SignalPipe
from preforkd.supervise import Goal, State, StopMode, Verdict, WorkerSlot, judge_boot_failure
from preforkd.upgrade import Upgrade, other_child_exited

log = logs.log

INF = float("inf")


@dataclass
class Rollout:
    """A reload in progress: enough to report it, or to roll it back."""

    previous_generation: int
    previous_config: Config
    started_at: float
    waiters: list[Reply] = field(default_factory=list)


class Master:
    def __init__(self, config: Config, overrides: dict[str, Any],
                 listeners: list[Listener], ready_fd: int = -1, argv: list[str] | None = None,
                 upgraded: bool = False, admin_server: AdminServer | None = None) -> None:
        self.config = config
        self.admin = admin_server  # admin_bind's health, status and metrics (admin.py)
        self.argv = argv or []  # how we were started: an upgrade starts the new master so
        self.upgraded = upgraded  # we are that new master: the pid file waits until we serve
        self.upgrading: Upgrade | None = None  # a new master we started (USR2)
        self.notify = Notifier()  # sd_notify (NOTIFY_SOCKET)
        self.overrides = overrides  # command-line values, re-applied on every reload
        self.listeners = listeners
        self.reuseport = ReuseportGroups(config.backlog)  # (accept = "reuseport" only)
        self.startup = StartupReport(ready_fd)  # --daemon: the waiting parent hears the outcome
        self.pid = os.getpid()
        self.generation = 1
        self.last_generation = 1
        self.num_workers = config.workers
        self.scoreboard = Scoreboard()
        self.started = False  # the first full set of workers has been READY
        self.stopping: StopMode | None = None
        self.exit_code = 0
        self.rollout: Rollout | None = None
        self.boot_failures = 0
        self.spawn_not_before = 0.0
        self.pending: list[tuple[Command, Reply | None]] = []  # run by handle_commands
        self.signal_commands = signal_table(config.signals)
        self.events = EventLog()
        self.control: ControlServer[Command] | None = None
        self.selector = selectors.DefaultSelector()
        self.pool = Pool(self.scoreboard, self.selector, self.events, self.signal_commands,
                         self._close_in_child, self._worker_ready, self._worker_exited,
                         partial(other_child_exited, self))
        self.workers = self.pool.workers  # pid -> WorkerSlot

    # -- setup and teardown ---------------------------------------------------
    def run(self) -> int:
        set_title(f"master [{self.config.config_path or ' '.join(self.config.binds)}]")
        raise_nofile_limit(self.config)
        if not self.upgraded:
            pidfile.write(self.config.pid, self.pid)
        self.signals = SignalPipe(self.signal_commands)
        self.selector.register(self.signals.fileno(), selectors.EVENT_READ, self._read_signals)
        if not self.upgraded:  # (a new master takes the control socket once it serves)
            self.open_control()
        if self.admin is not None:
            self.admin.attach(self)
        # Like nginx's, the master stays privileged (it never imports the app): a reload
        # can bind low ports and reopen root-owned logs. Workers run as user/group; the
        # error log is theirs to reopen too.
        hand_logs_to_workers(self.config)
        try:
            log.info("event=started pid=%d workers=%d listen=%s", self.pid, self.num_workers,
                     ",".join(lst.name for lst in self.listeners))
            self._main_loop()
        finally:
            self._teardown()
        return self.exit_code

    def _listeners_for(self, index: int) -> list[Listener]:
        if self.config.accept != "reuseport":
            return self.listeners
        return self.reuseport.for_index(index, self.listeners, self.num_workers)

    def open_control(self) -> None:
        """Bind the control socket (again, after a rolled-back upgrade: the new master
        that had taken the path removed it on its way out)."""
        if self.control is not None:
            self.selector.unregister(self.control.fileno())
            self.control.close(unlink=False)
        self.control = ControlServer.open(self.config.control_path, BY_WORD,
                                          lambda cmd, reply: self.pending.append((cmd, reply)))
        if self.control is not None:
            self.selector.register(self.control.fileno(), selectors.EVENT_READ,
                                   self.control.accept)

    def _teardown(self) -> None:
        handed_over = self.upgrading is not None and self.upgrading.ready
        for lst in self.listeners:
            lst.close(unlink=not handed_over)  # (a new master serves the unix sockets)
        if self.control is not None:
            self.control.close(unlink=not handed_over)  # (its path is the new master's now)
        if self.admin is not None:
            self.admin.close(unlink=not handed_over)
        if handed_over:
            self.upgrading.remove_oldbin()
        pidfile.remove(self.config.pid, self.pid)
        self.notify.close()
        log.info("event=exit code=%d", self.exit_code)

    # -- the loop -------------------------------------------------------------
    def _main_loop(self) -> None:
        wake = 0.0
        while True:
            timeout = None if wake == INF else max(0.0, wake - time.monotonic())
            for key, _ in self.selector.select(timeout):
                key.data()
            self.handle_commands()
            self.pool.reap()
            if self.stopping and not self.workers:
                return
            p = self.pool.plan(_goal(self), time.monotonic())
            self.pool.carry_out(p.decisions, self.config, self._listeners_for)
            if p.all_ready:
                self._all_ready()
            wake = min(p.wake, self.admin.sweep(time.monotonic())) if self.admin else p.wake

    def handle_commands(self) -> None:
        """Run what signals and the control socket asked for, in the table's priority order."""
        pending, self.pending = self.pending, []
        for cmd, reply in sorted(pending, key=lambda p: p[0].priority):
            if self.stopping and reply is None and not cmd.while_stopping:
                continue  # once stopping, only another stop signal means anything
            assert cmd.handler is not None
            cmd.handler(self, reply)

    def _read_signals(self) -> None:
        for sig in self.signals.drain():
            cmd = self.signal_commands[sig]
            if cmd.handler is not None:  # (CHLD only wakes the loop: it reaps every turn)
                log.debug("event=signal signal=%s", sig.name)
                self.pending.append((cmd, None))

    # -- what workers starting and ending mean -----------------------------------
    def _close_in_child(self) -> None:
        self.signals.close()
        self.selector.close()
        for server in (self.control, self.admin):
            if server is not None:
                server.close(unlink=False)
        for waiter in self.rollout.waiters if self.rollout else ():
            waiter.close()
        self.events.close()
        self.startup.close()
        self.notify.close()
        if self.upgrading is not None:
            self.upgrading.close()

    def _worker_ready(self, w: WorkerSlot) -> None:
        self.boot_failures = 0

    def _worker_exited(self, w: WorkerSlot, how: str) -> None:
        if w.state is State.BOOTING and not self.stopping:
            self._boot_failed(w, w.error or how)

    def _boot_failed(self, w: WorkerSlot, why: str) -> None:
        judged = judge_boot_failure(w, self.generation, self.started, self.rollout is not None,
                                    self.boot_failures + 1, time.monotonic())
        if judged.verdict is Verdict.GIVE_UP:
            log.error("event=startup-failed worker=%d error=%s", w.index, why)
            self.startup.send(f"error worker {w.index} failed to boot: {why}")
            self.exit_code = 1
            self.stop(StopMode.FAST)
        elif judged.verdict is Verdict.ROLL_BACK:
            self._rollback(f"worker {w.index} of generation {w.generation} failed to boot: {why}")
        else:
            self.boot_failures += 1
            self.spawn_not_before = judged.retry_at
            log.error("worker=%d event=boot-failed error=%s retry_in=%.1fs", w.index, why,
                      judged.delay)

    def _all_ready(self) -> None:
        if not self.started:
            self.started = True
            log.info("event=serving workers=%d", self.num_workers)
            if self.upgraded:  # the upgrade is ours now
                pidfile.write(self.config.pid, self.pid)
                self.open_control()
            self.startup.send("ok")
            self.notify.ready(f"serving, {self.num_workers} workers")
        if self.rollout is not None:
            took = time.monotonic() - self.rollout.started_at
            log.info("event=reload-done gen=%d took=%.3fs", self.generation, took)
            self._finish_rollout(f"ok generation {self.generation} serving ({took:.2f}s)")
            self.events.write("reloaded", gen=self.generation)
            self.notify.ready(f"generation {self.generation} serving")

    # -- commands (the rows of preforkd.commands call these) ---------------------
    def stop(self, mode: StopMode, reply: Reply | None = None) -> None:
        if reply is not None:
            reply.send(f"ok stopping ({mode.value})")
        if self.stopping is StopMode.FAST:
            return
        if self.stopping is not None:
            mode = StopMode.FAST  # a second stop during a graceful one makes it fast
        log.info("event=stopping mode=%s workers=%d", mode.value, len(self.workers))
        self.stopping = mode  # the plan tells the workers
        self.notify.stopping()
        handed_over = self.upgrading is not None and self.upgrading.ready
        for lst in self.listeners:
            lst.close(unlink=not handed_over)  # workers hold their own copies until they finish
        self.listeners = []
        self.reuseport.close()
        if self.rollout is not None:
            self._finish_rollout("error stopped during the reload")

    def reload(self, waiter: Reply | None = None) -> None:
        if self.stopping:
            if waiter is not None:
                waiter.send("error the master is stopping")
            return
        self.notify.reloading()
        try:
            new, listeners = reloaded_config(self.config, self.overrides, self.listeners)
        except (ConfigError, ListenError) as e:
            log.error("event=reload-refused error=%s", e)
            self.notify.ready(f"reload refused: {e}")
            if waiter is not None:
                waiter.send(f"error reload refused: {e}")
            return
        previous = self.rollout
        self.rollout = Rollout(previous.previous_generation if previous else self.generation,
                               previous.previous_config if previous else self.config,
                               time.monotonic(), previous.waiters if previous else [])
        if waiter is not None:
            self.rollout.waiters.append(waiter)
        self.config, self.listeners = new, listeners
        self.num_workers = new.workers
        self.last_generation += 1
        self.generation = self.last_generation
        self.spawn_not_before = 0.0
        log.info("event=reload gen=%d workers=%d", self.generation, self.num_workers)

    def _rollback(self, why: str) -> None:
        assert self.rollout is not None
        log.error("event=reload-failed gen=%d error=%s action=keep-gen-%d", self.generation,
                  why, self.rollout.previous_generation)
        self.generation = self.rollout.previous_generation
        self.config = self.rollout.previous_config
        self.num_workers = self.config.workers
        self._finish_rollout(f"error {why}; generation {self.generation} keeps serving")
        self.events.write("reload-failed", gen=self.generation)
        self.notify.ready(f"reload failed; generation {self.generation} serving")

    def _finish_rollout(self, message: str) -> None:
        if self.rollout is not None:
            for waiter in self.rollout.waiters:
                waiter.send(message)
            self.rollout = None

    def upgrade(self, reply: Reply | None = None) -> None:
        upgrade.begin(self, reply)  # (the USR2 room: upgrade.py)

    def reopen_logs(self, reply: Reply | None = None) -> None:
        logs.reopen(self.config.error_log)
        hand_logs_to_workers(self.config)
        log.info("event=reopen workers=%d", len(self.workers))
        self.pool.tell_all(ToWorker.REOPEN)
        if reply is not None:
            reply.send("ok")

    def stop_workers(self) -> None:
        log.info("event=stop-workers workers=%d", len(self.workers))
        self.want_workers(0)

    def want_workers(self, n: int) -> None:
        self.num_workers = min(max(n, 0), 512)

    def report_status(self, reply: Reply | None) -> None:
        if reply is not None:
            reply.send(json.dumps(status_document(self)))


def _goal(m: Master) -> Goal:
    """What the master wants of its workers now (the input of supervise.plan)."""
    c, up = m.config, m.upgrading
    return Goal(m.num_workers, m.generation, m.rollout is not None, m.stopping,
                m.spawn_not_before, c.timeout, c.graceful_timeout, c.drain_delay,
                bool(up and up.ready))


def status_document(master: Master) -> dict[str, Any]:
    """What `preforkd status` shows: the master, and each worker with its state and RSS."""
    workers = []
    for info in master.scoreboard.snapshot():
        w = master.workers.get(info["pid"])
        if w is not None:  # (key order as before: index, pid, generation, state, ...)
            workers.append({"index": w.index, "pid": w.pid, "generation": w.generation,
                            "state": "retiring" if w.retiring else w.state.value, **info,
                            "rss_kib": rss_kib(w.pid), "retiring": w.retiring or None})
    workers.sort(key=lambda d: (d["generation"], d["index"]))
    return {"master": master.pid, "generation": master.generation,
            "workers_wanted": master.num_workers,
            "stopping": master.stopping.value if master.stopping else None,
            "reloading": master.rollout is not None, "workers": workers}


def reloaded_config(old: Config, overrides: dict[str, Any],
                    listeners: list[Listener]) -> tuple[Config, list[Listener]]:
    """The config a reload asks for, and its listeners (ConfigError, ListenError: refused)."""
    new = configmod.load(old.config_path, overrides)
    if new.accept != old.accept:
        raise ConfigError(f"accept: changing it ({old.accept} -> {new.accept}) needs a restart")
    if new.admin_bind != old.admin_bind:
        raise ConfigError(f"admin_bind: changing it ({old.admin_bind!r} -> "
                          f"{new.admin_bind!r}) needs a restart")
    if new.pid != old.pid:
        log.warning("event=reload-ignored key=pid reason=needs-restart")
        new = new.replace(pid=old.pid)
    return new, rebind(listeners, new.binds, new.backlog, new.unix_socket_mode,
                       new.accept == "reuseport")
