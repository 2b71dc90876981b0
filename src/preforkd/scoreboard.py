"""Shared-memory scoreboard: one fixed-size slot per live worker.

The master maps it (anonymous, shared) before forking, so every worker writes
its own slot and the master reads all of them without a syscall. A worker
stamps `heartbeat` from its loop; the master kills one that goes silent.
Fields are written by one process and read by another without locks: a
torn read of a counter is harmless, and the heartbeat is a single 8-byte
aligned store.

Past the slots, a small master area (MASTER_SIZE bytes) holds what only the
master knows, for the workers' metrics page: the generation being served, boot
failures, and workers respawned by reason. The master writes it; workers read it.

Per-request meters (responses by status class, the duration histogram, bytes in
and out) are counted in the worker's own memory (SlotWriter attributes, with no
shared-memory write per request) and published into the slot at each heartbeat.
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass
from typing import Any

# pid, index, generation, (4 bytes padding: keep the 8-byte fields aligned), heartbeat,
# started, requests, accepted, connections, request_started, method and target of what
# the worker is busy with, and the connections by state (as the protocol counts them):
# reading, writing, waiting
_SLOT = struct.Struct("<iiixxxxddQQIxxxxd8s88sIII")
_STATES = struct.Struct("<III")
OFF_STATES = 160
_BUSY = struct.Struct("<d8s88s")
# The meters, from byte 172 (every 8-byte field stays 8-byte aligned): draining (0/1),
# bytes received, bytes sent, responses by status class (1xx..5xx), the sum of request
# durations (seconds), and the duration histogram: one count per bucket of
# DURATION_BUCKETS and one past the last (+Inf); not cumulative.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATUS_CLASSES = 5
_METERS = struct.Struct(f"<IQQ{STATUS_CLASSES}Qd{len(DURATION_BUCKETS) + 1}Q")
OFF_METERS = 172
# From byte 344: app calls running past request_timeout now (threads = N), and how
# many were ever logged for it.
_OVERDUE = struct.Struct("<IxxxxQ")
OFF_OVERDUE = 344
SLOT_SIZE = 384  # (360 used; a multiple of 64: no slot shares a cache line with the next)
MAX_SLOTS = 1024

# The master area: generation, boot failures, respawns by reason (RESPAWN_REASONS).
RESPAWN_REASONS = ("crash", "timeout", "recycle", "reload")
_MASTER = struct.Struct(f"<QQ{len(RESPAWN_REASONS)}Q")
MASTER_SIZE = 64
OFF_BOOT_FAILURES = 8
OFF_RESPAWNS = 16

OFF_HEARTBEAT = 16
OFF_REQUESTS = 32
OFF_ACCEPTED = 40
OFF_CONNECTIONS = 48
OFF_REQUEST_STARTED = 56

_D = struct.Struct("<d")
_Q = struct.Struct("<Q")
_I = struct.Struct("<I")
_PID = struct.Struct("<i")
_HEAD = struct.Struct("<iii")


@dataclass
class SlotInfo:
    slot: int
    pid: int
    index: int
    generation: int
    heartbeat: float
    started: float
    requests: int
    accepted: int
    connections: int
    request_started: float
    request: str
    reading: int = 0
    writing: int = 0
    waiting: int = 0
    overdue: int = 0  # app calls running past request_timeout


@dataclass
class Meters:
    """A worker's published meters (Scoreboard.meters)."""

    index: int
    generation: int
    pid: int
    accepted: int
    reading: int
    writing: int
    waiting: int
    draining: bool
    bytes_in: int
    bytes_out: int
    classes: tuple[int, ...]  # responses: 1xx, 2xx, 3xx, 4xx, 5xx
    duration_sum: float
    buckets: tuple[int, ...]  # per bucket of DURATION_BUCKETS, then +Inf; not cumulative
    overdue: int = 0  # app calls running past request_timeout now
    overdue_total: int = 0  # and how many were ever logged for it


@dataclass
class MasterInfo:
    generation: int
    boot_failures: int
    respawns: dict[str, int]  # by reason (RESPAWN_REASONS)


