"""The PROXY protocol header, v1 (text) and v2 (binary), as HAProxy's
proxy-protocol.txt defines it: a sans-I/O parser (see protocols/proxy.py for how
it is used, and for what is trusted).

`parse()`: bytes so far in, None (need more), (header length, a ProxyInfo) or
PrefixError out. It rejects as early as the bytes allow (a first byte neither
signature starts with is enough), caps v1 at 107 bytes and v2 at 16 +
MAX_V2_LENGTH, and is strict: single spaces, addresses of the family the header
names, ports without leading zeros or signs, TLVs that fit exactly.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from preforkd import logs
from preforkd.protocols.wrapping import PrefixError

log = logs.log

V1_PREFIX = b"PROXY "
V1_MAX = 107  # bytes, CRLF included (the spec's worst case)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_V2_LENGTH = 4096  # what may follow the 16 fixed bytes (HAProxy sends far less)
VERSIONS = ("v1", "v2", "auto")

LOCAL, PROXY = "LOCAL", "PROXY"
# v2 family byte -> (name, address block length)
V2_FAMILIES = {0x00: ("UNSPEC", 0), 0x11: ("TCP4", 12), 0x12: ("UDP4", 12),
               0x21: ("TCP6", 36), 0x22: ("UDP6", 36), 0x31: ("UNIX", 216),
               0x32: ("UNIX_DGRAM", 216)}
REPLACES_ADDRESSES = frozenset({"TCP4", "TCP6", "UNIX"})

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
SSL_SUBTYPES = {0x21: "version", 0x22: "cn", 0x23: "cipher", 0x24: "sig_alg",
                0x25: "key_alg"}

_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_DIGITS = frozenset(b"0123456789")
_V1_CHARS = {b"TCP4": (_DIGITS | frozenset(b"."), 15),
             b"TCP6": (_DIGITS | frozenset(b"abcdefABCDEF:."), 45)}


class ProxyInfo(NamedTuple):
    """What a header said. `source`/`destination` have a socket address's shape
    ((host, port); (host, port, 0, 0) for IPv6; a path for UNIX), or are None."""

    version: int  # 1 or 2
    command: str  # "PROXY" or "LOCAL"
    family: str  # "TCP4", "TCP6", "UNKNOWN" (v1); "UNSPEC", "UDP4", "UDP6", "UNIX", ...
    source: Any = None
    destination: Any = None
    tlvs: Mapping[int, bytes] = MappingProxyType({})  # v2 type -> value (the first of each)

    @property
    def authority(self) -> str | None:
        """PP2_TYPE_AUTHORITY: the host name the client asked for (TLS SNI)."""
        value = self.tlvs.get(PP2_TYPE_AUTHORITY)
        return None if value is None else value.decode()

    @property
    def alpn(self) -> bytes | None:
        return self.tlvs.get(PP2_TYPE_ALPN)

    @property
    def unique_id(self) -> bytes | None:
        return self.tlvs.get(PP2_TYPE_UNIQUE_ID)

    @property
    def ssl(self) -> dict[str, Any] | None:
        """PP2_TYPE_SSL: {"client": bits, "verify": int, and those of "version", "cn",
        "cipher", "sig_alg", "key_alg" that were sent}."""
        value = self.tlvs.get(PP2_TYPE_SSL)
        return None if value is None else _ssl(value)


# -- parsing ---------------------------------------------------------------------

def parse(data: bytes, version: str = "auto") -> tuple[int, ProxyInfo] | None:
    """The header at the start of `data`: None while it may still be one, else
    (its length, what it says). PrefixError (a short reason) once it cannot be."""
    if not data:
        return None
    first = data[0]
    if first == V1_PREFIX[0] and version != "v2":
        _expect(data, V1_PREFIX, version)
        return parse_v1(data)
    if first == V2_SIGNATURE[0] and version != "v1":
        _expect(data, V2_SIGNATURE, version)
        return parse_v2(data)
    raise PrefixError(f"not a PROXY {'' if version == 'auto' else version + ' '}header")


def _expect(data: bytes, signature: bytes, version: str) -> None:
    n = min(len(data), len(signature))
    if data[:n] != signature[:n]:
        raise PrefixError(f"not a PROXY {'' if version == 'auto' else version + ' '}header")


def parse_v1(data: bytes) -> tuple[int, ProxyInfo] | None:
    """"PROXY TCP4|TCP6 src dst sport dport\\r\\n" or "PROXY UNKNOWN[ anything]\\r\\n"."""
    if len(data) < len(V1_PREFIX):
        return None
    end = data.find(b"\r\n", 0, V1_MAX)
    if end >= 0:
        line = data[len(V1_PREFIX):end]
    elif len(data) >= V1_MAX:
        raise PrefixError(f"no CRLF in the first {V1_MAX} bytes")
    else:
        line = data[len(V1_PREFIX):]
        if line.endswith(b"\r"):
            line = line[:-1]  # the CR of the CRLF still on its way
    if b"\r" in line or b"\n" in line:
        raise PrefixError("stray CR or LF in a v1 header")
    fields = line.split(b" ")
    family = fields[0]
    if end < 0 and len(fields) == 1:
        if not any(f.startswith(family) for f in (b"TCP4", b"TCP6", b"UNKNOWN")):
            raise PrefixError("unknown v1 protocol")
        return None
    if family == b"UNKNOWN":
        return None if end < 0 else (end + 2, ProxyInfo(1, PROXY, "UNKNOWN"))
    if family not in _V1_CHARS:
        raise PrefixError("unknown v1 protocol")
    values = _v1_fields(family, fields[1:], end >= 0)
    if values is None:
        return None
    src, dst, sport, dport = values
    return end + 2, ProxyInfo(1, PROXY, family.decode(), _address(src, sport),
                              _address(dst, dport))


def _v1_fields(family: bytes, fields: list[bytes], complete: bool) -> list[Any] | None:
    """The four fields of a TCP4/TCP6 line, checked as far as they have arrived."""
    if len(fields) > 4 or (complete and len(fields) < 4):
        raise PrefixError("a v1 header has 4 fields after the protocol, single-spaced")
    chars, longest = _V1_CHARS[family]
    values: list[Any] = []
    for i, field in enumerate(fields):
        is_port = i >= 2
        if complete or i < len(fields) - 1:
            values.append(_v1_port(field) if is_port else _v1_address(family, field))
        elif is_port and (len(field) > 5 or not _DIGITS.issuperset(field)
                          or field.startswith(b"0") and len(field) > 1):
            raise PrefixError("bad port in a v1 header")
        elif not is_port and (len(field) > longest or not chars.issuperset(field)):
            raise PrefixError(f"bad {family.decode()} address in a v1 header")
    return values if complete else None


def _v1_address(family: bytes, field: bytes) -> bytes:
    chars, longest = _V1_CHARS[family]
    if len(field) <= longest and chars.issuperset(field):
        kind = ipaddress.IPv4Address if family == b"TCP4" else ipaddress.IPv6Address
        try:
            return kind(field.decode()).packed
        except ValueError:
            pass
    raise PrefixError(f"bad {family.decode()} address in a v1 header")


def _v1_port(field: bytes) -> int:
    if _PORT.fullmatch(field) and int(field) <= 65535:
        return int(field)
    raise PrefixError("bad port in a v1 header")


def _address(packed: bytes, port: int) -> tuple[Any, ...]:
    """An address in the shape a socket's getpeername() gives it."""
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed), port
    return socket.inet_ntop(socket.AF_INET6, packed), port, 0, 0


