"""Wrapping protocols: consume a prefix of the stream, then hand the rest on.

A PROXY protocol header (and later a TLS handshake) comes before the bytes
the inner protocol speaks, and may change who the peer is. A
WrappingProtocol buffers until `consume()` finds the end of its prefix, then
sets the extra info the prefix changed on the transport (set_extra_info: the
same connection, no wrapper in between), makes the inner protocol, moves the
transport's events to it with `set_protocol`, and feeds it what followed the
prefix. From then on the wrapper is out of the way: reads and writes go
straight between the transport and the inner protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from preforkd.protocols.base import Protocol


class PrefixError(Exception):
    """The prefix is malformed: the connection is closed (str(self) is logged)."""


class WrappingProtocol(Protocol):
    """Subclasses implement consume(); MAX_PREFIX bounds what is buffered meanwhile."""

    MAX_PREFIX = 4096

    def __init__(self, inner_factory: Callable[[], Any]) -> None:
        self.inner_factory = inner_factory
        self.buffer = b""

    def consume(self, data: bytes) -> tuple[int, dict[str, Any]] | None:
        """Look at what arrived so far: None while the prefix is incomplete, else
        (its length, the extra info it sets); PrefixError if it is malformed."""
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer = self.buffer + data
        try:
            found = self.consume(buffer)
            if found is None and len(buffer) > self.MAX_PREFIX:
                raise PrefixError(f"no complete prefix in {len(buffer)} bytes")
        except PrefixError as e:
            self.rejected(e)
            return
        if found is not None:
            length, extra = found
            self.hand_over(buffer[length:], extra)

    def hand_over(self, rest: bytes, extra: dict[str, Any]) -> None:
        transport = self.transport
        self.buffer = b""
        if extra:
            transport.set_extra_info(extra)
        inner = self.inner_factory()
        transport.set_protocol(inner)
        inner.connection_made(transport)
        if rest and not transport.is_closing():
            inner.data_received(rest)

    def rejected(self, error: PrefixError) -> None:
        """A malformed prefix: nothing the inner protocol could answer. Close."""
        self.transport.abort()

    def eof_received(self) -> bool | None:
        return None  # the peer left before its prefix ended: close