class Scoreboard:
    def __init__(self, slots: int = MAX_SLOTS) -> None:
        self.slots = slots
        self.mem = mmap.mmap(-1, slots * SLOT_SIZE + MASTER_SIZE)
        self.master_base = slots * SLOT_SIZE

    def claim(self, slot: int, pid: int, index: int, generation: int, now: float) -> None:
        self.release(slot)  # (the meters too: nothing of an earlier worker is left)
        _SLOT.pack_into(self.mem, slot * SLOT_SIZE, pid, index, generation, now, now,
                        0, 0, 0, 0.0, b"", b"", 0, 0, 0)

    def set_pid(self, slot: int, pid: int) -> None:
        _PID.pack_into(self.mem, slot * SLOT_SIZE, pid)

    def release(self, slot: int) -> None:
        self.mem[slot * SLOT_SIZE:(slot + 1) * SLOT_SIZE] = bytes(SLOT_SIZE)

    def read(self, slot: int) -> SlotInfo:
        (pid, index, gen, hb, started, requests, accepted, conns, rstart,
         method, target, reading, writing, waiting) = _SLOT.unpack_from(self.mem,
                                                                      slot * SLOT_SIZE)
        request = method.rstrip(b"\0") + b" " + target.rstrip(b"\0")
        overdue = _OVERDUE.unpack_from(self.mem, slot * SLOT_SIZE + OFF_OVERDUE)[0]
        return SlotInfo(slot, pid, index, gen, hb, started, requests, accepted, conns,
                        rstart, request.decode("latin-1"), reading, writing, waiting, overdue)

    def snapshot(self, now: float | None = None) -> list[dict[str, Any]]:
        """One dict per claimed slot (pid set), in slot order: the per-worker part of
        both status documents (the master's control-socket `status`, which adds
        `state` and `rss_kib`, and the workers' HTTP `status_path`).

        Keys: index, pid, generation, requests, accepted, connections, reading,
        writing, waiting, overdue (app calls running past request_timeout),
        heartbeat_age (seconds since the last beat at `now`, default
        time.monotonic(), rounded to 3 places). Values are JSON-ready."""
        now = time.monotonic() if now is None else now
        out = []
        for slot in range(self.slots):
            if not _PID.unpack_from(self.mem, slot * SLOT_SIZE)[0]:
                continue  # free: skip the full unpack
            info = self.read(slot)
            out.append({"index": info.index, "pid": info.pid, "generation": info.generation,
                        "requests": info.requests, "accepted": info.accepted,
                        "connections": info.connections, "reading": info.reading,
                        "writing": info.writing, "waiting": info.waiting,
                        "overdue": info.overdue,
                        "heartbeat_age": round(now - info.heartbeat, 3)})
        return out

    def meters(self) -> list[Meters]:
        """The meters of every claimed slot, in slot order (for the metrics page)."""
        out = []
        for slot in range(self.slots):
            base = slot * SLOT_SIZE
            if not _PID.unpack_from(self.mem, base)[0]:
                continue
            pid, index, gen = _HEAD.unpack_from(self.mem, base)
            accepted = _Q.unpack_from(self.mem, base + OFF_ACCEPTED)[0]
            states = _STATES.unpack_from(self.mem, base + OFF_STATES)
            values = _METERS.unpack_from(self.mem, base + OFF_METERS)
            n = 3 + STATUS_CLASSES
            overdue = _OVERDUE.unpack_from(self.mem, base + OFF_OVERDUE)
            out.append(Meters(index, gen, pid, accepted, *states, bool(values[0]), values[1],
                              values[2], values[3:n], values[n], values[n + 1:], *overdue))
        return out

    # -- the master area (written by the master only) ------------------------------
    def set_generation(self, generation: int) -> None:
        _Q.pack_into(self.mem, self.master_base, generation)

    def count_boot_failure(self) -> None:
        self._add(OFF_BOOT_FAILURES)

    def count_respawn(self, reason: str) -> None:
        self._add(OFF_RESPAWNS + 8 * RESPAWN_REASONS.index(reason))

    def _add(self, offset: int) -> None:
        at = self.master_base + offset
        _Q.pack_into(self.mem, at, _Q.unpack_from(self.mem, at)[0] + 1)

    def master(self) -> MasterInfo:
        generation, boot_failures, *respawns = _MASTER.unpack_from(self.mem, self.master_base)
        return MasterInfo(generation, boot_failures, dict(zip(RESPAWN_REASONS, respawns,
                                                                   strict=True)))

    def heartbeat(self, slot: int) -> float:
        return _D.unpack_from(self.mem, slot * SLOT_SIZE + OFF_HEARTBEAT)[0]

    def view(self, slot: int) -> SlotWriter:
        return SlotWriter(self.mem, slot * SLOT_SIZE)


class SlotWriter:
    """The worker's handle on its own slot. Counters are plain attributes, counted in
    the worker's memory and published by `beat` (no shared-memory write per request)."""

    __slots__ = ("mem", "base", "requests", "accepted", "draining", "bytes_in", "bytes_out",
                 "classes", "duration_sum", "buckets", "overdue", "overdue_total")

    def __init__(self, mem: mmap.mmap, base: int) -> None:
        self.mem = mem
        self.base = base
        self.requests = 0
        self.accepted = 0
        self.draining = False
        self.bytes_in = 0  # (counted only while metrics are on: see http/metrics.py)
        self.bytes_out = 0
        self.classes = [0] * 10  # responses by status // 100 (1..5 are published)
        self.duration_sum = 0.0
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # index: bisect_left(bounds, d)
        self.overdue = 0  # (set by the HTTP server's sweep: see ThreadPool.report_overdue)
        self.overdue_total = 0

    def beat(self, now: float, connections: int,
             states: tuple[int, int, int] = (0, 0, 0)) -> None:
        """Publish the counters, then stamp the heartbeat (last: a reader that sees this
        beat's stamp sees what it published)."""
        _STATES.pack_into(self.mem, self.base + OFF_STATES, *states)
        _I.pack_into(self.mem, self.base + OFF_CONNECTIONS, connections)
        _Q.pack_into(self.mem, self.base + OFF_REQUESTS, self.requests)
        self.publish_meters()
        _D.pack_into(self.mem, self.base + OFF_HEARTBEAT, now)

    def publish_meters(self) -> None:
        """The counters (accepted connections and the meters), between two beats too: the
        worker answering the metrics page publishes its own first."""
        _Q.pack_into(self.mem, self.base + OFF_ACCEPTED, self.accepted)
        _METERS.pack_into(self.mem, self.base + OFF_METERS, self.draining, self.bytes_in,
                          self.bytes_out, *self.classes[1:STATUS_CLASSES + 1],
                          self.duration_sum, *self.buckets)
        _OVERDUE.pack_into(self.mem, self.base + OFF_OVERDUE, self.overdue, self.overdue_total)

    def busy(self, now: float, method: bytes, target: bytes) -> None:
        """The request a worker whose loop went silent is stuck in, stamped by its
        NAME_BUSY_SIGNAL handler for the master's log (struct truncates and pads the
        strings). Heartbeats are stamped between callbacks, so a stamp newer than
        the last heartbeat is current."""
        _BUSY.pack_into(self.mem, self.base + OFF_REQUEST_STARTED, now, method, target)
