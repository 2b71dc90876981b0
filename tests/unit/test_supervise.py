"""The master's decisions, on a worker table: no fork, no clock, no signals."""

from __future__ import annotations

import itertools

import pytest

from preforkd.supervise import (
    ABORT_GRACE,
    FAST_STOP_GRACE,
    KILL_MARGIN,
    KILL_REPEAT,
    NAME_GRACE,
    Abort,
    Goal,
    Kill,
    NameRequest,
    Spawn,
    State,
    Stop,
    StopMode,
    Verdict,
    WorkerSlot,
    backoff,
    judge_boot_failure,
    plan,
)

NOW = 1000.0
TIMEOUT = 30.0
GRACE = 10.0  # graceful_timeout
READY, BOOTING, DRAINING = State.READY, State.BOOTING, State.DRAINING
_pids = itertools.count(100)


def worker(index: int, gen: int = 1, state: State = READY, **kw) -> WorkerSlot:
    return WorkerSlot(index, gen, next(_pids), state=state, **kw)


def run(table: list[WorkerSlot], workers: int, gen: int = 1, beats: dict[int, float] | None = None,
        now: float = NOW, **goal):
    beats = {w.pid: now - 1.0 for w in table} | (beats or {})
    return plan(table, Goal(workers, gen, timeout=TIMEOUT, graceful_timeout=GRACE, **goal),
                beats, now)


def retire(w: WorkerSlot, now: float = NOW) -> Stop:
    return Stop(w.pid, StopMode.GRACEFUL, now + GRACE + KILL_MARGIN)


def test_a_full_ready_table_needs_nothing_and_wakes_for_the_next_heartbeat_deadline():
    table = [worker(0), worker(1)]
    p = run(table, 2, beats={table[0].pid: NOW - 5.0})
    assert p.decisions == []
    assert p.all_ready
    assert p.wake == NOW - 5.0 + TIMEOUT


def test_start_up_spawns_every_index():
    p = run([], 3)
    assert p.decisions == [Spawn(0, 1), Spawn(1, 1), Spawn(2, 1)]
    assert not p.all_ready


def test_a_dead_worker_is_respawned_with_its_index():
    p = run([worker(0), worker(2)], 3)  # index 1 was reaped
    assert p.decisions == [Spawn(1, 1)]
    assert not p.all_ready


def test_no_spawn_during_the_boot_failure_backoff():
    p = run([worker(0)], 2, spawn_not_before=NOW + 4.0)
    assert p.decisions == []
    assert p.wake == NOW + 4.0
    assert run([worker(0)], 2, spawn_not_before=NOW).decisions == [Spawn(1, 1)]


