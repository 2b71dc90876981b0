"""A parsed request, and the error a request can end in (both events of HttpConnection)."""

from __future__ import annotations

import io
import tempfile
from typing import Any


class HttpError(Exception):
    """A request that gets an error response and a closed connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Request:
    """One parsed request. Fields most requests leave alone are class attributes:
    a new request sets three fields instead of initialising eleven (hot path)."""

    method: bytes = b""
    target: bytes = b""
    headers: list[tuple[bytes, bytes]]  # set by the parser; equal lists may be one (read only)
    version = "1.1"
    keep_alive = True
    body: Any = b""  # bytes, bytearray, or a spooled file past body_buffer_bytes
    body_size = 0
    content_length = -1
    expect = b""
    chunked = False
    connection_header = False
    plain = False  # HTTP/1.1, kept alive, no body: nothing above needs a second look

    def body_file(self) -> Any:
        """The body as a readable binary file positioned at 0."""
        if isinstance(self.body, (bytes, bytearray)):
            return io.BytesIO(self.body)
        self.body.seek(0)
        return self.body

    def add_body(self, data: bytes, buffer_bytes: int) -> None:
        """More body after the first piece; past `buffer_bytes` it goes to a file."""
        body = self.body
        if isinstance(body, (bytes, bytearray)):
            if self.body_size > buffer_bytes:
                spill = tempfile.TemporaryFile()
                spill.write(body)
                spill.write(data)
                self.body = spill
            elif isinstance(body, bytes):
                self.body = bytearray(body) + data
            else:
                body += data
        else:
            body.write(data)
