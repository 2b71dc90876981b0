"""The protocol interface, in asyncio's shape.

A protocol object serves one connection. The worker calls
`connection_made(transport)`, then `data_received(data)` for each read,
`eof_received()` on a half-close (return True to keep the connection open
for writing), and `connection_lost(exc)` once at the end.
"""

from __future__ import annotations

from typing import Any


class Protocol:
    transport: Any = None

    def connection_made(self, transport: Any) -> None:
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