def test_backoff_doubles_from_half_a_second_to_thirty():
    assert [backoff(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff(5000) == 30  # no float overflow after a long crash loop


def test_what_a_boot_failure_means():
    w = worker(0, gen=2, state=BOOTING)
    assert judge_boot_failure(w, 2, started=False, rolling=False, failures=1,
                              now=NOW).verdict is Verdict.GIVE_UP
    assert judge_boot_failure(w, 2, started=True, rolling=True, failures=1,
                              now=NOW).verdict is Verdict.ROLL_BACK
    old = worker(1, gen=1, state=BOOTING)  # an old-generation respawn during a reload
    judged = judge_boot_failure(old, 2, started=True, rolling=True, failures=3, now=NOW)
    assert (judged.verdict, judged.delay, judged.retry_at) == (Verdict.BACK_OFF, 2.0, NOW + 2.0)


def test_reload_starts_with_a_canary_alone():
    old = [worker(0), worker(1), worker(2)]
    p = run(old, 3, gen=2, rolling=True)
    assert p.decisions == [Spawn(0, 2)]
    canary = worker(0, gen=2, state=BOOTING)
    assert run(old + [canary], 3, gen=2, rolling=True).decisions == []


def test_reload_rolls_the_rest_once_the_canary_is_ready_and_retires_only_replaced_indexes():
    old = [worker(0), worker(1), worker(2)]
    canary = worker(0, gen=2)
    p = run(old + [canary], 3, gen=2, rolling=True)
    assert p.decisions == [Spawn(1, 2), Spawn(2, 2), retire(old[0])]
    assert not p.all_ready
    # index 1's successor is up, index 2's still booting: only old index 1 goes
    old[0].state = DRAINING
    new = [canary, worker(1, gen=2), worker(2, gen=2, state=BOOTING)]
    p = run(old + new, 3, gen=2, rolling=True)
    assert p.decisions == [retire(old[1])]
    assert not p.all_ready
    old[1].state = DRAINING
    new[2].state = READY
    p = run(old + new, 3, gen=2, rolling=True)
    assert p.decisions == [retire(old[2])]
    assert p.all_ready  # the master reports the reload done


def test_a_rolled_back_generation_is_retired_and_the_old_one_kept():
    old = [worker(0), worker(1)]
    failed = [worker(0, gen=2), worker(1, gen=2, state=BOOTING)]
    p = run(old + failed, 2, gen=1)  # generation back to 1 after the rollback
    assert p.decisions == [retire(failed[0]), retire(failed[1])]
    assert p.all_ready


def test_ttin_spawns_the_next_index():
    assert run([worker(0), worker(1)], 3).decisions == [Spawn(2, 1)]


def test_ttou_retires_the_surplus_only_once_all_wanted_are_ready():
    table = [worker(0, state=BOOTING), worker(1)]
    assert run(table, 1).decisions == []
    table[0].state = READY
    assert run(table, 1).decisions == [retire(table[1])]


def test_winch_retires_every_worker_and_is_never_all_ready():
    table = [worker(0), worker(1, state=BOOTING)]
    p = run(table, 0)
    assert p.decisions == [retire(table[0]), retire(table[1])]
    assert not p.all_ready


def test_draining_workers_are_not_told_again():
    table = [worker(0), worker(1, state=DRAINING, kill_at=NOW + 5)]
    p = run(table, 1)
    assert p.decisions == []
    assert p.wake == NOW + 5


def test_heartbeat_timeout_names_the_request_then_aborts_then_kills():
    stuck = worker(0)
    p = run([stuck], 1, beats={stuck.pid: NOW - TIMEOUT})
    # named, and replaced in the same turn: it counts as draining at once
    assert p.decisions == [NameRequest(stuck.pid, NOW + NAME_GRACE), Spawn(0, 1)]
    assert p.wake == NOW + NAME_GRACE
    stuck.state, stuck.aborted, stuck.abort_at = DRAINING, True, NOW + NAME_GRACE
    later = NOW + NAME_GRACE
    p = run([stuck], 1, now=later, beats={stuck.pid: NOW - TIMEOUT})
    assert p.decisions[0] == Abort(stuck.pid, later + ABORT_GRACE)
    stuck.abort_at, stuck.kill_at = 0.0, later + ABORT_GRACE
    last = later + ABORT_GRACE
    p = run([stuck], 1, now=last, beats={stuck.pid: NOW - TIMEOUT})
    assert p.decisions[0] == Kill(stuck.pid, last + KILL_REPEAT)
    assert p.wake <= last + KILL_REPEAT


def test_an_abort_keeps_an_earlier_kill_deadline():
    w = worker(0, state=DRAINING, aborted=True, abort_at=NOW, kill_at=NOW + 0.3)
    assert run([w], 0).decisions == [Abort(w.pid, NOW + 0.3)]


def test_retire_deadline_is_graceful_timeout_plus_margin():
    w = worker(1)
    (stop,) = run([worker(0), w], 1).decisions
    assert stop.kill_at == NOW + GRACE + KILL_MARGIN


def test_graceful_stop_tells_every_worker_not_draining_and_spawns_nothing():
    table = [worker(0), worker(1, state=BOOTING), worker(2, state=DRAINING, kill_at=NOW + 3)]
    p = run(table, 5, stopping=StopMode.GRACEFUL)
    assert p.decisions == [Stop(w.pid, StopMode.GRACEFUL, NOW + GRACE + KILL_MARGIN, True)
                           for w in table[:2]]
    assert not p.all_ready


def test_graceful_stop_waits_drain_delay_more_unless_a_new_master_took_over():
    table = [worker(0)]
    p = run(table, 1, stopping=StopMode.GRACEFUL, drain_delay=5.0)
    assert p.decisions == [Stop(table[0].pid, StopMode.GRACEFUL, NOW + 5.0 + GRACE + KILL_MARGIN,
                                final=True)]
    p = run(table, 1, stopping=StopMode.GRACEFUL, drain_delay=5.0, handed_over=True)
    assert p.decisions == [retire(table[0])]  # the new master serves on: not a stop


def test_fast_stop_tells_every_worker_once_even_a_draining_one():
    draining = worker(0, state=DRAINING, stop=StopMode.GRACEFUL, kill_at=NOW + 12)
    told = worker(1, state=DRAINING, stop=StopMode.FAST, kill_at=NOW + 0.4)
    p = run([draining, told], 2, stopping=StopMode.FAST)
    assert p.decisions == [Stop(draining.pid, StopMode.FAST, NOW + FAST_STOP_GRACE)]
    assert p.wake == NOW + 0.4


@pytest.mark.parametrize("stopping", [None, StopMode.GRACEFUL, StopMode.FAST])
def test_a_past_kill_deadline_kills_in_any_mode(stopping):
    w = worker(0, state=DRAINING, stop=StopMode.FAST, kill_at=NOW - 0.1)
    assert Kill(w.pid, NOW + KILL_REPEAT) in run([w], 1, stopping=stopping).decisions


def test_recycling_retires_one_worker_past_a_limit_then_replaces_it_surge_first():
    from preforkd.supervise import Retire

    a, b = worker(0, max_requests=50), worker(1, max_requests=50)
    usage = {a.pid: (60, 0), b.pid: (70, 0)}
    goal = Goal(2, 1, timeout=TIMEOUT, graceful_timeout=GRACE)
    beats = {a.pid: NOW, b.pid: NOW}
    p = plan([a, b], goal, beats, NOW, usage)
    assert p.decisions == [Retire(a.pid, "max_requests requests=60 limit=50")]  # one only
    a.retiring = "max_requests"
    p = plan([a, b], goal, beats, NOW, usage)
    assert p.decisions == [Spawn(0, 1)]  # its successor first; b waits its turn
    succ = worker(0, state=BOOTING)
    beats[succ.pid] = NOW
    assert plan([a, b, succ], goal, beats, NOW, usage).decisions == []  # a serves on
    succ.state = READY
    assert plan([a, b, succ], goal, beats, NOW, usage).decisions == [retire(a)]


def test_recycling_by_lifetime_and_rss_and_when_to_look_again():
    from preforkd.supervise import RECYCLE_CHECK, Retire

    old = worker(0, retire_at=NOW - 1)
    goal = Goal(1, 1, timeout=TIMEOUT, graceful_timeout=GRACE)
    p = plan([old], goal, {old.pid: NOW}, NOW)
    assert p.decisions == [Retire(old.pid, "max_worker_lifetime")]
    fat = worker(0, max_rss_kib=100 * 1024)
    p = plan([fat], goal, {fat.pid: NOW}, NOW, {fat.pid: (0, 150 * 1024)})
    assert p.decisions == [Retire(fat.pid, "max_worker_rss rss_mib=150 limit_mib=100")]
    lean = worker(0, max_rss_kib=100 * 1024, retire_at=NOW + 5)
    p = plan([lean], goal, {lean.pid: NOW}, NOW, {lean.pid: (0, 10 * 1024)})
    assert p.decisions == [] and p.wake == NOW + RECYCLE_CHECK
    booting = [worker(0, state=BOOTING, max_requests=1), worker(1, max_requests=1)]
    p = plan(booting, Goal(2, 1, timeout=TIMEOUT), {w.pid: NOW for w in booting}, NOW,
             {w.pid: (5, 0) for w in booting})
    assert not any(isinstance(d, Retire) for d in p.decisions)  # not while one boots
