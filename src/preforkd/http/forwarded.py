"""Trusted forwarding: who the client is when proxies stand in between. Sans-I/O.

A proxy that forwards a request says whom it got it from: RFC 7239's
`Forwarded` (one element per hop: `for=`, `by=`, `proto=`, `host=`), or the
older X-Forwarded-For (a list of addresses, one appended per hop) with
X-Forwarded-Proto, X-Forwarded-Host and X-Forwarded-Port. Anyone can send
those fields, so they are read only when the connection's peer is trusted
(`Trust.peer`, decided once per connection by the caller), and then only as
far as trusted hops go: the hops are walked from the right (the nearest proxy
first), hops that are themselves trusted are skipped, and the right-most
untrusted one is the client (`pick`; if every hop is trusted, the left-most).
Its element gives the scheme and host too, so a client cannot choose them.
When a request has both, `Forwarded` wins and the X-Forwarded-* fields are not
read. A value that does not parse is ignored whole (nothing is raised or
logged: a client may send anything).

Everything here is a pure function of strings (the environ's HTTP_* values,
latin-1 decoded, repeated fields already joined with ", ").
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": "80", "https": "443"}
NODE_CACHE = 4096  # nodes remembered parsed (bounded: clients choose them)

_TCHAR = r"[!#$%&'*+.^_`|~0-9A-Za-z-]"
# forwarded-pair = token "=" ( token / quoted-string ), with OWS allowed around it
_PAIR = re.compile(rf'[ \t]*({_TCHAR}+)=(?:({_TCHAR}+)|"((?:[\t\x20\x21\x23-\x5b\x5d-\x7e'
                   r'\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*)")[ \t]*')
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_OWS = re.compile(r"[ \t]*")
_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]+")  # obfnode / obfport (RFC 7239 §6.3)
_PORT = re.compile(r"[0-9]{1,5}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_REG_NAME = re.compile(r"[A-Za-z0-9._~-]+")  # stricter than RFC 3986: names apps put in URLs
_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:a.b.c.d, as a dual-stack socket reports IPv4


class Hop(NamedTuple):
    """One proxy's account of whom it got the request from."""

    node: str | None  # an address (normalised), "unknown", "_obfuscated", None: not said
    ip: bytes | None  # node as a packed address (4 or 16 bytes), when it is one
    port: str = ""  # digits, or "" when not given (or obfuscated)
    proto: str = ""  # lower case, as given (only http and https are applied)
    host: str = ""  # a Host value, as given


@functools.lru_cache(maxsize=NODE_CACHE)
def parse_node(text: str, bare_ipv6: bool = False) -> Hop | None:
    """A `for=`/`by=` node: IPv4, "[IPv6]", "unknown" or "_obf", each with an optional
    ":port" (digits or "_obf"). `bare_ipv6`: also an IPv6 address without brackets
    (X-Forwarded-For). None if it is none of these. Remembered: the same proxies and
    clients keep coming."""
    if text.startswith("["):
        close = text.find("]")
        name, rest = text[1:close], text[close + 1:]
        if close < 0 or (rest and rest[0] != ":"):
            return None
        ip = _packed(name, socket.AF_INET6)
        if ip is None:
            return None
        node, port = socket.inet_ntop(socket.AF_INET6, ip), rest[1:] if rest else None
    elif bare_ipv6 and text.count(":") > 1:
        ip = _packed(text, socket.AF_INET6)
        if ip is None:
            return None
        node, port = socket.inet_ntop(socket.AF_INET6, ip), None
    else:
        name, colon, port_text = text.partition(":")
        port = port_text if colon else None
        ip = _packed(name, socket.AF_INET)
        if ip is not None:
            node = name  # (inet_pton takes only the dotted-quad form: no leading zeros)
        elif name.lower() == "unknown":
            node = "unknown"
        elif _OBFUSCATED.fullmatch(name):
            node = name
        else:
            return None
    if port is None:
        return Hop(node, ip)
    if _PORT.fullmatch(port) and int(port) <= 65535:
        return Hop(node, ip, str(int(port)))
    return Hop(node, ip) if _OBFUSCATED.fullmatch(port) else None


def _packed(text: str, family: int) -> bytes | None:
    """The address in `text` (strictly: no zone id, no leading zeros), or None."""
    try:
        return socket.inet_pton(family, text)
    except (OSError, ValueError):
        return None


def valid_host(value: str) -> bool:
    """A Host value: uri-host [ ":" port ]."""
    name, port = split_host(value)
    if port is None:
        return False
    if name.startswith("["):
        return name.endswith("]") and _packed(name[1:-1], socket.AF_INET6) is not None
    return _REG_NAME.fullmatch(name) is not None


def split_host(value: str) -> tuple[str, str | None]:
    """(name, port) of a Host value; port "" when absent, None when not digits."""
    colon = value.rfind(":")
    if colon < 0 or value.rfind("]") > colon:
        return value, ""
    port = value[colon + 1:]
    ok = _PORT.fullmatch(port) is not None and int(port) <= 65535
    return value[:colon], str(int(port)) if ok else None


