"""The scoreboard's snapshot: what both status documents show per worker."""

from __future__ import annotations

from preforkd.scoreboard import OFF_HEARTBEAT, SLOT_SIZE, Scoreboard


def test_snapshot_lists_claimed_slots_in_slot_order():
    sb = Scoreboard(4)
    sb.claim(2, 0, 1, 5, 10.0)
    sb.set_pid(2, 4712)
    sb.claim(0, 4711, 0, 5, 10.0)
    writer = sb.view(0)
    writer.requests, writer.accepted = 7, 3
    writer.beat(11.0, 2, (1, 0, 1))
    assert sb.snapshot(now=11.25) == [
        {"index": 0, "pid": 4711, "generation": 5, "requests": 7, "accepted": 3,
         "connections": 2, "reading": 1, "writing": 0, "waiting": 1, "heartbeat_age": 0.25},
        {"index": 1, "pid": 4712, "generation": 5, "requests": 0, "accepted": 0,
         "connections": 0, "reading": 0, "writing": 0, "waiting": 0, "heartbeat_age": 1.25},
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
