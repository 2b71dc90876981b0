"""Wrapping protocols: consume a prefix of the stream, then hand the rest on.

A PROXY protocol header (and later a TLS handshake) comes before the bytes
the inner protocol speaks, and may change who the peer is. A
WrappingProtocol buffers until `consume()` finds the end of its prefix, then
makes the inner protocol, gives it a TransportView (the same connection,
with the extra info the prefix changed), moves the transport's events to it
with `set_protocol`, and feeds it what followed the prefix. From then on the
wrapper is out of the way: reads go straight to the inner protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from preforkd.protocols.base import Protocol, Transport


class TransportView:
    """A transport with some of its extra info replaced (e.g. "peername")."""

    __slots__ = ("_transport", "_extra")

    def __init__(self, transport: Transport, extra: dict[str, Any]) -> None:
        self._transport = transport
        self._extra = extra

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._extra:
            return self._extra[name]
        return self._transport.get_extra_info(name, default)

    # The rest is the connection itself.
    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def write_later(self, data: bytes) -> None:
        self._transport.write_later(data)

    def flush(self) -> None:
        self._transport.flush()

    def sendfile(self, fd: int, offset: int, count: int,
                 on_done: Callable[[], Any] | None = None) -> None:
        self._transport.sendfile(fd, offset, count, on_done)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def close(self) -> None:
        self._transport.close()

    def close_lingering(self) -> None:
        self._transport.close_lingering()

    def abort(self) -> None:
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self._transport.setsockopt(level, option, value)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_protocol(self) -> Any:
        return self._transport.get_protocol()

    def set_protocol(self, protocol: Any) -> None:
        self._transport.set_protocol(protocol)


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
        inner = self.inner_factory()
        transport.set_protocol(inner)
        inner.connection_made(TransportView(transport, extra) if extra else transport)
        if rest and not transport.is_closing():
            inner.data_received(rest)

    def rejected(self, error: PrefixError) -> None:
        """A malformed prefix: nothing the inner protocol could answer. Close."""
        self.transport.abort()

    def eof_received(self) -> bool | None:
        return None  # the peer left before its prefix ended: close
