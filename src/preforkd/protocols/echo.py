"""The classic event-driven echo server: every byte goes back, in order."""

from __future__ import annotations

from preforkd.protocols.base import Protocol


class EchoProtocol(Protocol):
    __slots__ = ("transport",)

    def data_received(self, data: bytes) -> None:
        self.transport.write_later(data)  # sent with the turn's other echoes

    # eof_received returns None: the transport sends what is buffered, then closes.
