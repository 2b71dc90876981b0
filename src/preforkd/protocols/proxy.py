"""The PROXY protocol, v1 (text) and v2 (binary), as HAProxy's proxy-protocol.txt defines it.

Theory of operation
-------------------
A load balancer in front of us opens its own connection, so the socket's peer is
the balancer. With the PROXY protocol it first sends one header naming the real
client, then the client's bytes, unchanged. That is a prefix of the stream, so
this is a WrappingProtocol: it buffers until `parse()` finds the end of the
header, then hands the connection, with the header's addresses as "peername" and
"sockname", to the inner protocol (HTTP, echo, a user's), which never knows.
The header is parsed once per connection, never per request: after the hand-over
the wrapper is out of the way and a kept-alive connection's requests cost nothing.

The header itself is parsed by protocols/proxy_header.py (sans-I/O).

What is trusted: only the connection's real peer, checked against the allow list
before a byte is read. Whoever may connect may claim any address, so a listener
speaking the PROXY protocol must be reachable by the balancers alone: `allow`
says which (ipaddress networks, or strings ip_network() takes; None or empty:
anyone, for a listener the network already fences off). A peer on a unix socket
has no address: it is allowed only if the allow list holds the literal "unix".
A refused peer, a malformed header, or a peer that leaves halfway is closed at
once with nothing written (no answer could be framed in a protocol not yet
started); the counts are in a ProxyStats, the reasons in the debug log.

Which addresses replace the real ones: TCP4, TCP6 (v1 and v2) and v2 UNIX stream
(the path up to its first NUL). The LOCAL command (a balancer's health check),
v1 UNKNOWN, v2 UNSPEC, UDP and UNIX datagram keep the real connection's
addresses. Every header sets "proxy_protocol": the ProxyInfo.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import Any

from preforkd import logs
from preforkd.protocols.proxy_header import MAX_V2_LENGTH, VERSIONS, extra_info, parse
from preforkd.protocols.wrapping import PrefixError, WrappingProtocol

log = logs.log


class ProxyStats:
    """Counts for a caller to read: headers handed over, connections closed instead."""

    __slots__ = ("accepted", "rejected")

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected = 0  # refused peers, malformed headers, peers gone halfway

    def __repr__(self) -> str:
        return f"ProxyStats(accepted={self.accepted}, rejected={self.rejected})"


STATS = ProxyStats()  # where connections made with stats=None count


class AllowList:
    """Who may send a header: networks, and "unix" for unix-socket peers. Empty: all."""

    __slots__ = ("networks", "unix", "_seen")

    def __init__(self, allow: Iterable[Any] | None = None) -> None:
        networks = []
        self.unix = False
        if isinstance(allow, str):
            allow = [allow]  # one network, not its characters
        for item in allow or ():
            if item == "unix":
                self.unix = True
            elif isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                networks.append(item)
            else:  # "10.0.0.0/8", "::1", an address object
                networks.append(ipaddress.ip_network(item, strict=False))
        self.networks = tuple(networks)
        # Verdicts by address: a listener's peers are its few balancers, and parsing
        # an address per connection showed in the Connection: close profile (~5 %).
        self._seen: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks) or self.unix

    def allows(self, peer: Any) -> bool:
        """`peer` as the transport's "peername" gives it."""
        if not self:
            return True
        if not isinstance(peer, tuple):
            return self.unix and peer is not None  # a unix socket: "" or a path
        verdict = self._seen.get(peer[0])
        if verdict is None:
            if len(self._seen) >= 1024:
                self._seen.clear()  # (bounded, whoever connects)
            verdict = self._seen[peer[0]] = self._allows(peer)
        return verdict

    def _allows(self, peer: tuple) -> bool:
        try:
            address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return any(address in net or (mapped is not None and mapped in net)
                   for net in self.networks)


def _checked(version: str) -> str:
    if version not in VERSIONS:
        raise ValueError(f"PROXY protocol version must be one of {', '.join(VERSIONS)}: "
                         f"{version!r}")
    return version


class ProxyProtocol(WrappingProtocol):
    """Serve `inner_factory()`'s protocol behind a PROXY protocol header (one per
    connection). `ProxyProtocol.factory(...)` makes the per-connection callable."""

    MAX_PREFIX = 16 + MAX_V2_LENGTH

    def __init__(self, inner_factory: Callable[[], Any], version: str = "auto",
                 allow: AllowList | Iterable[Any] | None = None,
                 stats: ProxyStats | None = None) -> None:
        super().__init__(inner_factory)
        self.version = _checked(version)
        self.allow = allow if isinstance(allow, AllowList) else AllowList(allow)
        self.stats = STATS if stats is None else stats
        self.peer: Any = None  # the real peer, when the allow list needed it

    @classmethod
    def factory(cls, inner_factory: Callable[[], Any], version: str = "auto",
                allow: Iterable[Any] | None = None,
                stats: ProxyStats | None = None) -> Callable[[], ProxyProtocol]:
        """A zero-argument protocol factory: `version` and `allow` are checked (ValueError)
        and parsed once, here, not per connection."""
        _checked(version)
        prepared = allow if isinstance(allow, AllowList) else AllowList(allow)

        def make() -> ProxyProtocol:
            return cls(inner_factory, version, prepared, stats)

        return make

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self.allow:
            self.peer = transport.get_extra_info("peername")
            if not self.allow.allows(self.peer):
                self._close("peer not in the allow list")

    def consume(self, data: bytes) -> tuple[int, dict[str, Any]] | None:
        found = parse(data, self.version)
        if found is None:
            return None
        length, info = found
        extra = extra_info(info)
        if "peername" not in extra and self.peer is not None:
            extra["peername"] = self.peer  # (the transport gives it out only once)
        return length, extra

    def data_received(self, data: bytes) -> None:
        if not self.transport.is_closing():  # (a fake transport still calls us)
            super().data_received(data)

    def hand_over(self, rest: bytes, extra: dict[str, Any]) -> None:
        self.stats.accepted += 1
        if log.isEnabledFor(logging.DEBUG):
            info = extra["proxy_protocol"]
            log.debug("event=proxy-accepted peer=%s version=%d command=%s family=%s source=%s",
                      self._real_peer(), info.version, info.command, info.family,
                      info.source)
        super().hand_over(rest, extra)

    def rejected(self, error: PrefixError) -> None:
        self._close(str(error))

    def eof_received(self) -> bool | None:
        if self.buffer and not self.transport.is_closing():
            self._close(f"peer left after {len(self.buffer)} bytes of a header")
        return None

    def _close(self, reason: str) -> None:
        self.stats.rejected += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event=proxy-rejected peer=%s reason=%r", self._real_peer(), reason)
        self.buffer = b""
        self.transport.abort()

    def _real_peer(self) -> Any:
        if self.peer is None:
            self.peer = self.transport.get_extra_info("peername")
        return self.peer