def parse_forwarded(value: str) -> list[Hop] | None:
    """The hops of a Forwarded field value (RFC 7239 §4), left to right; None if it is
    malformed: a pair that is not token=value, a parameter twice in one element, a
    for/by/proto/host value that is not what §5 says. Empty elements are skipped
    (RFC 9110 §5.6.1); an element without for= is a hop whose node is None."""
    hops: list[Hop] = []
    pairs: dict[str, str] = {}
    pos, end = 0, len(value)
    while True:
        m = _PAIR.match(value, pos)
        if m is not None:
            name = m[1].lower()
            if name in pairs:
                return None
            v = m[2]
            if v is None:  # a quoted-string
                v = m[3]
                if "\\" in v:
                    v = _QUOTED_PAIR.sub(r"\1", v)
            pairs[name] = v
            pos = m.end()
        else:
            pos = _OWS.match(value, pos).end()  # type: ignore[union-attr]
        if pos < end and value[pos] == ";":
            pos += 1
            continue
        if pos < end and value[pos] != ",":
            return None
        if pairs:
            hop = _element(pairs)
            if hop is None:
                return None
            hops.append(hop)
            pairs = {}
        if pos >= end:
            return hops
        pos += 1


def _element(pairs: dict[str, str]) -> Hop | None:
    """The hop one Forwarded element describes, or None if a value is malformed."""
    if "by" in pairs and parse_node(pairs["by"]) is None:
        return None
    proto = pairs.get("proto", "")
    if proto and not _SCHEME.fullmatch(proto):
        return None
    host = pairs.get("host", "")
    if "host" in pairs and not valid_host(host):
        return None
    if "for" in pairs:
        hop = parse_node(pairs["for"])
        if hop is None:
            return None
        return Hop(hop.node, hop.ip, hop.port, proto.lower(), host)
    return Hop(None, None, "", proto.lower(), host)


def parse_x_forwarded_for(value: str) -> list[Hop] | None:
    """The hops of an X-Forwarded-For value ("client, proxy1, proxy2"), left to right;
    None if an entry is not an address (IPv4, IPv6, either with a port as in
    Forwarded), "unknown" or "_obfuscated". Empty entries are skipped."""
    hops = []
    for entry in _entries(value):
        hop = parse_node(entry, True)
        if hop is None:
            return None
        hops.append(hop)
    return hops


def _entries(value: str) -> list[str]:
    return [e for e in (e.strip(" \t") for e in value.split(",")) if e]


def pick_x_forwarded_for(value: str, trusted: Callable[[Hop], bool]
                         ) -> tuple[Hop | None, int, int]:
    """(the client's hop, its index, the number of entries), walking from the right:
    the first hop not trusted is the client. What lies left of it is never parsed: a
    client may write anything there, and the proxies append the truth after it. An
    entry reached that is not an address gives no hop (the peer stays the client)."""
    entries = _entries(value)
    for i in range(len(entries) - 1, -1, -1):
        hop = parse_node(entries[i], True)
        if hop is None:
            return None, i, len(entries)
        if i == 0 or not trusted(hop):
            return hop, i, len(entries)
    return None, 0, 0


def pick_forwarded(value: str, trusted: Callable[[Hop], bool]) -> Hop | None:
    """The client's hop in a Forwarded value (None: none to apply). A malformed value
    is read from the right, as far as the walk needs: a client may write anything,
    and the proxies append their elements after it (a comma inside a quoted value
    only makes a suffix not parse: one element more is taken)."""
    hops = parse_forwarded(value)
    if hops is not None:
        return hops[pick(hops, trusted)] if hops else None
    pieces = value.split(",")
    for i in range(len(pieces) - 1, 0, -1):
        hops = parse_forwarded(",".join(pieces[i:]))
        for hop in reversed(hops or ()):
            if not trusted(hop):
                return hop
    return None


def pick(hops: list[Hop], trusted: Callable[[Hop], bool]) -> int:
    """The index of the client among `hops`: the right-most hop that is not trusted,
    or the left-most if all are."""
    for i in range(len(hops) - 1, -1, -1):
        if not trusted(hops[i]):
            return i
    return 0


def paired(value: str | None, count: int, chosen: int) -> str:
    """The entry of an X-Forwarded-Proto/-Host/-Port list that goes with hop `chosen` of
    `count` X-Forwarded-For hops: lists are paired from the right (each proxy appends
    to both); a shorter list gives its left-most entry. "" when there is none."""
    if value is None:
        return ""
    if "," not in value:
        return value.strip(" \t")
    entries = [e.strip(" \t") for e in value.split(",")]
    at = len(entries) - (count - chosen if count else 1)
    return entries[max(at, 0)]