def parse_v2(data: bytes) -> tuple[int, ProxyInfo] | None:
    """The 12-byte signature, version/command, family, length, then the addresses and
    TLVs that length covers."""
    if len(data) > 12:
        if data[12] >> 4 != 2:
            raise PrefixError("not version 2 in a v2 header")
        if data[12] & 0x0F > 1:
            raise PrefixError("unknown command in a v2 header")
    command = PROXY if len(data) > 12 and data[12] & 0x0F else LOCAL
    if len(data) > 13 and command == PROXY and data[13] not in V2_FAMILIES:
        raise PrefixError(f"unknown family 0x{data[13]:02x} in a v2 header")
    if len(data) < 16:
        return None
    length = int.from_bytes(data[14:16], "big")
    if length > MAX_V2_LENGTH:
        raise PrefixError(f"v2 header of {16 + length} bytes (more than {16 + MAX_V2_LENGTH})")
    family, size = V2_FAMILIES.get(data[13], ("UNSPEC", 0))
    if command == LOCAL:  # a health check: the address block is to be ignored
        return (16 + length, ProxyInfo(2, LOCAL, family)) if len(data) >= 16 + length else None
    if length < size:
        raise PrefixError(f"v2 {family} header of length {length} (less than {size})")
    if len(data) < 16 + length:
        return None
    header = data[:16 + length]
    if family == "UNSPEC":  # no addresses we could read: not even TLVs
        return 16 + length, ProxyInfo(2, PROXY, family)
    src, dst = _v2_addresses(family, header[16:16 + size])
    return 16 + length, ProxyInfo(2, PROXY, family, src, dst, _tlvs(header, 16 + size))


