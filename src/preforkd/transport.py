"""Socket transport in asyncio's shape: send now, buffer only the rest.

Writes go straight to the socket; what the kernel does not take waits in a
bytearray and the fd is watched for writability only while that buffer is
non-empty. Above HIGH_WATER the protocol is told to pause_writing (the
default protocol then pauses reading), so a client that never reads costs at
most one buffer, not unbounded memory.

An accepted connection is a bare fd: reads and writes are os.read/os.write,
and a socket object is made only when something asks for one (a socket
option, shutdown, addresses). Making one costs a getsockname() syscall, which
a one-request connection does not need.
"""

from __future__ import annotations

import _socket
import os
import socket
from collections.abc import Callable
from time import monotonic
from typing import Any

READ_SIZE = 65536
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# A lingering close (nginx's lingering_time, lingering_timeout): after the last byte
# and a FIN, what the client still sends is read and dropped for at most LINGER_TIME,
# LINGER_TIMEOUT between reads and LINGER_BYTES, then the fd is closed.
LINGER_TIME = 30.0
LINGER_TIMEOUT = 5.0
LINGER_BYTES = 1 << 20
_MSG_MORE = getattr(socket, "MSG_MORE", 0)


class Connection:
    """An accepted connection's fd, with a socket object made only when something
    asks for one (an option, shutdown, an address): making one costs a
    getsockname() syscall, which a one-request connection does not need."""

    __slots__ = ("_sock", "_fd", "_peer", "_listener", "_lost", "_extra")

    def __init__(self, sock: socket.socket | int, peername: Any, listener: Any) -> None:
        self._peer = peername  # from accept(), handed out once (then getpeername())
        self._listener = listener  # shared by all connections it accepted
        self._extra: dict[str, Any] | None = None  # set_extra_info's (a PROXY header's)
        if isinstance(sock, int):
            self._sock: Any = None
            self._fd = sock
        else:
            self._sock = sock
            self._fd = sock.fileno()
        self._lost = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        extra = self._extra
        if extra is not None and name in extra:
            return extra[name]
        try:
            if name == "listener":
                return self._listener
            if name == "peername":
                # Given once without a syscall, then forgotten: an address tuple costs
                # more than the rest of an idle connection's state.
                peer, self._peer = self._peer, None
                return peer if peer is not None else self.socket().getpeername()
            if name == "sockname":
                return self.socket().getsockname()
            if name == "socket":
                return self.socket()
        except OSError:
            return default
        return default

    def set_extra_info(self, extra: dict[str, Any]) -> None:
        self._extra = {**self._extra, **extra} if self._extra else dict(extra)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        """A socket option, without keeping a socket object for it (idle connections
        are many: each object is memory)."""
        sock = self._sock
        if sock is not None:
            sock.setsockopt(level, option, value)
        elif not self._lost:
            sock = self._new_socket()
            try:
                sock.setsockopt(level, option, value)
            finally:
                sock.detach()  # the fd stays ours

    def socket(self) -> Any:
        """The connection's socket object (made on first use; it owns the fd from then)."""
        if self._lost:
            raise OSError("transport is closed")
        sock = self._sock
        if sock is None:
            sock = self._sock = self._new_socket()
        return sock

    def _new_socket(self) -> Any:
        listener = self._listener
        if listener is not None:
            return _socket.socket(listener.family, listener.type, 0, self._fd)
        return _socket.socket(fileno=self._fd)

    def _send_before_fin(self, data: Any) -> Any:
        """The last bytes before close() go with MSG_MORE: the kernel holds them for the
        FIN, which then rides in the same TCP segment: one packet and one wake-up of
        the client fewer per closed connection. Returns what was not sent."""
        listener = self._listener
        if not _MSG_MORE or listener is not None and listener.family == socket.AF_UNIX:
            return data
        try:
            n = self.socket().send(data, _MSG_MORE)
        except OSError:
            return data  # (_write meets it again and acts on it)
        return memoryview(data)[n:] if n < len(data) else b""

    def _shutdown_write(self) -> None:
        try:
            self.socket().shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _close_fd(self) -> None:
        if self._sock is not None:
            self._sock.close()
        else:
            os.close(self._fd)


