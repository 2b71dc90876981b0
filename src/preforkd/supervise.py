"""What the master should do about its workers, decided apart from doing it.

Theory of operation
-------------------
`plan(workers, goal, beats, now)` reads the worker table (WorkerSlots), what
the master wants (a Goal: how many workers, of which generation, whether a
reload is rolling or a stop under way, the spawn backoff, the timeouts), each
worker's last heartbeat and the time, and returns a Plan: a list of decisions
(Spawn, Stop, NameRequest, Abort, Kill) and when to look again. It does no
I/O, reads no clock and logs nothing; the master carries the decisions out
and updates the table, so every rule below is tested without a fork
(tests/unit/test_supervise.py).

The rules, in the order plan applies them:

1. Deadlines. A worker past its `kill_at` gets SIGKILL (and again every
   KILL_REPEAT s until it is reaped); one past its `abort_at` gets SIGABRT
   (faulthandler writes its stack to the log) and ABORT_GRACE more before
   SIGKILL.
2. Heartbeats. A worker silent for `timeout` s is first asked to name the
   request it is stuck in (NAME_BUSY_SIGNAL), and gets SIGABRT NAME_GRACE s
   later. It counts as draining from that moment, so rule 4 replaces it in
   the same turn.
3. Stopping. During a graceful stop every worker not yet draining is told to
   drain, with a kill deadline `graceful_timeout` + KILL_MARGIN away; during
   a fast stop every worker not yet told so is told to exit now, with
   FAST_STOP_GRACE before SIGKILL. Nothing is spawned or retired.
4. Otherwise, keep the count. Each index 0..workers-1 missing from the
   current generation (or held by a retiring worker) is spawned (the index
   survives respawns), but not before `spawn_not_before` (the boot-failure
   backoff), and during a reload only one while no worker of the new
   generation is READY yet (the canary). A worker is retired (told to
   drain) once its successor is up, so capacity never dips: an old-generation
   or retiring worker once the current worker with its index is READY, a
   surplus index once every wanted worker is READY, and at once a worker of
   a generation newer than the current one (a reload that was rolled back).
5. Recycling. Once every wanted worker is READY and none is retiring, the
   first READY worker past one of its limits (max_requests, max_worker_lifetime,
   max_worker_rss; drawn with jitter at spawn) retires: rule 4 then spawns its
   successor and stops it once that one is READY. One at a time.

`judge_boot_failure` says what a death before READY means: give up (at
start-up), roll the reload back, or back off (0.5 s doubling to 30 s).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from preforkd.control import Channel

FAST_STOP_GRACE = 0.5  # a fast-stopped worker gets this long before SIGKILL
NAME_GRACE = 0.2  # after NAME_BUSY_SIGNAL, before SIGABRT
ABORT_GRACE = 1.0  # after SIGABRT (traceback dump) a stuck worker gets this long
KILL_MARGIN = 2.0  # past graceful_timeout, before SIGKILL: the worker aborts on its own first
KILL_REPEAT = 1.0  # SIGKILL again if the reap has not come yet
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
INF = float("inf")


class State(enum.Enum):
    BOOTING = "booting"
    READY = "ready"
    DRAINING = "draining"


class StopMode(enum.Enum):
    GRACEFUL = "graceful"
    FAST = "fast"


@dataclass(eq=False)
class WorkerSlot:
    """The master's record of one worker: one row of the worker table."""

    index: int
    generation: int
    pid: int
    slot: int = 0  # its scoreboard slot
    channel: Channel | None = None  # the master's end of its socketpair
    spawned_at: float = 0.0
    state: State = State.BOOTING
    stop: StopMode | None = None  # what it has been told (None: nothing yet)
    kill_at: float = 0.0  # SIGKILL deadline once asked to stop (0: none)
    aborted: bool = False  # a heartbeat timeout: being killed
    abort_at: float = 0.0  # when to SIGABRT it (it first gets to name its request)
    error: str = ""  # what the worker reported before dying at boot
    # Recycling limits, drawn with jitter when it is spawned (0: none), and why it is
    # being replaced once it passed one ("": it is not).
    max_requests: int = 0
    retire_at: float = 0.0  # max_worker_lifetime's deadline
    max_rss_kib: int = 0
    retiring: str = ""


