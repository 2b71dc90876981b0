"""The scoreboard's snapshot: what both status documents show per worker."""

from __future__ import annotations

from preforkd.scoreboard import OFF_HEARTBEAT, SLOT_SIZE, Scoreboard


def test_snapshot_lists_claimed_slots_in_slot_order():
    sb = Scoreboard(4)
    sb.claim(2, 0, 1, 5, 10.0)
    sb.set_pid(2, 4712)
    sb.claim(0, 4711, 0, 5, 10.0)
    writer = sb.view(0)
    writer.requests, writer.accepted, writer.overdue = 7, 3, 2
    writer.beat(11.0, 2, (1, 0, 1))
    assert sb.snapshot(now=11.25) == [
        {"index": 0, "pid": 4711, "generation": 5, "requests": 7, "accepted": 3,
         "connections": 2, "reading": 1, "writing": 0, "waiting": 1, "overdue": 2,
         "heartbeat_age": 0.25},
        {"index": 1, "pid": 4712, "generation": 5, "requests": 0, "accepted": 0,
         "connections": 0, "reading": 0, "writing": 0, "waiting": 0, "overdue": 0,
         "heartbeat_age": 1.25},
    ]


def test_released_and_unclaimed_slots_are_left_out():
    sb = Scoreboard(3)
    assert sb.snapshot() == []
    sb.claim(1, 99, 0, 1, 0.0)
    sb.release(1)
    assert sb.snapshot() == []


def test_slot_layout_the_worker_writes_is_unchanged():
    sb = Scoreboard(2)
    sb.claim(1, 5, 0, 1, 0.0)
    sb.view(1).beat(42.5, 0)
    assert sb.heartbeat(1) == 42.5
    assert sb.mem[SLOT_SIZE + OFF_HEARTBEAT:SLOT_SIZE + OFF_HEARTBEAT + 8] != bytes(8)
    assert sb.read(1).heartbeat == 42.5


def test_meters_are_published_at_the_beat_not_before():
    sb = Scoreboard(2)
    sb.claim(1, 4711, 3, 2, 0.0)
    w = sb.view(1)
    w.accepted, w.bytes_in, w.bytes_out, w.draining = 4, 100, 2000, True
    w.classes[2] += 3
    w.classes[5] += 1
    w.buckets[0] += 2
    w.buckets[-1] += 1
    w.duration_sum = 12.5
    before = sb.meters()[0]
    assert (before.bytes_in, before.classes, before.draining) == (0, (0,) * 5, False)
    w.beat(1.0, 2, (1, 1, 0))
    m = sb.meters()[0]
    assert (m.index, m.generation, m.pid, m.accepted) == (3, 2, 4711, 4)
    assert (m.reading, m.writing, m.waiting, m.draining) == (1, 1, 0, True)
    assert (m.bytes_in, m.bytes_out) == (100, 2000)
    assert m.classes == (0, 3, 0, 0, 1)
    assert m.duration_sum == 12.5
    assert m.buckets == (2,) + (0,) * 11 + (1,)


def test_a_new_claim_starts_from_zero_meters():
    sb = Scoreboard(1)
    sb.claim(0, 1, 0, 1, 0.0)
    w = sb.view(0)
    w.bytes_in = 7
    w.classes[2] = 9
    w.beat(1.0, 0)
    sb.claim(0, 2, 0, 2, 0.0)
    m = sb.meters()[0]
    assert (m.pid, m.bytes_in, m.classes, m.generation) == (2, 0, (0,) * 5, 2)


def test_slots_stay_aligned_and_the_master_area_follows_them():
    from preforkd import scoreboard

    assert SLOT_SIZE % 64 == 0
    assert scoreboard.OFF_METERS + scoreboard._METERS.size <= SLOT_SIZE
    assert (scoreboard.OFF_METERS + 4) % 8 == 0  # the first 8-byte meter
    sb = Scoreboard(2)
    assert len(sb.mem) == 2 * SLOT_SIZE + scoreboard.MASTER_SIZE
    sb.claim(1, 5, 0, 1, 0.0)
    sb.view(1).beat(1.0, 0)
    sb.set_generation(3)
    sb.count_boot_failure()
    sb.count_respawn("crash")
    sb.count_respawn("crash")
    sb.count_respawn("reload")
    info = sb.master()
    assert (info.generation, info.boot_failures) == (3, 1)
    assert info.respawns == {"crash": 2, "timeout": 0, "recycle": 0, "reload": 1}
    sb.release(1)  # a slot's release leaves the master area alone
    assert sb.master().respawns["crash"] == 2
