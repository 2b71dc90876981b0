"""The master process: binds, forks, supervises. Never imports the application.

Theory of operation
-------------------
The master owns the listeners, a table of WorkerSlots and one small loop:

    wait for an event or the earliest deadline
    -> read signals (bytes from the wakeup pipe) and worker messages
    -> act on flags, in priority order (stop, reload, reopen, worker count)
    -> reap_children, kill_stale_workers, maintain_worker_count

Invariants:
- Signal handlers do nothing; a signal is a byte in a pipe, read here.
- Each worker has an `index` (0..N-1, kept across respawns) and the
  `generation` it was spawned for. `self.generation` is the one being served
  or rolled out; a worker of any other generation is old and is retired
  once the current worker with its index is READY (surge first: capacity
  never dips). A reload starts with a canary: index 0 alone, the rest only
  once it is READY.
- A worker that exits before READY is a boot failure: at start-up the master
  gives up with the worker's error; during a reload the new generation is
  abandoned and the old one keeps serving; otherwise respawns back off.
- Workers get commands over their channel (a socketpair); EOF on it tells a
  worker the master died. A worker past its deadline is killed.
- Spawning a worker is one function (spawn_worker): the seam where a later
  preload mode forks from a per-generation template instead.
"""

from __future__ import annotations

import enum
import json
import os
import resource
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

# The server's own modules (never the app) load here once, so every fork starts warm,
# shares them copy-on-write, and needs no read access to them after dropping privileges.
import preforkd.http.protocol  # noqa: F401
import preforkd.protocols.echo  # noqa: F401
from preforkd import config as configmod
from preforkd import listeners as listenersmod
from preforkd import logs, pidfile
from preforkd.commands import BY_WORD, Command, signal_table
from preforkd.config import Config, ConfigError
from preforkd.control import Channel, ControlServer, FromWorker, Reply, ToWorker
from preforkd.listeners import Listener, ListenError
from preforkd.process import EX_BOOT, describe_status, drop_privileges, resolve_user, set_title
from preforkd.scoreboard import Scoreboard
from preforkd.signals import NAME_BUSY_SIGNAL, SignalPipe, block, restore
from preforkd.worker import worker_main

log = logs.log

FAST_STOP_GRACE = 0.5  # a fast-stopped worker gets this long before SIGKILL
NAME_GRACE = 0.2  # after NAME_BUSY_SIGNAL, before SIGABRT
ABORT_GRACE = 1.0  # after SIGABRT (traceback dump) a stuck worker gets this long
KILL_MARGIN = 2.0  # past graceful_timeout, before SIGKILL: the worker aborts on its own first
MAX_BACKOFF = 30.0


class State(enum.Enum):
    BOOTING = "booting"
    READY = "ready"
    DRAINING = "draining"


@dataclass(eq=False)
class WorkerSlot:
    index: int
    generation: int
    pid: int
    slot: int  # scoreboard slot
    channel: Channel
    spawned_at: float
    state: State = State.BOOTING
    kill_at: float = 0.0  # SIGKILL deadline once asked to stop (0: none)
    aborted: bool = False  # a heartbeat timeout: being killed
    abort_at: float = 0.0  # when to SIGABRT it (it first gets to name its request)
    error: str = ""  # what the worker reported before dying at boot


@dataclass
class Rollout:
    """A reload in progress: enough to report it, or to roll it back."""

    previous_generation: int
    previous_config: Config
    started_at: float
    waiters: list[Reply] = field(default_factory=list)


