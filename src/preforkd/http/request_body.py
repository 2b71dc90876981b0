"""Sans-I/O decoders of the request bodies preforkd frames itself.

ChunkedBody decodes a chunked request body (RFC 9112 §7.1), strictly.

llhttp parses request heads; chunked bodies are decoded here, because
llhttp refuses the optional whitespace the grammar allows around a chunk
extension's ";" and "=" (a recipient MUST accept and remove it, RFC 9110
§5.6.3) and accepts spaces after a chunk size that the grammar does not.
Everything else is refused with 400: sizes that are not 1-16 hex digits,
bare CR or LF, data not followed by exactly CRLF, malformed extensions or
trailer fields. Extensions and trailers are checked, then dropped.

LengthBody counts a Content-Length body that llhttp skipped (a request that
asked to upgrade: the body is framed as usual, RFC 9112 §6.3).

Both have `feed(data, pos)`: it consumes from `data[pos:]`, hands body bytes
to the `on_data` callback and returns the position just past the body once
it is complete, or -1 when it needs more bytes. Memory is bounded: a chunk
line may hold 4 KiB, the trailer section max_header_bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from preforkd.http.request import HttpError

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# chunk = chunk-size [ chunk-ext ] CRLF;
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*" + _TOKEN
                         + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + b"|" + _QUOTED + rb"))?)*\r")
# field-line = field-name ":" OWS field-value OWS (obs-fold is refused)
_TRAILER_LINE = re.compile(_TOKEN + rb":[\t \x21-\x7e\x80-\xff]*\r")

MAX_CHUNK_LINE = 4096
SIZE, DATA, DATA_END, TRAILER = range(4)


class ChunkedBody:
    __slots__ = ("on_data", "state", "remaining", "line", "trailer_bytes", "max_trailer",
                 "room")

    def __init__(self, on_data: Callable[[bytes], None], max_body: int,
                 max_trailer: int) -> None:
        self.on_data = on_data
        self.state = SIZE
        self.remaining = 0  # DATA: bytes of the chunk still to come; DATA_END: of its CRLF
        self.line = b""  # a chunk or trailer line begun in an earlier read
        self.trailer_bytes = 0
        self.max_trailer = max_trailer
        self.room = max_body  # declared sizes past the body limit are refused at once

    def feed(self, data: bytes, pos: int = 0) -> int:
        end = len(data)
        while pos < end:
            state = self.state
            if state == DATA:
                n = min(self.remaining, end - pos)
                self.on_data(data[pos:pos + n])
                pos += n
                self.remaining -= n
                if not self.remaining:
                    self.state, self.remaining = DATA_END, 2
            elif state == DATA_END:
                pos = self._data_end(data, pos)
            else:
                line, pos = self._line(data, pos)
                if line is None:
                    return -1
                if state == SIZE:
                    self._size(line)
                elif line == b"\r":
                    return pos  # the empty line after the trailer section
                else:
                    self._trailer(line)
        return -1

    def _data_end(self, data: bytes, pos: int) -> int:
        """Chunk data is followed by exactly CRLF (in one read or two)."""
        want = b"\r\n"[2 - self.remaining:]
        got = data[pos:pos + len(want)]
        if not want.startswith(got):
            raise HttpError(400, "chunk data not followed by CRLF")
        self.remaining -= len(got)
        if not self.remaining:
            self.state = SIZE
        return pos + len(got)

    def _line(self, data: bytes, pos: int) -> tuple[bytes | None, int]:
        """The next line up to LF (its CR kept for the pattern), or None for now."""
        nl = data.find(b"\n", pos)
        if nl < 0:
            self.line += data[pos:]
            self._check_length(len(self.line))
            return None, len(data)
        line = self.line + data[pos:nl] if self.line else data[pos:nl]
        self.line = b""
        self._check_length(len(line))
        if line[-1:] != b"\r" or b"\r" in line[:-1]:
            raise HttpError(400, "bare CR or LF in a chunked body")
        return line, nl + 1

    def _check_length(self, n: int) -> None:
        if self.state == SIZE:
            if n > MAX_CHUNK_LINE:
                raise HttpError(400, "chunk line too long")
        elif self.trailer_bytes + n > self.max_trailer:
            raise HttpError(431, "trailer section too large")

    def _size(self, line: bytes) -> None:
        m = _CHUNK_LINE.fullmatch(line)
        if m is None:
            raise HttpError(400, "invalid chunk line")
        size = int(m.group(1), 16)
        if size > self.room:
            raise HttpError(413, "request body too large")
        self.room -= size
        if size:
            self.state, self.remaining = DATA, size
        else:
            self.state = TRAILER

    def _trailer(self, line: bytes) -> None:
        if _TRAILER_LINE.fullmatch(line) is None:
            raise HttpError(400, "invalid trailer field")
        self.trailer_bytes += len(line) + 1


class LengthBody:
    __slots__ = ("on_data", "remaining")

    def __init__(self, on_data: Callable[[bytes], None], length: int) -> None:
        self.on_data = on_data
        self.remaining = length

    def feed(self, data: bytes, pos: int = 0) -> int:
        n = min(self.remaining, len(data) - pos)
        if n:
            self.on_data(data[pos:pos + n])
            self.remaining -= n
        return -1 if self.remaining else pos + n
