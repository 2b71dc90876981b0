"""The master's two wires: the channel to each worker, the control socket to the CLI.

Theory of operation
-------------------
Each wire's format is written down once, here, and both ends use it:

- The **channel** is a socketpair per worker, made before the fork. Master ->
  worker commands are one byte each (ToWorker), so a read can never split one
  and any number of them can be read at once; worker -> master messages are
  lines, `ready` and `error <why>` (FromWorker). EOF tells either end that the
  other process is gone: the master reaps, the worker stops.
- The **control socket** is a unix stream socket beside the pid file
  (`<pid file>.ctl`), mode 0600: it is bound under umask 0177, so there is no
  moment at which anyone else could connect. A client sends one line, a
  command word (`reload`, `stop`, `stop fast`, `reopen`, `status`); the master
  answers with one line (`ok ...`, `error ...`, or the status JSON, which has
  no raw newline) and closes. The answer may come much later: `reload` answers
  once the new generation serves or was rolled back, so the server hands each
  command on with a Reply to keep, not a string to return.

Which words exist and what they do is the command table's business
(preforkd.commands); this module only moves them.
"""

from __future__ import annotations

import enum
import os
import socket
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from preforkd import logs

log = logs.log

T = TypeVar("T")


# -- the channel: master <-> one worker -------------------------------------------

class ToWorker(enum.Enum):
    GRACEFUL = b"q"  # drain and exit: retired (reload, recycling, fewer workers)
    STOP = b"s"  # the server stops: health says so for drain_delay, then drain and exit
    FAST = b"t"  # exit now
    REOPEN = b"o"  # reopen log files


class FromWorker(enum.Enum):
    READY = b"ready"  # booted: serving
    ERROR = b"error"  # followed by why it could not boot; it exits next


MSG_READY = FromWorker.READY.value
MSG_ERROR = FromWorker.ERROR.value
_ORDERS = {order.value[0]: order for order in ToWorker}
_MESSAGES = {msg.value: msg for msg in FromWorker}


def send_line(sock: socket.socket, line: bytes) -> None:
    """Worker -> master: one message line (a newline inside would split it, so it
    becomes a space). A master that is gone is no error here: the channel's EOF
    stops the worker."""
    try:
        sock.sendall(line.replace(b"\n", b" ") + b"\n")
    except OSError:
        pass


def report_error(sock: socket.socket, why: str) -> None:
    """Worker -> master: why this worker could not boot (it exits next)."""
    send_line(sock, MSG_ERROR + b" " + why.encode("utf-8", "replace"))


def _recv(sock: socket.socket, size: int) -> bytes | None:
    """What the other end sent: b"" if nothing is waiting, None at EOF (or an error,
    which means the same: the other process is gone)."""
    try:
        return sock.recv(size) or None
    except (BlockingIOError, InterruptedError):
        return b""
    except OSError:
        return None


def read_orders(sock: socket.socket) -> list[ToWorker] | None:
    """The worker side: the commands waiting on the channel; None once the master is gone."""
    data = _recv(sock, 64)
    if data is None:
        return None
    return [_ORDERS[byte] for byte in data if byte in _ORDERS]


class Channel:
    """The master's end of one worker's socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.inbox = b""  # a message line not yet complete

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, order: ToWorker) -> bool:
        """False if the worker cannot hear it (gone, or not reading): signal it instead."""
        try:
            self.sock.send(order.value)
        except OSError:
            return False
        return True

    def receive(self) -> list[tuple[FromWorker, str]] | None:
        """The complete messages that arrived, as (kind, text); None at EOF."""
        data = _recv(self.sock, 4096)
        if data is None:
            return None
        self.inbox += data
        *lines, self.inbox = self.inbox.split(b"\n")
        out = []
        for line in lines:
            head, _, text = line.partition(b" ")
            kind = _MESSAGES.get(head)
            if kind is not None:
                out.append((kind, text.strip().decode("utf-8", "replace")))
        return out

    def close(self) -> None:
        self.sock.close()


# -- the control socket: CLI -> master --------------------------------------------

class Reply:
    """A control-socket client waiting for its answer: one line, then the connection closes."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def send(self, message: str) -> None:
        try:
            self.conn.sendall(message.encode() + b"\n")
        except OSError:
            pass  # the client gave up waiting; nothing to tell
        self.conn.close()

    def close(self) -> None:
        self.conn.close()


class ControlServer(Generic[T]):
    """The master's control socket. Each command word is looked up in `words`, and
    `on_command(entry, reply)` gets it; an unknown word is answered here."""

    def __init__(self, sock: socket.socket, path: str, words: Mapping[str, T],
                 on_command: Callable[[T, Reply], None]) -> None:
        self.sock = sock
        self.path = path
        self.words = words
        self.on_command = on_command

    @classmethod
    def open(cls, path: str, words: Mapping[str, T],
             on_command: Callable[[T, Reply], None]) -> ControlServer[T] | None:
        """Bind `path` mode 0600; None (and a warning: signals still work) if that fails."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if os.path.exists(path):
                os.unlink(path)  # the pid file check already proved no live master owns it
            old_umask = os.umask(0o177)
            try:
                sock.bind(path)
            finally:
                os.umask(old_umask)
            sock.listen(16)
        except OSError as e:
            sock.close()
            log.warning("event=control-socket-failed path=%s error=%s", path, e.strerror)
            return None
        sock.setblocking(False)
        return cls(sock, path, words, on_command)

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.settimeout(1.0)  # local, 0600: the CLI sends its line at once
        try:
            word = conn.recv(256).decode("ascii", "replace").strip()
        except OSError:
            conn.close()
            return
        entry = self.words.get(word)
        if entry is None:
            Reply(conn).send(f"error unknown command {word!r}")
        else:
            self.on_command(entry, Reply(conn))

    def close(self, unlink: bool = True) -> None:
        """Close it; `unlink` (the master at exit, not a forked worker) removes the path."""
        self.sock.close()
        if unlink:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def request(path: str, word: str, timeout: float) -> str | None:
    """The client: send one command word to the control socket at `path` and return the
    master's reply line (None: no master listens there). TimeoutError if none comes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        sock.sendall(word.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    finally:
        sock.close()
    return reply.decode(errors="replace").strip()
