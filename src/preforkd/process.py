"""What the master and workers agree on about processes: exit codes, titles, users.

(The bytes on the master/worker channel are preforkd.control's.)"""

from __future__ import annotations

import os
import signal

from setproctitle import setproctitle

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