class Master:
    def __init__(self, config: Config, overrides: dict[str, Any],
                 listeners: list[Listener], ready_fd: int = -1) -> None:
        self.config = config
        self.overrides = overrides  # command-line values, re-applied on every reload
        self.listeners = listeners
        self.ready_fd = ready_fd  # --daemon: the waiting parent hears "ok" or the error
        self.pid = os.getpid()
        self.workers: dict[int, WorkerSlot] = {}  # pid -> slot
        self.generation = 1
        self.last_generation = 1
        self.num_workers = config.workers
        self.scoreboard = Scoreboard()
        self.started = False  # the first full set of workers has been READY
        self.stopping: str | None = None  # None, "graceful" or "fast"
        self.exit_code = 0
        self.rollout: Rollout | None = None
        self.boot_failures = 0
        self.spawn_not_before = 0.0
        self.pending: list[tuple[Command, Reply | None]] = []  # run by handle_commands
        self.signal_commands = signal_table(config.signals)
        self.events_fd = _open_events()

    # -- setup and teardown ---------------------------------------------------
    def run(self) -> int:
        set_title(f"master [{self.config.config_path or ' '.join(self.config.bind)}]")
        raise_nofile_limit(self.config)
        pidfile.write(self.config.pid, self.pid)
        self.selector = selectors.DefaultSelector()
        self.signals = SignalPipe(self.signal_commands)
        self.selector.register(self.signals.fileno(), selectors.EVENT_READ, self._read_signals)
        self.control = ControlServer.open(self.config.control_path, BY_WORD,
                                          lambda cmd, reply: self.pending.append((cmd, reply)))
        if self.control is not None:
            self.selector.register(self.control.fileno(), selectors.EVENT_READ,
                                   self.control.accept)
        ids = resolve_user(self.config.user, self.config.group)
        if ids is not None:
            keep = [self.config.pid, self.config.control_path]
            drop_privileges(ids, keep + ([self.config.error_log]
                                         if self.config.error_log != "-" else []))
        try:
            log.info("event=started pid=%d workers=%d listen=%s", self.pid, self.num_workers,
                     ",".join(lst.name for lst in self.listeners))
            self._main_loop()
        finally:
            self._teardown()
        return self.exit_code

    def _teardown(self) -> None:
        for lst in self.listeners:
            lst.close(unlink=True)
        if self.control is not None:
            self.control.close()
        pidfile.remove(self.config.pid, self.pid)
        log.info("event=exit code=%d", self.exit_code)

    # -- the loop -------------------------------------------------------------
    def _main_loop(self) -> None:
        deadline = 0.0
        while True:
            timeout = None if deadline == float("inf") else max(0.0, deadline - time.monotonic())
            for key, _ in self.selector.select(timeout):
                key.data()
            self.handle_commands()
            self.reap_children()
            if self.stopping and not self.workers:
                return
            deadline = min(self.kill_stale_workers(), self.maintain_worker_count())

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

    # -- workers: spawn, reap, kill, maintain -----------------------------------
    def spawn_worker(self, index: int, generation: int) -> WorkerSlot:
        now = time.monotonic()
        slot_no = self._free_slot()
        master_end, worker_end = socket.socketpair()
        self.scoreboard.claim(slot_no, 0, index, generation, now)
        mask = block(self.signal_commands)
        pid = os.fork()
        if pid == 0:  # the child: shed the master's state, become a worker
            code = EX_BOOT
            try:
                master_end.close()
                self._close_in_child()
                restore(mask)
                code = worker_main(self.config, self.listeners, index, generation,
                                   self.scoreboard, slot_no, worker_end)
            finally:
                os._exit(code)
        restore(mask)
        worker_end.close()
        self.scoreboard.set_pid(slot_no, pid)
        w = WorkerSlot(index, generation, pid, slot_no, Channel(master_end), now)
        self.workers[pid] = w
        self.selector.register(w.channel.fileno(), selectors.EVENT_READ,
                               lambda: self._read_worker(w))
        log.info("worker=%d pid=%d gen=%d event=spawned", index, pid, generation)
        self._event("spawned", w)
        return w

    def _close_in_child(self) -> None:
        self.signals.close()
        self.selector.close()
        if self.control is not None:
            self.control.close(unlink=False)
        for w in self.workers.values():
            w.channel.close()
        for waiter in self.rollout.waiters if self.rollout else ():
            waiter.close()
        if self.events_fd >= 0:
            os.close(self.events_fd)
        if self.ready_fd >= 0:
            os.close(self.ready_fd)

    def _free_slot(self) -> int:
        used = {w.slot for w in self.workers.values()}
        return next(i for i in range(self.scoreboard.slots) if i not in used)

    def _read_worker(self, w: WorkerSlot) -> None:
        messages = w.channel.receive()
        if messages is None:  # the worker exited (or closed it); reaping does the rest
            self._forget_channel(w)
            return
        for kind, text in messages:
            if kind is FromWorker.READY:
                self._worker_ready(w)
            elif kind is FromWorker.ERROR:
                w.error = text

    def _forget_channel(self, w: WorkerSlot) -> None:
        try:
            self.selector.unregister(w.channel.fileno())
        except (KeyError, ValueError):
            pass

    def _worker_ready(self, w: WorkerSlot) -> None:
        if w.state is State.BOOTING:
            w.state = State.READY
            self.boot_failures = 0
            log.info("worker=%d pid=%d gen=%d event=ready boot=%.3fs", w.index, w.pid,
                     w.generation, time.monotonic() - w.spawned_at)
            self._event("ready", w)

    def reap_children(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            w = self.workers.pop(pid, None)
            if w is not None:
                self._worker_exited(w, status)

    def _worker_exited(self, w: WorkerSlot, status: int) -> None:
        self._read_worker(w)  # a last "error" line may still be in the channel
        self._forget_channel(w)
        w.channel.close()
        self.scoreboard.release(w.slot)
        how = describe_status(status)
        expected = w.state is State.DRAINING
        level = log.info if expected else log.error
        level("worker=%d pid=%d gen=%d event=exited status=%s", w.index, w.pid,
              w.generation, how)
        self._event("exited", w, status=how.replace(" ", "-"))
        if w.state is State.BOOTING and not self.stopping:
            self._boot_failed(w, w.error or how)

    def _boot_failed(self, w: WorkerSlot, why: str) -> None:
        if not self.started:
            log.error("event=startup-failed worker=%d error=%s", w.index, why)
            self._report_ready(f"error worker {w.index} failed to boot: {why}")
            self.exit_code = 1
            self.stop("fast")
        elif self.rollout is not None and w.generation == self.generation:
            self._rollback(f"worker {w.index} of generation {w.generation} failed to boot: {why}")
        else:
            self.boot_failures += 1
            delay = min(0.5 * 2 ** (self.boot_failures - 1), MAX_BACKOFF)
            self.spawn_not_before = time.monotonic() + delay
            log.error("worker=%d event=boot-failed error=%s retry_in=%.1fs", w.index, why,
                      delay)

    def kill_stale_workers(self) -> float:
        """Kill workers whose heartbeat stopped or whose stop deadline passed.

        Returns the next time this needs to look again."""
        now = time.monotonic()
        timeout = self.config.timeout
        deadline = float("inf")
        for w in list(self.workers.values()):
            if w.kill_at:
                if now >= w.kill_at:
                    self._signal(w, signal.SIGKILL)
                    w.kill_at = now + 1.0  # SIGKILL again if the reap has not come yet
                deadline = min(deadline, w.kill_at)
            if w.abort_at:
                if now >= w.abort_at:
                    self._abort(w, now)
                deadline = min(deadline, w.abort_at or w.kill_at)
            if w.aborted:
                continue
            due = self.scoreboard.heartbeat(w.slot) + timeout
            if now >= due:
                # First the worker names the request it is stuck in (its handler finds it
                # on the interrupted stack, so requests pay nothing for this), then
                # SIGABRT: faulthandler dumps the stack to the log.
                self._event("timeout", w)
                w.aborted = True
                self._signal(w, NAME_BUSY_SIGNAL)
                w.abort_at = now + NAME_GRACE
                w.state = State.DRAINING
                deadline = min(deadline, w.abort_at)
            else:
                deadline = min(deadline, due)
        return deadline

    def _abort(self, w: WorkerSlot, now: float) -> None:
        info = self.scoreboard.read(w.slot)
        # A request stamped after the last beat is the one the worker is stuck in.
        busy = f" request={info.request!r}" if info.request_started > info.heartbeat > 0 else ""
        log.error("worker=%d pid=%d gen=%d event=timeout age=%.1f limit=%.1f%s action=kill",
                  w.index, w.pid, w.generation, now - info.heartbeat, self.config.timeout, busy)
        self._signal(w, signal.SIGABRT)
        w.abort_at = 0.0
        w.kill_at = min(w.kill_at or float("inf"), now + ABORT_GRACE)

    def maintain_worker_count(self) -> float:
        """Spawn missing current-generation workers, retire what they replace.

        Returns when to look again (a spawn backoff), or inf."""
        if self.stopping:
            return float("inf")
        current = {w.index: w for w in self.workers.values()
                   if w.generation == self.generation and w.state is not State.DRAINING}
        ready = {i for i, w in current.items() if w.state is State.READY}
        all_ready = all(i in ready for i in range(self.num_workers))
        now = time.monotonic()
        if now < self.spawn_not_before:
            wake = self.spawn_not_before
        else:
            wake = float("inf")
            canary = self.rollout is not None and not ready  # one new worker first
            for index in range(self.num_workers):
                if index in current:
                    continue
                if canary and current:
                    break
                current[index] = self.spawn_worker(index, self.generation)
        for w in list(self.workers.values()):
            if w.state is State.DRAINING:
                continue
            replaced = w.generation != self.generation and w.index in ready
            surplus = w.index >= self.num_workers and all_ready
            failed_gen = w.generation > self.generation
            if replaced or surplus or failed_gen:
                self.stop_worker(w, graceful=True)
        if all_ready and self.num_workers:
            self._all_ready()
        return wake

    def _all_ready(self) -> None:
        if not self.started:
            self.started = True
            log.info("event=serving workers=%d", self.num_workers)
            self._report_ready("ok")
        if self.rollout is not None:
            took = time.monotonic() - self.rollout.started_at
            log.info("event=reload-done gen=%d took=%.3fs", self.generation, took)
            self._finish_rollout(f"ok generation {self.generation} serving ({took:.2f}s)")
            self._event("reloaded", None, gen=self.generation)

    def stop_worker(self, w: WorkerSlot, graceful: bool) -> None:
        if w.state is State.DRAINING and graceful:
            return
        w.state = State.DRAINING
        grace = self.config.graceful_timeout + KILL_MARGIN if graceful else FAST_STOP_GRACE
        w.kill_at = min(w.kill_at or float("inf"), time.monotonic() + grace)
        if not w.channel.send(ToWorker.GRACEFUL if graceful else ToWorker.FAST):
            self._signal(w, signal.SIGTERM if graceful else signal.SIGINT)
        log.info("worker=%d pid=%d gen=%d event=stopping mode=%s", w.index, w.pid,
                 w.generation, "graceful" if graceful else "fast")

    def _signal(self, w: WorkerSlot, sig: signal.Signals) -> None:
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    # -- operations -------------------------------------------------------------
    def stop(self, mode: str, reply: Reply | None = None) -> None:
        if reply is not None:
            reply.send(f"ok stopping ({mode})")
        if self.stopping == "fast":
            return
        if self.stopping:
            mode = "fast"  # a second stop during a graceful one makes it fast
        log.info("event=stopping mode=%s workers=%d", mode, len(self.workers))
        self.stopping = mode
        for lst in self.listeners:
            lst.close(unlink=True)  # workers hold their own copies until they finish
        self.listeners = []
        if self.rollout is not None:
            self._finish_rollout("error stopped during the reload")
        for w in list(self.workers.values()):
            self.stop_worker(w, graceful=mode == "graceful")

    def reload(self, waiter: Reply | None = None) -> None:
        if self.stopping:
            if waiter is not None:
                waiter.send("error the master is stopping")
            return
        try:
            new = configmod.load(self.config.config_path, self.overrides)
            listeners = self._reload_listeners(new)
        except (ConfigError, ListenError) as e:
            log.error("event=reload-refused error=%s", e)
            if waiter is not None:
                waiter.send(f"error reload refused: {e}")
            return
        if new.pid != self.config.pid:
            log.warning("event=reload-ignored key=pid reason=needs-restart")
            new = new.replace(pid=self.config.pid)
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

    def _reload_listeners(self, new: Config) -> list[Listener]:
        """Keep sockets whose spec stays; bind the new ones; close the dropped ones."""
        keep = {lst.spec: lst for lst in self.listeners}
        if set(new.bind) == set(keep) or all(lst.spec.startswith("fd://") for lst in keep.values()):
            return self.listeners
        added = [spec for spec in new.bind if spec not in keep]
        fresh = {lst.spec: lst for lst in listenersmod.open_listeners(
            tuple(added), new.backlog, new.unix_socket_mode)}
        for spec, lst in keep.items():
            if spec not in new.bind:
                lst.close(unlink=True)
        return [keep.get(spec) or fresh[spec] for spec in new.bind]

    def _rollback(self, why: str) -> None:
        assert self.rollout is not None
        log.error("event=reload-failed gen=%d error=%s action=keep-gen-%d", self.generation,
                  why, self.rollout.previous_generation)
        self.generation = self.rollout.previous_generation
        self.config = self.rollout.previous_config
        self.num_workers = self.config.workers
        self._finish_rollout(f"error {why}; generation {self.generation} keeps serving")
        self._event("reload-failed", None, gen=self.generation)

    def _finish_rollout(self, message: str) -> None:
        if self.rollout is not None:
            for waiter in self.rollout.waiters:
                waiter.send(message)
            self.rollout = None

    def reopen_logs(self, reply: Reply | None = None) -> None:
        logs.reopen(self.config.error_log)
        log.info("event=reopen workers=%d", len(self.workers))
        for w in self.workers.values():
            w.channel.send(ToWorker.REOPEN)
        if reply is not None:
            reply.send("ok")

    def stop_workers(self) -> None:
        log.info("event=stop-workers workers=%d", len(self.workers))
        self.want_workers(0)

    def want_workers(self, n: int) -> None:
        self.num_workers = min(max(n, 0), 512)

    def report_status(self, reply: Reply | None) -> None:
        if reply is not None:
            reply.send(json.dumps(self.status()))

    def status(self) -> dict[str, Any]:
        workers = []
        for info in self.scoreboard.snapshot():
            w = self.workers.get(info["pid"])
            if w is not None:  # (key order as before: index, pid, generation, state, ...)
                workers.append({"index": w.index, "pid": w.pid, "generation": w.generation,
                                "state": w.state.value, **info, "rss_kib": _rss_kib(w.pid)})
        workers.sort(key=lambda d: (d["generation"], d["index"]))
        return {"master": self.pid, "generation": self.generation,
                "workers_wanted": self.num_workers, "stopping": self.stopping,
                "reloading": self.rollout is not None, "workers": workers}

    # -- reports -------------------------------------------------------------
    def _report_ready(self, message: str) -> None:
        if self.ready_fd >= 0:
            try:
                os.write(self.ready_fd, message.encode() + b"\n")
            except OSError:
                pass
            os.close(self.ready_fd)
            self.ready_fd = -1

    def _event(self, name: str, w: WorkerSlot | None, **extra: Any) -> None:
        """Lifecycle events as lines for tests and tools (PREFORKD_EVENTS names the file)."""
        if self.events_fd < 0:
            return
        fields = {"index": w.index, "gen": w.generation, "pid": w.pid} if w else {}
        fields.update(extra)
        line = name + "".join(f" {k}={v}" for k, v in fields.items()) + "\n"
        os.write(self.events_fd, line.encode())


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


def _open_events() -> int:
    path = os.environ.get("PREFORKD_EVENTS")
    if not path:
        return -1
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def raise_nofile_limit(config: Config) -> None:
    """Raise RLIMIT_NOFILE (soft to hard, or to rlimit_nofile) and warn if it is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = config.rlimit_nofile or hard
    if want != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
            soft = want
        except (ValueError, OSError) as e:
            log.warning("event=rlimit-failed want=%d error=%s", want, e)
    need = config.worker_connections + 64
    if soft < need:
        log.warning("event=rlimit-low nofile=%d worker_connections=%d: a worker can hold "
                    "about %d connections", soft, config.worker_connections, soft - 64)