@dataclass(frozen=True)
class Goal:
    """What the master wants of its workers, and the limits it holds them to."""

    workers: int  # how many (indexes 0..workers-1)
    generation: int  # the one being served or rolled out
    rolling: bool = False  # a reload in progress: canary first
    stopping: StopMode | None = None
    spawn_not_before: float = 0.0  # the boot-failure backoff
    timeout: float = 30.0  # heartbeat
    graceful_timeout: float = 30.0
    # A graceful stop of the server fails the workers' health check for drain_delay
    # before they drain; not when a new master took over (USR2): it serves on.
    drain_delay: float = 0.0
    handed_over: bool = False


@dataclass(frozen=True)
class Spawn:
    index: int
    generation: int


@dataclass(frozen=True)
class Stop:
    """Tell the worker to drain (GRACEFUL) or exit now (FAST); SIGKILL at kill_at.
    `final`: the server itself stops (health fails first, for drain_delay)."""

    pid: int
    mode: StopMode
    kill_at: float
    final: bool = False


@dataclass(frozen=True)
class NameRequest:
    """Heartbeat timeout: NAME_BUSY_SIGNAL now, SIGABRT at abort_at."""

    pid: int
    abort_at: float


@dataclass(frozen=True)
class Abort:
    """SIGABRT now (the stack goes to the log), SIGKILL at kill_at."""

    pid: int
    kill_at: float


@dataclass(frozen=True)
class Kill:
    """SIGKILL now, and again at again_at if it has not been reaped by then."""

    pid: int
    again_at: float


@dataclass(frozen=True)
class Retire:
    """Recycle it: a successor with its index is spawned, then it is stopped."""

    pid: int
    reason: str  # e.g. "max_requests requests=51 limit=53"


Decision = Spawn | Stop | NameRequest | Abort | Kill | Retire
RECYCLE_CHECK = 1.0  # how often request counts and RSS are looked at (when limited)


@dataclass
class Plan:
    decisions: list[Decision] = field(default_factory=list)
    wake: float = INF  # plan again by then at the latest (inf: only when something happens)
    all_ready: bool = False  # every wanted worker of the current generation is READY


def plan(workers: Iterable[WorkerSlot], goal: Goal, beats: Mapping[int, float],
         now: float, usage: Mapping[int, tuple[int, int]] | None = None) -> Plan:
    """The decisions for this turn of the master loop; `beats` maps pid -> last heartbeat,
    `usage` pid -> (requests served, RSS in KiB) where recycling limits are set."""
    table = list(workers)
    out = Plan()
    named = _deadlines(table, goal, beats, now, out)
    if goal.stopping is not None:
        _stop_all(table, goal.stopping, goal, now, out)
    else:
        _keep_count(table, goal, named, now, out)
        if out.all_ready:
            _recycle(table, usage or {}, now, out)
    return out


def _deadlines(table: list[WorkerSlot], goal: Goal, beats: Mapping[int, float], now: float,
               out: Plan) -> set[int]:
    """Rules 1 and 2; returns the pids whose heartbeat timed out just now."""
    named = set()
    for w in table:
        kill_at, abort_at = w.kill_at, w.abort_at
        if kill_at:
            if now >= kill_at:
                kill_at = now + KILL_REPEAT
                out.decisions.append(Kill(w.pid, kill_at))
            out.wake = min(out.wake, kill_at)
        if abort_at:
            if now >= abort_at:
                kill_at, abort_at = min(kill_at or INF, now + ABORT_GRACE), 0.0
                out.decisions.append(Abort(w.pid, kill_at))
            out.wake = min(out.wake, abort_at or kill_at)
        if w.aborted:
            continue
        due = beats[w.pid] + goal.timeout
        if now >= due:
            named.add(w.pid)
            out.decisions.append(NameRequest(w.pid, now + NAME_GRACE))
            out.wake = min(out.wake, now + NAME_GRACE)
        else:
            out.wake = min(out.wake, due)
    return named


def _stop_all(table: list[WorkerSlot], mode: StopMode, goal: Goal, now: float,
              out: Plan) -> None:
    """Rule 3."""
    for w in table:
        if mode is StopMode.GRACEFUL and w.state is not State.DRAINING:
            delay = 0.0 if goal.handed_over else goal.drain_delay
            _stop(w, mode, now + delay + goal.graceful_timeout + KILL_MARGIN, out,
                  final=not goal.handed_over)
        elif mode is StopMode.FAST and w.stop is not StopMode.FAST:
            _stop(w, mode, now + FAST_STOP_GRACE, out)


