"""Processes: exit codes, titles, users, limits, and what the master reports outside.

The master and its workers agree here on exit codes and titles. The master's
own process chores live here too, apart from its supervision: raising the fd
limit, dropping privileges, RSS, the daemon's start-up report and the
lifecycle events file. (The bytes on the master/worker channel are
preforkd.control's.)
"""

from __future__ import annotations

import os
import resource
import signal
from typing import TYPE_CHECKING, Any

from setproctitle import setproctitle

from preforkd import logs

if TYPE_CHECKING:
    from preforkd.config import Config

log = logs.log

# Exit codes are a protocol: the master tells a boot failure from a crash.
EX_OK = 0
EX_BOOT = 3  # the worker failed before it was ready (internal error)
EX_APP = 4  # the application or protocol could not be loaded


def set_title(title: str) -> None:
    setproctitle("preforkd: " + title)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_user(user: str, group: str) -> tuple[int, int] | None:
    """(uid, gid) to switch to, None for no switch; ValueError names the key."""
    import grp
    import pwd

    if not user and not group:
        return None
    try:
        pw = pwd.getpwnam(user) if user else pwd.getpwuid(os.getuid())
    except KeyError:
        raise ValueError(f"user: no such user {user!r}") from None
    try:
        gid = grp.getgrnam(group).gr_gid if group else pw.pw_gid
    except KeyError:
        raise ValueError(f"group: no such group {group!r}") from None
    if (pw.pw_uid, gid) == (os.getuid(), os.getgid()):
        return None
    if os.geteuid() != 0:
        raise ValueError(f"user: switching to {pw.pw_name} needs the master started as root")
    return pw.pw_uid, gid


def drop_privileges(ids: tuple[int, int], keep: list[str]) -> None:
    """Become uid/gid for good; the files in `keep` are handed over first so the
    master can still rewrite or remove them (pid file, control socket, logs)."""
    import pwd

    uid, gid = ids
    for path in keep:
        try:
            os.chown(path, uid, gid)
        except FileNotFoundError:
            pass
    os.initgroups(pwd.getpwuid(uid).pw_name, gid)
    os.setgid(gid)
    os.setuid(uid)


def hand_logs_to_workers(config: Config) -> None:
    """The error log belongs to the workers' user, so that they can reopen it (USR1)."""
    ids = resolve_user(config.user, config.group)
    if ids is not None and config.error_log != "-":
        try:
            os.chown(config.error_log, *ids)
        except OSError as e:
            log.warning("event=chown-failed path=%s error=%s", config.error_log, e)


def raise_nofile_limit(config: Config) -> None:
    """Raise RLIMIT_NOFILE (soft to hard, or to rlimit_nofile) and warn if it is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = config.rlimit_nofile or hard
    if want != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
            soft = want
        except (ValueError, OSError) as e:
            log.warning("event=rlimit-failed want=%d error=%s", want, e)
    need = config.worker_connections + 64
    if soft < need:
        log.warning("event=rlimit-low nofile=%d worker_connections=%d: a worker can hold "
                    "about %d connections", soft, config.worker_connections, soft - 64)


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


class StartupReport:
    """--daemon: the parent waiting in the foreground hears one line, "ok" or "error ...".
    Without --daemon (fd -1) there is no one to tell."""

    def __init__(self, fd: int = -1) -> None:
        self.fd = fd

    def send(self, message: str) -> None:
        if self.fd >= 0:
            try:
                os.write(self.fd, message.encode() + b"\n")
            except OSError:
                pass
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class EventLog:
    """Lifecycle events as lines (`spawned index=0 gen=1 pid=4711`) for tests and tools,
    appended to the file PREFORKD_EVENTS names; without it, nothing is written."""

    def __init__(self, path: str | None = None) -> None:
        path = os.environ.get("PREFORKD_EVENTS") if path is None else path
        self.fd = (os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                   if path else -1)

    def write(self, name: str, **fields: Any) -> None:
        if self.fd >= 0:
            line = name + "".join(f" {k}={v}" for k, v in fields.items()) + "\n"
            os.write(self.fd, line.encode())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