def _v2_addresses(family: str, block: bytes) -> tuple[Any, Any]:
    if family.startswith("UNIX"):
        return _path(block[:108]), _path(block[108:])
    half = (len(block) - 4) // 2
    sport, dport = struct.unpack("!HH", block[-4:])
    return _address(block[:half], sport), _address(block[half:2 * half], dport)


def _path(raw: bytes) -> str:
    """A sun_path: up to its first NUL, decoded as the socket module decodes one."""
    return os.fsdecode(raw.split(b"\0", 1)[0])


def _tlvs(header: bytes, pos: int) -> dict[int, bytes]:
    """The TLVs from `pos` to the end of the header: each must fit, unknown types are
    kept as bytes, the known ones with a fixed form are checked."""
    tlvs: dict[int, bytes] = {}
    crc_at = -1
    while pos < len(header):
        if pos + 3 > len(header):
            raise PrefixError("truncated TLV in a v2 header")
        kind, size = header[pos], int.from_bytes(header[pos + 1:pos + 3], "big")
        if pos + 3 + size > len(header):
            raise PrefixError(f"TLV 0x{kind:02x} overruns the v2 header")
        if kind == PP2_TYPE_CRC32C and crc_at < 0:
            crc_at = pos + 3
        tlvs.setdefault(kind, header[pos + 3:pos + 3 + size])
        pos += 3 + size
    if crc_at >= 0:
        _check_crc(header, crc_at)
    if PP2_TYPE_AUTHORITY in tlvs:
        try:
            tlvs[PP2_TYPE_AUTHORITY].decode()
        except UnicodeDecodeError:
            raise PrefixError("AUTHORITY TLV is not UTF-8") from None
    if PP2_TYPE_SSL in tlvs:
        _ssl(tlvs[PP2_TYPE_SSL])
    return tlvs


def _ssl(value: bytes) -> dict[str, Any]:
    if len(value) < 5:
        raise PrefixError("truncated SSL TLV")
    info: dict[str, Any] = {"client": value[0], "verify": int.from_bytes(value[1:5], "big")}
    pos = 5
    while pos < len(value):
        if pos + 3 > len(value):
            raise PrefixError("truncated SSL sub-TLV")
        kind, size = value[pos], int.from_bytes(value[pos + 1:pos + 3], "big")
        if pos + 3 + size > len(value):
            raise PrefixError("SSL sub-TLV overruns the SSL TLV")
        if kind in SSL_SUBTYPES:
            info.setdefault(SSL_SUBTYPES[kind], value[pos + 3:pos + 3 + size].decode(
                "utf-8", "replace"))
        pos += 3 + size
    return info


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1
        table.append(n)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, RFC 4960 appendix B): a v2 header's PP2_TYPE_CRC32C."""
    crc = 0xFFFFFFFF
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _check_crc(header: bytes, at: int) -> None:
    if header[at - 2:at] != b"\x00\x04":
        raise PrefixError("CRC32C TLV is not 4 bytes")
    zeroed = header[:at] + b"\0\0\0\0" + header[at + 4:]
    if crc32c(zeroed) != int.from_bytes(header[at:at + 4], "big"):
        raise PrefixError("CRC32C mismatch in a v2 header")


def extra_info(info: ProxyInfo) -> dict[str, Any]:
    """What the inner protocol's transport says instead: "proxy_protocol" always,
    "peername" and "sockname" when the header names the client's connection."""
    extra: dict[str, Any] = {"proxy_protocol": info}
    if info.command == PROXY and info.family in REPLACES_ADDRESSES:
        extra["peername"] = info.source
        extra["sockname"] = info.destination
    return extra


# -- the wrapping protocol -------------------------------------------------------
