"""Listening sockets: bind specs, inherited fds (fd://N, systemd), unix socket files.

The master binds everything before forking; workers only accept. Nothing here
sleeps or exits: errors are ListenError with one line for the user.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass
from typing import Any

SD_LISTEN_FDS_START = 3


class ListenError(Exception):
    """A listener could not be set up; str(self) names the address and the cause."""


@dataclass(frozen=True)
class BindSpec:
    kind: str  # "tcp", "unix" or "fd"
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1


def parse_bind(spec: str) -> BindSpec:
    """Parse `host:port`, `[v6]:port`, `unix:/path` or `fd://N`; ValueError says what is wrong."""
    if spec.startswith("unix:"):
        path = spec[5:]
        if not path:
            raise ValueError('"unix:/path" with a path')
        return BindSpec("unix", path=path)
    if spec.startswith("fd://"):
        n = spec[5:]
        if not n.isdigit():
            raise ValueError('"fd://N" with a file descriptor number')
        return BindSpec("fd", fd=int(n))
    if spec.startswith("["):
        host, sep, port = spec[1:].partition("]:")
        if not sep:
            raise ValueError('"[v6-address]:port"')
    else:
        host, sep, port = spec.rpartition(":")
        if not sep or ":" in host:
            raise ValueError('"host:port", "[v6]:port", "unix:/path" or "fd://N"')
    if not port.isdigit() or int(port) > 65535:
        raise ValueError("a port from 0 to 65535")
    return BindSpec("tcp", host=host or "0.0.0.0", port=int(port))


class Listener:
    """One listening socket and the spec it came from."""

    __slots__ = ("sock", "spec", "unlink_path", "address", "family", "type", "factory")

    def __init__(self, sock: socket.socket, spec: str, unlink_path: str = "") -> None:
        self.sock = sock
        self.spec = spec
        self.unlink_path = unlink_path  # unix socket file we created and remove at exit
        self.family = int(sock.family)  # plain ints, for building accepted sockets fast
        self.factory: Any = None  # in a worker: makes the protocol of each connection
        self.type = int(sock.type)
        # (SERVER_NAME, SERVER_PORT) as WSGI wants them, for every connection it accepts;
        # known up front, since connections outlive the listener in a graceful stop.
        addr = sock.getsockname()
        if isinstance(addr, tuple):
            self.address = (addr[0], str(addr[1]))
        else:
            self.address = ("localhost", "80")

    @property
    def name(self) -> str:
        addr = self.sock.getsockname()
        if self.sock.family == socket.AF_UNIX:
            return "unix:" + (addr if isinstance(addr, str) else addr.decode())
        if self.sock.family == socket.AF_INET6:
            return f"[{addr[0]}]:{addr[1]}"
        return f"{addr[0]}:{addr[1]}"

    def close(self, unlink: bool = False) -> None:
        self.sock.close()
        if unlink and self.unlink_path:
            try:
                os.unlink(self.unlink_path)
            except OSError:
                pass


def _explain(spec: str, e: OSError) -> ListenError:
    reason = {
        errno.EADDRINUSE: "address already in use",
        errno.EACCES: "permission denied",
        errno.EADDRNOTAVAIL: "address not available on this host",
    }.get(e.errno or 0, e.strerror or str(e))
    return ListenError(f"cannot listen on {spec}: {reason}")


def _bind_tcp(spec: str, b: BindSpec, backlog: int, reuseport: bool = False) -> Listener:
    try:
        infos = socket.getaddrinfo(b.host, b.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV)
    except socket.gaierror as e:
        raise ListenError(f"cannot listen on {spec}: {e.strerror}") from None
    family, type_, proto, _, addr = infos[0]
    return Listener(_tcp_socket(spec, family, addr, backlog, reuseport), spec)


def _tcp_socket(spec: str, family: int, addr: Any, backlog: int, reuseport: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise _explain(spec, e) from None
    return sock


def _check_reuseport(listeners: list[Listener]) -> None:
    for lst in listeners:
        if not lst.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            raise ListenError(f"accept: reuseport needs sockets bound with SO_REUSEPORT; "
                              f"{lst.spec} is not (host:port binds have it)")


def reuseport_sibling(listener: Listener, backlog: int) -> Listener:
    """One more socket in `listener`'s SO_REUSEPORT group (its address, port resolved):
    the kernel spreads new connections over the sockets of the group, and each keeps
    its own accept queue."""
    return Listener(_tcp_socket(listener.spec, listener.family, listener.sock.getsockname(),
                                backlog, True), listener.spec)


def _remove_stale_unix(path: str, spec: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"cannot listen on {spec}: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: a leftover from a crash
        return
    except OSError as e:
        raise _explain(spec, e) from None
    finally:
        probe.close()
    raise ListenError(f"cannot listen on {spec}: address already in use")


def _bind_unix(spec: str, b: BindSpec, backlog: int, mode: int) -> Listener:
    _remove_stale_unix(b.path, spec)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(b.path)
        os.chmod(b.path, mode)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise _explain(spec, e) from None
    return Listener(sock, spec, unlink_path=b.path)


def adopt_fd(fd: int, spec: str) -> Listener:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise ListenError(f"cannot use {spec}: {e.strerror}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET,
                                                              socket.SO_ACCEPTCONN):
        sock.detach()
        raise ListenError(f"cannot use {spec}: not a listening stream socket")
    os.set_inheritable(fd, False)
    return Listener(sock, spec)


def systemd_fds() -> list[int]:
    """Sockets passed by systemd socket activation, consumed once (env vars removed)."""
    pid, count = os.environ.pop("LISTEN_PID", ""), os.environ.pop("LISTEN_FDS", "")
    os.environ.pop("LISTEN_FDNAMES", None)
    if not count.isdigit() or pid != str(os.getpid()):
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))


def open_listeners(binds: tuple[str, ...], backlog: int, unix_mode: int,
                   inherited: list[int] | None = None, reuseport: bool = False) -> list[Listener]:
    """Bind every spec; inherited fds (systemd) replace the configured binds.
    `reuseport`: TCP sockets join an SO_REUSEPORT group (see reuseport_sibling); other
    kinds cannot, and are refused."""
    if inherited:
        adopted = [adopt_fd(fd, f"fd://{fd}") for fd in inherited]
        if reuseport:
            _check_reuseport(adopted)
        return adopted
    listeners: list[Listener] = []
    try:
        for spec in binds:
            b = parse_bind(spec)
            if reuseport and b.kind == "unix":
                raise ListenError(f"accept: reuseport needs host:port binds, got {spec}")
            if b.kind == "tcp":
                listeners.append(_bind_tcp(spec, b, backlog, reuseport))
            elif b.kind == "unix":
                listeners.append(_bind_unix(spec, b, backlog, unix_mode))
            else:
                listeners.append(adopt_fd(b.fd, spec))
                if reuseport:
                    _check_reuseport(listeners[-1:])
    except BaseException:
        for listener in listeners:
            listener.close(unlink=True)
        raise
    return listeners


def rebind(current: list[Listener], binds: tuple[str, ...], backlog: int,
           unix_mode: int, reuseport: bool = False) -> list[Listener]:
    """The listeners for a reloaded `bind`: keep the sockets whose spec stays, bind the
    new ones, close the dropped ones. Inherited sockets (fd://) are kept as they are."""
    keep = {lst.spec: lst for lst in current}
    if set(binds) == set(keep) or all(lst.spec.startswith("fd://") for lst in keep.values()):
        return current
    added = [spec for spec in binds if spec not in keep]
    fresh = {lst.spec: lst for lst in open_listeners(tuple(added), backlog, unix_mode,
                                                     reuseport=reuseport)}
    for spec, lst in keep.items():
        if spec not in binds:
            lst.close(unlink=True)
    return [keep.get(spec) or fresh[spec] for spec in binds]


class ReuseportGroups:
    """accept = "reuseport": each worker index has its own socket per listener, all in
    one SO_REUSEPORT group with the master's. The master keeps them, so a worker's
    successor (respawn, reload, recycling) accepts from the same socket and takes
    over what waits in its queue. Index 0 uses the master's own listeners."""

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        self.groups: dict[int, list[Listener]] = {}

    def for_index(self, index: int, base: list[Listener], wanted: int) -> list[Listener]:
        self.trim(wanted)
        if index == 0:
            return base
        group = self.groups.get(index)
        if group is None or [lst.spec for lst in group] != [lst.spec for lst in base]:
            self.close(index)
            group = self.groups[index] = [reuseport_sibling(lst, self.backlog) for lst in base]
        return group

    def trim(self, wanted: int) -> None:
        """Close the sockets of indexes no longer wanted (a retiring worker holds its own
        copy until it has drained its queue)."""
        for index in [i for i in self.groups if i >= wanted]:
            self.close(index)

    def close(self, index: int | None = None) -> None:
        for i in [index] if index is not None else list(self.groups):
            for lst in self.groups.pop(i, []):
                lst.close()