def _keep_count(table: list[WorkerSlot], goal: Goal, named: set[int], now: float,
                out: Plan) -> None:
    """Rule 4."""
    live = [w for w in table if w.state is not State.DRAINING and w.pid not in named]
    # (a retiring worker serves on, but its index is its successor's)
    current = {w.index: w for w in live if w.generation == goal.generation and not w.retiring}
    ready = {i for i, w in current.items() if w.state is State.READY}
    all_ready = all(i in ready for i in range(goal.workers))
    if now < goal.spawn_not_before:
        out.wake = min(out.wake, goal.spawn_not_before)
    else:
        have = set(current)
        canary = goal.rolling and not ready  # one new worker first
        for index in range(goal.workers):
            if index in have:
                continue
            if canary and have:
                break
            out.decisions.append(Spawn(index, goal.generation))
            have.add(index)
    for w in live:
        replaced = (w.generation != goal.generation or w.retiring) and w.index in ready
        surplus = w.index >= goal.workers and all_ready
        failed_generation = w.generation > goal.generation
        if replaced or surplus or failed_generation:
            _stop(w, StopMode.GRACEFUL, now + goal.graceful_timeout + KILL_MARGIN, out)
    out.all_ready = all_ready and goal.workers > 0


def _recycle(table: list[WorkerSlot], usage: Mapping[int, tuple[int, int]], now: float,
             out: Plan) -> None:
    """Rule 5: with every wanted worker READY and none retiring, the first one past a
    recycling limit retires (one at a time: capacity never dips)."""
    limited = False
    for w in table:
        if w.state is not State.READY or w.retiring:
            if w.retiring:
                return  # one at a time
            continue
        if w.retire_at:
            out.wake = min(out.wake, w.retire_at)
        limited = limited or bool(w.max_requests or w.max_rss_kib)
        reason = _past_limit(w, usage.get(w.pid), now)
        if reason:
            out.decisions.append(Retire(w.pid, reason))
            out.wake = now  # plan again at once: its successor is spawned next turn
            return
    if limited:
        out.wake = min(out.wake, now + RECYCLE_CHECK)


def _past_limit(w: WorkerSlot, usage: tuple[int, int] | None, now: float) -> str:
    requests, rss_kib = usage or (0, 0)
    if w.max_requests and requests >= w.max_requests:
        return f"max_requests requests={requests} limit={w.max_requests}"
    if w.retire_at and now >= w.retire_at:
        return "max_worker_lifetime"
    if w.max_rss_kib and rss_kib >= w.max_rss_kib:
        return f"max_worker_rss rss_mib={rss_kib // 1024} limit_mib={w.max_rss_kib // 1024}"
    return ""


def _stop(w: WorkerSlot, mode: StopMode, kill_at: float, out: Plan,
          final: bool = False) -> None:
    kill_at = min(w.kill_at or INF, kill_at)
    out.decisions.append(Stop(w.pid, mode, kill_at, final))
    out.wake = min(out.wake, kill_at)


class Verdict(enum.Enum):
    GIVE_UP = "give-up"  # at start-up: exit with the worker's error, no fork loop
    ROLL_BACK = "roll-back"  # a new generation cannot boot: keep the old one
    BACK_OFF = "back-off"  # respawn, but not before retry_at


@dataclass(frozen=True)
class BootFailure:
    verdict: Verdict
    delay: float = 0.0
    retry_at: float = 0.0


def judge_boot_failure(w: WorkerSlot, generation: int, started: bool, rolling: bool,
                       failures: int, now: float) -> BootFailure:
    """What the death of `w` before READY means. `started`: the first full set of
    workers has been READY; `failures`: boot failures in a row, this one included."""
    if not started:
        return BootFailure(Verdict.GIVE_UP)
    if rolling and w.generation == generation:
        return BootFailure(Verdict.ROLL_BACK)
    delay = backoff(failures)
    return BootFailure(Verdict.BACK_OFF, delay, now + delay)


def backoff(failures: int) -> float:
    """Seconds to wait before the next spawn after `failures` boot failures in a row."""
    doublings = min(max(failures, 1) - 1, 16)  # (capped: a float overflows past 2**1023)
    return min(FIRST_BACKOFF * 2 ** doublings, MAX_BACKOFF)