class Trust:
    """forwarded_allow_ips: addresses and networks, "unix" (unix-socket peers), "*" (any)."""

    __slots__ = ("any", "unix", "nets4", "nets6", "exact")

    def __init__(self, items: Iterable[str]) -> None:
        items = list(items)
        self.any = "*" in items
        self.unix = "unix" in items
        networks = [ipaddress.ip_network(i, strict=False) for i in items
                    if i not in ("*", "unix")]
        # (network, mask) as integers: a test is an AND and a compare
        self.nets4 = tuple((int(n.network_address), int(n.netmask)) for n in networks
                           if n.version == 4)
        self.nets6 = tuple((int(n.network_address), int(n.netmask)) for n in networks
                           if n.version == 6)
        # single addresses as a transport reports them: most peers match without parsing
        self.exact = frozenset(str(n.network_address) for n in networks
                               if n.num_addresses == 1)

    def __bool__(self) -> bool:
        return self.any or self.unix or bool(self.nets4 or self.nets6)

    def peer(self, peername: Any) -> bool:
        """Whether a connection's peer (the transport's "peername") may forward."""
        if self.any:
            return peername is not None
        if not isinstance(peername, tuple):
            return self.unix and peername is not None  # a unix socket: "" or a path
        host = peername[0]
        if host in self.exact:
            return True
        if not (self.nets4 or self.nets6) or not isinstance(host, str):
            return False
        if ":" in host:
            ip = _packed(host.split("%", 1)[0], socket.AF_INET6)
        else:
            ip = _packed(host, socket.AF_INET)
        return ip is not None and self.address(ip)

    def hop(self, hop: Hop) -> bool:
        """Whether a hop named in a header is one of ours (then it is skipped)."""
        return self.any or (hop.ip is not None and self.address(hop.ip))

    def address(self, ip: bytes) -> bool:
        """A packed address; an IPv4-mapped IPv6 one matches IPv4 networks too."""
        n = int.from_bytes(ip, "big")
        for net, mask in self.nets4 if len(ip) == 4 else self.nets6:
            if n & mask == net:
                return True
        return len(ip) == 16 and ip[:12] == _MAPPED and self.address(ip[12:])


def peer_text(peername: Any) -> str:
    """The transport's peer as the app sees it in preforkd.peer: "addr:port",
    "[v6addr]:port", "unix:" + the path (often empty) for a unix socket."""
    if isinstance(peername, tuple):
        host = peername[0]
        return f"[{host}]:{peername[1]}" if ":" in host else f"{host}:{peername[1]}"
    if peername is None:
        return ""
    if isinstance(peername, bytes):  # an abstract-namespace address
        return "unix:" + peername.decode("latin-1")
    return "unix:" + str(peername)


def resolve(env: Mapping[str, Any], trust: Trust, with_host: bool) -> dict[str, str]:
    """The environ keys that the forwarding fields in `env` (a trusted peer's) change:
    REMOTE_ADDR, REMOTE_PORT, wsgi.url_scheme, HTTPS, and with `with_host`,
    HTTP_HOST, SERVER_NAME, SERVER_PORT. Empty when nothing applies."""
    forwarded = env.get("HTTP_FORWARDED")
    if forwarded is not None:
        hop = pick_forwarded(forwarded, trust.hop)
        if hop is None:
            return {}
        proto, host, port = hop.proto, hop.host, ""
    else:
        hop, i, n = pick_x_forwarded_for(env.get("HTTP_X_FORWARDED_FOR") or "", trust.hop)
        proto = paired(env.get("HTTP_X_FORWARDED_PROTO"), n, i).lower()
        host = paired(env.get("HTTP_X_FORWARDED_HOST"), n, i) if with_host else ""
        port = paired(env.get("HTTP_X_FORWARDED_PORT"), n, i) if with_host else ""
    out: dict[str, str] = {}
    if hop is not None and hop.node is not None:
        out["REMOTE_ADDR"] = hop.node
        out["REMOTE_PORT"] = hop.port
    if proto in SCHEMES:
        out["wsgi.url_scheme"] = proto
        if proto == "https":
            out["HTTPS"] = "on"
    if with_host and (host or port):
        _host_keys(out, env, host, port, out.get("wsgi.url_scheme") or env["wsgi.url_scheme"])
    return out


def _host_keys(out: dict[str, str], env: Mapping[str, Any], host: str, port: str,
               scheme: str) -> None:
    """HTTP_HOST, SERVER_NAME and SERVER_PORT for a forwarded host and/or port (each
    ignored when malformed). The host's own port comes first, then the forwarded
    port, then the scheme's default; HTTP_HOST leaves a default port out."""
    if port and not (_PORT.fullmatch(port) and int(port) <= 65535):
        port = ""
    if host and valid_host(host):
        name, host_port = split_host(host)
    elif port and "HTTP_HOST" in env:
        name, host_port = split_host(env["HTTP_HOST"])
        host_port = ""
    else:
        return
    port = host_port or (str(int(port)) if port else DEFAULT_PORTS.get(scheme, "80"))
    out["HTTP_HOST"] = name if port == DEFAULT_PORTS.get(scheme) else f"{name}:{port}"
    out["SERVER_NAME"] = name[1:-1] if name.startswith("[") else name
    out["SERVER_PORT"] = port
