"""Response bodies that are not one known chunk: pulled from an iterator, or sent
from a file. They work on their driver's current response (its `framing`,
`transport`, `paused`) and end it with `driver.finish()`; errors propagate to
the caller, which hands them to `driver.fail()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from preforkd.http.response import HeadParts, ResponseError
from preforkd.protocols.base import set_nodelay


class BodyStream:
    """A body pulled from an iterator only while the client keeps reading: the
    transport's pause_writing stops the pull, resume_writing calls pull() again."""

    __slots__ = ("driver", "it")

    def __init__(self, driver: Any, it: Iterator[bytes]) -> None:
        self.driver = driver
        self.it = it

    def start(self, head: Callable[[], HeadParts]) -> None:
        driver, it = self.driver, self.it
        framing = driver.framing
        if framing is not None and framing.head_sent:  # (after WSGI's write())
            self.pull()
            return
        # Look one chunk ahead: a body of one chunk still gets a Content-Length.
        # (A WSGI generator calls start_response in its first next(): pull, then head().)
        first = next(it, None)
        second = None if first is None else next(it, None)
        resp = framing or driver.new_framing(head())
        extra = driver.server.extra_head
        transport = driver.transport
        if second is not None:
            # Each piece is written once validated: if the next one breaks the framing,
            # what went before is a true start of the response.
            transport.write_later(resp.head(-1, extra) + resp.frame(first))
            transport.write(resp.frame(second))
            if not driver.paused:
                self.pull()
            return
        if first is None:
            data = resp.head(0, extra)
        else:
            data = resp.head(len(first), extra) + resp.frame(first)
        transport.write_later(data + resp.end())
        driver.finish()

    def pull(self) -> None:
        driver = self.driver
        resp, transport = driver.framing, driver.transport
        for data in self.it:
            chunk = resp.frame(data)
            if chunk:
                transport.write(chunk)
            if driver.paused or transport.is_closing():
                return  # resume_writing continues from here
        end = resp.end()
        if end:
            transport.write(end)
        driver.finish()


# A file span up to this size is read and leaves with its head in one send: a
# second syscall (head, then sendfile) costs more than copying a few pages, and
# the answer joins the loop turn's other writes. Larger spans go out with sendfile.
SMALL_FILE = 16384


def send_file(driver: Any, parts: HeadParts, fd: int, offset: int, count: int) -> None:
    """The head, then `count` bytes of `fd` from `offset` with sendfile, or read with
    it when small (or only the head for HEAD and bodyless statuses)."""
    resp = driver.new_framing(parts)
    declared = parts.content_length
    if declared >= 0:
        if declared > count:
            raise ResponseError(f"Content-Length {declared} is past the end "
                                f"of the file ({count} bytes)")
        count = declared
    # (read before the head is made: a read that fails is still answered with a 500)
    data = os.pread(fd, count, offset) if 0 < count <= SMALL_FILE and not resp.head_only else b""
    head = resp.head(count, driver.server.extra_head)
    if driver.served == 1:
        # A large file's head and body leave in two sends: with Nagle on, the file's
        # first segment would wait for the head's delayed ACK (40 ms a response).
        set_nodelay(driver.transport)
    if resp.head_only or count == 0:
        driver.transport.write(head)
        driver.finish()
        return
    if len(data) == count:
        resp.sent = count
        driver.transport.write_later(head + data)
        driver.finish()
    else:  # (a large span; or a file cut short since: sendfile's end ends the connection)
        resp.sent = count
        driver.transport.write_later(head)  # (sendfile sends it first, with MSG_MORE)
        driver.transport.sendfile(fd, offset, count, driver.file_sent)
