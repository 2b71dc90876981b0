"""The contracts between the worker, its transports and the protocols they serve.

A protocol object serves one connection, in asyncio's shape: the worker calls
`connection_made(transport)`, then `data_received(data)` for each read,
`eof_received()` on a half-close (return True to keep the connection open
for writing), and `connection_lost(exc)` once at the end; `pause_writing` /
`resume_writing` when the client reads slower than we write.

`Transport` lists exactly what a protocol may use of its connection.
`Host` is what a protocol factory gets from its worker: the loop, the
scoreboard, who the worker is, and explicit registration of what the
protocol wants to hear about (drain, reopen, exit) or to report (connection
states, the request a stuck loop is busy with).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Collection, Sequence
from typing import Any
from typing import Protocol as _Interface

# (reading, writing, waiting) connections, as nginx's stub_status counts them
StateCounts = tuple[int, int, int]


class Transport(_Interface):
    """One connection, as protocols see it (preforkd.transport implements it)."""

    def write(self, data: bytes) -> None:
        """Send now; what the kernel does not take is buffered (pause_writing past a
        high-water mark)."""

    def write_later(self, data: bytes) -> None:
        """write() at the end of this loop turn, batched with every other connection's;
        order with write() and sendfile() is kept."""

    def flush(self) -> None:
        """Send what write_later() holds now."""

    def sendfile(self, fd: int, offset: int, count: int,
                 on_done: Callable[[], Any] | None = None) -> None:
        """Send a file span with os.sendfile after what is buffered; on_done once it is out."""

    def write_eof(self) -> None: ...

    def close(self) -> None:
        """Close once what is buffered is sent."""

    def close_lingering(self) -> None:
        """close(), then read and drop what the client still sends for a bounded time
        (after an error response: a client still sending must not get a RST instead)."""

    def abort(self) -> None:
        """Close now, dropping what is buffered."""

    def is_closing(self) -> bool: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_reading(self) -> bool: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """"peername", "sockname", "socket", and "listener": the Listener that accepted
        the connection (its `address` and `family`)."""

    def set_extra_info(self, extra: dict[str, Any]) -> None:
        """From now on get_extra_info answers these names with these values (what a
        wrapping protocol learned: a PROXY header's addresses)."""

    def setsockopt(self, level: int, option: int, value: int) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def get_protocol(self) -> Any: ...

    def set_protocol(self, protocol: Any) -> None:
        """Hand the connection to another protocol (a wrapping protocol does, once it
        has consumed its prefix)."""


class Protocol:
    transport: Any = None

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    # Flow control: by default stop reading while the peer is not reading our
    # writes, so a slow reader costs one buffer, not unbounded memory.
    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def close_when_idle(self) -> None:
        """The worker is stopping gracefully: close once nothing is in flight.

        A raw byte stream has no request boundary, so the default leaves the
        connection to its peer (or to graceful_timeout)."""


class Host:
    """What a worker offers the protocols it serves. The worker makes one and reads
    back what was registered; protocols never touch the worker itself."""

    def __init__(self, loop: Any, scoreboard: Any, slot: Any, index: int, generation: int,
                 connections: Collection[Any], listeners: Sequence[Any] = ()) -> None:
        self.loop = loop
        self.scoreboard = scoreboard
        self.slot = slot  # this worker's scoreboard slot (SlotWriter)
        self.index = index
        self.generation = generation
        self.connections = connections  # the worker's live transports (read only)
        self.listeners = listeners  # the worker's listeners (read only)
        self.nodelay_at_accept = True
        self.drain_hooks: list[Callable[[], Any]] = []
        self.stop_hooks: list[Callable[[], Any]] = []
        self.reopen_hooks: list[Callable[[], Any]] = []
        self.exit_hooks: list[Callable[[], Any]] = []
        self.count_states: Callable[[], StateCounts] | None = None
        self.find_busy: Callable[[Any], tuple[bytes, bytes] | None] | None = None
        self.byte_meter: Any = None

    def on_drain(self, hook: Callable[[], Any]) -> None:
        """Run when a graceful stop begins (before listeners close)."""
        self.drain_hooks.append(hook)

    def on_stop(self, hook: Callable[[], Any]) -> None:
        """Run when the server itself stops (not a reload): at once, before drain_delay
        and before on_drain. A health check should start failing now."""
        self.stop_hooks.append(hook)

    def on_reopen(self, hook: Callable[[], Any]) -> None:
        """Run on USR1: reopen your own files (an access log)."""
        self.reopen_hooks.append(hook)

    def on_exit(self, hook: Callable[[], Any]) -> None:
        """Run once the loop has stopped."""
        self.exit_hooks.append(hook)

    def report_states(self, count: Callable[[], StateCounts]) -> None:
        """(reading, writing, waiting) for the scoreboard, asked at each heartbeat."""
        self.count_states = count

    def report_busy(self, find: Callable[[Any], tuple[bytes, bytes] | None]) -> None:
        """find(frame) -> (method, target) of the request the code in `frame` serves:
        asked when the loop went silent, to name what it is stuck in."""
        self.find_busy = find

    def meter_bytes(self, meter: Any) -> None:
        """Count every connection's bytes into `meter.bytes_in` and `meter.bytes_out`
        (connections are then served by a transport that counts: only when asked)."""
        self.byte_meter = meter

    def set_nodelay_itself(self) -> None:
        """The protocol sets TCP_NODELAY when it matters: the worker skips it at accept."""
        self.nodelay_at_accept = False


def set_nodelay(transport: Transport) -> None:
    """TCP_NODELAY on a TCP connection (small writes go at once); nothing on a unix
    socket, where the option does not exist."""
    listener = transport.get_extra_info("listener")
    if listener is None or listener.family != socket.AF_UNIX:
        try:
            transport.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # (a unix socket without a listener, or the client is gone)