class Transport(Connection):
    __slots__ = ("_loop", "protocol", "_buffer", "_closing", "_reading", "_protocol_paused",
                 "_on_close", "_eof_after_flush", "_file", "_tail", "_later", "_linger")

    def __init__(self, loop: Any, sock: socket.socket | int, protocol: Any,
                 on_close: Callable[[Transport], Any], peername: Any = None,
                 listener: Any = None) -> None:
        """`sock`: a socket, or the fd of a non-blocking accepted one (`listener`,
        which accepted it, then tells its family and type)."""
        super().__init__(sock, peername, listener)
        self._loop = loop
        self.protocol = protocol
        self._buffer: bytearray | None = None  # only while the kernel lags behind
        self._closing = False
        self._reading = True
        self._protocol_paused = False
        self._eof_after_flush = False
        self._later: Any = None  # write_later() data waiting for the end of the turn
        self._file: list | None = None  # [fd, offset, remaining, on_done] while sending
        self._tail: bytearray | None = None  # written while a file was in flight
        self._linger: Any = None  # close_lingering(): True, then its _Linger
        self._on_close = on_close

    def start(self) -> None:
        self._loop.add_reader(self._fd, self)
        self.protocol.connection_made(self)

    # -- reading -----------------------------------------------------------
    def _read_ready(self) -> None:
        if self._closing:
            return  # closed earlier in this loop turn; the fd goes at the turn's end
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        if data:
            self.protocol.data_received(data)
            return
        self._loop.remove_reader(self._fd)
        self._reading = False
        if not self.protocol.eof_received():
            self.close()

    # The loop calls the transport itself when the socket is readable: no bound
    # method object per connection (it counts, with tens of thousands idle).
    __call__ = _read_ready

    def pause_reading(self) -> None:
        if self._reading and not self._closing:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self)

    def is_reading(self) -> bool:
        return self._reading

    def get_protocol(self) -> Any:
        return self.protocol

    def set_protocol(self, protocol: Any) -> None:
        """From now on the connection's events go to `protocol` (a wrapping protocol
        hands over this way once it has consumed its prefix)."""
        self.protocol = protocol

    # -- writing -----------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        if self._later is not None:  # keep order: what write_later() holds goes first
            later, self._later = self._later, None
            data = later + data
        self._write(data)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        if self._file is not None:  # keep order: after the file in flight
            if self._tail is None:
                self._tail = bytearray()
            self._tail += data
            return
        buf = self._buffer
        if buf is None:
            try:
                n = os.write(self._fd, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._force_close(exc)
                return
            if n == len(data):
                return
            buf = self._buffer = bytearray(memoryview(data)[n:])
            self._loop.add_writer(self._fd, self._write_ready)
        else:
            buf += data
        if not self._protocol_paused and len(buf) > HIGH_WATER:
            self._protocol_paused = True
            self.protocol.pause_writing()

    def write_later(self, data: bytes) -> None:
        """write(), at the end of this loop turn, together with every other connection's.

        Back-to-back sends wake the peer's side once instead of once per connection:
        across CPUs (and in VMs) that wake-up costs more than the send itself. The
        order of bytes is kept: write() and sendfile() first send what waits here."""
        if self._closing:
            return
        later = self._later
        if later is None:
            # (a caller's bytearray is copied: it is extended in place below)
            self._later = data if type(data) is bytes else bytes(data)
            self._loop.flush_list.append(self)  # end_turn() runs after this turn's I/O
        elif type(later) is bytes:
            self._later = bytearray(later) + data  # our own from here: extended in place
        else:
            later += data

    def flush(self) -> None:
        """Send what write_later() holds now (a close waiting for it then completes)."""
        if self._later is not None and not self._lost:
            self._send_later(False)

    def end_turn(self) -> None:
        """The loop's call at the end of a turn: the turn's writes go out. It comes
        outside any protocol callback, so a close that waited for them ends right here."""
        if self._later is not None and not self._lost:
            self._send_later(True)

    def _send_later(self, finish_now: bool) -> None:
        data: Any = self._later
        self._later = None
        if self._closing and self._buffer is None and self._file is None:
            data = self._send_before_fin(data)
        if data:
            self._write(data)
        if self._closing and not self._lost:  # close() waited for this
            if self._buffer is not None or self._file is not None:
                self._loop.remove_reader(self._fd)  # _write_ready finishes it
            elif finish_now:
                self._closed()
            else:
                self._loop.call_soon(self._closed)

    def sendfile(self, fd: int, offset: int, count: int,
                 on_done: Callable[[], Any] | None = None) -> None:
        """Send `count` bytes of file `fd` from `offset` with os.sendfile, after buffered data.

        `on_done` runs once the last byte is handed to the kernel; the caller keeps
        `fd` open until then (or until connection_lost)."""
        if self._later is not None:
            if self._buffer is None and self._file is None and count > 0 and not self._lost:
                # The head goes with MSG_MORE: the kernel holds it for the file's first
                # bytes, and one segment carries both (one send's worth of work fewer).
                later, self._later = self._later, None
                rest = self._send_before_fin(later)
                if rest:
                    self._write(rest)
            else:
                Transport.flush(self)  # (a subclass's sendfile has counted these bytes)
        if self._closing or count <= 0:
            if on_done is not None:
                self._loop.call_soon(on_done)
            return
        if self._file is not None:
            raise RuntimeError("a sendfile is already in flight")
        self._file = [fd, offset, count, on_done]
        if not self._buffer:
            self._loop.add_writer(self._fd, self._write_ready)

    def _write_ready(self) -> None:
        if self._lost or (self._buffer is None and self._file is None):
            return  # aborted earlier in this loop turn
        buf = self._buffer
        if buf:
            try:
                n = os.write(self._fd, buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._force_close(exc)
                return
            del buf[:n]
            if buf:
                return
        self._buffer = None
        if self._file is not None and not self._send_file():
            return
        if self._buffer:  # the tail written during the file
            return
        self._loop.remove_writer(self._fd)
        if self._protocol_paused:
            self._protocol_paused = False
            self.protocol.resume_writing()
        if self._closing:
            self._closed()
        elif self._eof_after_flush:
            self._shutdown_write()

    def _send_file(self) -> bool:
        """Returns True once the file is fully sent."""
        f = self._file
        assert f is not None
        try:
            n = os.sendfile(self._fd, f[0], f[1], min(f[2], 1 << 20))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._force_close(exc)
            return False
        if n == 0:  # the file shrank under us; nothing more will come
            self._force_close(None)
            return False
        f[1] += n
        f[2] -= n
        if f[2] > 0:
            return False
        self._file = None
        if self._tail:  # what was written during the file goes next, before anything new
            self._buffer, self._tail = self._tail, None
        if f[3] is not None:
            f[3]()
        return not self._buffer and self._file is None

    def get_write_buffer_size(self) -> int:
        return len(self._buffer or b"") + (self._file[2] if self._file else 0)

    def write_eof(self) -> None:
        """Half-close: FIN after the buffered data is out; reading goes on."""
        if self._later is not None:
            self.flush()
        if self._buffer or self._file:
            self._eof_after_flush = True
        else:
            self._shutdown_write()

    # -- closing -----------------------------------------------------------
    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; close once the buffer is sent."""
        if self._closing:
            return
        self._closing = True
        if self._later is not None:
            # The turn's flush sends it, then finishes the close: send and close
            # syscalls stay batched after the turn's reads, as for open connections.
            self._reading = False
            return
        if not self._buffer and self._file is None:
            # Closing the fd this loop turn takes it out of epoll: no remove_reader.
            self._reading = False
            self._loop.call_soon(self._closed)
        elif self._reading:
            self._reading = False  # data still to send: stop hearing about reads
            self._loop.remove_reader(self._fd)

    def close_lingering(self) -> None:
        """close(), then a FIN and input dropped for a while (_Linger): an answer to a
        client that is still sending reaches it, instead of a RST."""
        self._linger = True
        self.close()

    def _closed(self) -> None:  # a close's last byte is out
        if self._linger is None or self._lost:
            self._connection_lost(None)
        else:
            self._linger = _Linger(self)

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._buffer = self._tail = self._file = self._later = None
        self._reading = False
        self._closing = True
        self._loop.call_soon(self._connection_lost, exc)  # which forgets and closes the fd

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._loop.forget(self._fd)
        try:
            self.protocol.connection_lost(exc)
        finally:
            self._close_fd()
            self._on_close(self)
            self._peer = None
            self.protocol = None  # no transport <-> protocol cycle left for the collector


class _Linger:
    """The end of a lingering close: FIN sent, input read and dropped until EOF or a
    bound, then the transport's ordinary end (connection_lost, fd closed)."""

    __slots__ = ("transport", "until", "left", "last")

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        transport._shutdown_write()
        now = monotonic()
        self.until = now + LINGER_TIME
        self.left = LINGER_BYTES
        self.last = now
        transport._loop.add_reader(transport._fd, self.read)
        transport._loop.call_later(LINGER_TIMEOUT, self.check)

    def read(self) -> None:
        t = self.transport
        if t._lost:
            return
        try:
            data = os.read(t._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self.left -= len(data)
        self.last = monotonic()
        if not data or self.left <= 0 or self.last >= self.until:
            t._connection_lost(None)

    def check(self) -> None:
        t = self.transport
        if t._lost:
            return
        now = monotonic()
        due = min(self.until, self.last + LINGER_TIMEOUT)
        if now >= due:
            t._connection_lost(None)
        else:
            t._loop.call_later(due - now, self.check)


class MeteredTransport(Transport):
    """A Transport that counts the bytes it reads, and those it sends, into its
    class's `meter` (bytes_in, bytes_out; see metered_transport). A worker serves its
    connections with one only while metrics are on, so otherwise reads and writes pay
    nothing for it. Bytes are counted as they go to the kernel: write()'s and
    sendfile()'s at once, write_later()'s at the turn's end (or when a write, a
    sendfile or a flush sends them first), so the busiest path, a response held for
    the turn's end, pays no call more; what an abort drops is not counted."""

    __slots__ = ()
    meter: Any = None

    def _read_ready(self) -> None:
        # Transport._read_ready with the count: a call fewer per read than wrapping it.
        if self._closing:
            return
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        if data:
            self.meter.bytes_in += len(data)
            self.protocol.data_received(data)
            return
        self._loop.remove_reader(self._fd)
        self._reading = False
        if not self.protocol.eof_received():
            self.close()

    __call__ = _read_ready

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            later = self._later  # (sent first)
            self.meter.bytes_out += len(data) if later is None else len(data) + len(later)
        Transport.write(self, data)

    def end_turn(self) -> None:
        # Transport.end_turn with the count: no call more per turn than unmetered.
        later = self._later
        if later is not None and not self._lost:
            self.meter.bytes_out += len(later)
            self._send_later(True)

    def flush(self) -> None:
        later = self._later
        if later is not None and not self._lost:
            self.meter.bytes_out += len(later)
            self._send_later(False)

    def sendfile(self, fd: int, offset: int, count: int,
                 on_done: Callable[[], Any] | None = None) -> None:
        later = self._later  # (sent first, even by a closing transport)
        if later is not None and not self._lost:
            self.meter.bytes_out += len(later)
        if not self._closing and count > 0:
            self.meter.bytes_out += count
        Transport.sendfile(self, fd, offset, count, on_done)


def metered_transport(meter: Any) -> type[Transport]:
    """A MeteredTransport class counting into `meter` (one per worker, made at start)."""
    return type("MeteredTransport", (MeteredTransport,), {"__slots__": (), "meter": meter})
