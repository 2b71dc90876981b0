"""Shared-memory scoreboard: one fixed-size slot per live worker.

The master maps it (anonymous, shared) before forking, so every worker writes
its own slot and the master reads all of them without a syscall. A worker
stamps `heartbeat` from its loop; the master kills one that goes silent.
Fields are written by one process and read by another without locks: a
torn read of a counter is harmless, and the heartbeat is a single 8-byte
aligned store.
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
SLOT_SIZE = 192
MAX_SLOTS = 1024

OFF_HEARTBEAT = 16
OFF_REQUESTS = 32
OFF_ACCEPTED = 40
OFF_CONNECTIONS = 48
OFF_REQUEST_STARTED = 56

_D = struct.Struct("<d")
_Q = struct.Struct("<Q")
_I = struct.Struct("<I")
_PID = struct.Struct("<i")


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


class Scoreboard:
    def __init__(self, slots: int = MAX_SLOTS) -> None:
        self.slots = slots
        self.mem = mmap.mmap(-1, slots * SLOT_SIZE)

    def claim(self, slot: int, pid: int, index: int, generation: int, now: float) -> None:
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
        return SlotInfo(slot, pid, index, gen, hb, started, requests, accepted, conns,
                        rstart, request.decode("latin-1"), reading, writing, waiting)

    def snapshot(self, now: float | None = None) -> list[dict[str, Any]]:
        """One dict per claimed slot (pid set), in slot order: the per-worker part of
        both status documents (the master's control-socket `status`, which adds
        `state` and `rss_kib`, and the workers' HTTP `status_path`).

        Keys: index, pid, generation, requests, accepted, connections, reading,
        writing, waiting, heartbeat_age (seconds since the last beat at `now`,
        default time.monotonic(), rounded to 3 places). Values are JSON-ready."""
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
                        "heartbeat_age": round(now - info.heartbeat, 3)})
        return out

    def heartbeat(self, slot: int) -> float:
        return _D.unpack_from(self.mem, slot * SLOT_SIZE + OFF_HEARTBEAT)[0]

    def view(self, slot: int) -> SlotWriter:
        return SlotWriter(self.mem, slot * SLOT_SIZE)


class SlotWriter:
    """The worker's handle on its own slot; the hot-path writes are single pack_into calls."""

    __slots__ = ("mem", "base", "requests", "accepted")

    def __init__(self, mem: mmap.mmap, base: int) -> None:
        self.mem = mem
        self.base = base
        self.requests = 0
        self.accepted = 0

    def beat(self, now: float, connections: int,
             states: tuple[int, int, int] = (0, 0, 0)) -> None:
        _D.pack_into(self.mem, self.base + OFF_HEARTBEAT, now)
        _STATES.pack_into(self.mem, self.base + OFF_STATES, *states)
        _I.pack_into(self.mem, self.base + OFF_CONNECTIONS, connections)
        _Q.pack_into(self.mem, self.base + OFF_REQUESTS, self.requests)
        _Q.pack_into(self.mem, self.base + OFF_ACCEPTED, self.accepted)

    def busy(self, now: float, method: bytes, target: bytes) -> None:
        """The request a worker whose loop went silent is stuck in, stamped by its
        NAME_BUSY_SIGNAL handler for the master's log (struct truncates and pads the
        strings). Heartbeats are stamped between callbacks, so a stamp newer than
        the last heartbeat is current."""
        _BUSY.pack_into(self.mem, self.base + OFF_REQUEST_STARTED, now, method, target)
