"""USR2: a new master (new code, new config) takes over the listening sockets.

The old master forks and execs a fresh `preforkd start` with its original
arguments. The child gets the listening sockets as fds 3.. with LISTEN_FDS and
LISTEN_PID, exactly as systemd passes them (so one code path adopts both), and
the write end of a pipe named by PREFORKD_READY_FD, on which it says "ok" once
its workers serve, or why it failed. Meanwhile the pid file is `<pid>.oldbin`;
the new master writes the pid file when it is ready. Until the old master is
stopped both serve; the old master's QUIT/TERM completes the upgrade, and if the
new master fails or is stopped first, the old pid file comes back.
"""

from __future__ import annotations

import fcntl
import os
import selectors
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

from preforkd import logs
from preforkd.listeners import SD_LISTEN_FDS_START, Listener
from preforkd.process import describe_status

log = logs.log

READY_FD_ENV = "PREFORKD_READY_FD"
UPGRADE_ENV = "PREFORKD_UPGRADE"  # set in the new master: write the pid file once ready


def oldbin_path(pid_path: str) -> str:
    return pid_path + ".oldbin"


def spawn_master(listeners: Sequence[Listener], argv: Sequence[str],
                 env: dict[str, str]) -> tuple[int, int]:
    """Fork and exec `python -m preforkd <argv>` with the listeners; returns the child's
    pid and the read end of its ready pipe (close-on-exec here)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    fds = [lst.sock.fileno() for lst in listeners]
    pid = os.fork()
    if pid == 0:
        try:
            _exec_child(fds, w, argv, env)
        finally:
            os._exit(127)
    os.close(w)
    return pid, r


def _exec_child(fds: list[int], ready_w: int, argv: Sequence[str], env: dict[str, str]) -> None:
    n = len(fds)
    first_free = SD_LISTEN_FDS_START + n + 1
    # Out of the way first (a target number may hold one of our own fds), then into
    # place: dup2 leaves the targets inheritable, everything else is close-on-exec.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, first_free) for fd in fds + [ready_w]]
    for i, fd in enumerate(high):
        os.dup2(fd, SD_LISTEN_FDS_START + i)
    child_env = dict(env)
    child_env.update({"LISTEN_FDS": str(n), "LISTEN_PID": str(os.getpid()),
                      READY_FD_ENV: str(SD_LISTEN_FDS_START + n), UPGRADE_ENV: "1"})
    child_env.pop("LISTEN_FDNAMES", None)
    os.execve(sys.executable, [sys.executable, "-m", "preforkd", *argv], child_env)


def inherited_ready_fd() -> int:
    """The ready pipe an upgrading master gave us (consumed once), or -1."""
    value = os.environ.pop(READY_FD_ENV, "")
    if not value.isdigit():
        return -1
    fd = int(value)
    os.set_inheritable(fd, False)
    return fd


class Upgrade:
    """An upgrade in progress, as the old master sees it."""

    def __init__(self, pid: int, ready_fd: int, pid_path: str, old_pid: int) -> None:
        self.pid = pid  # the new master
        self.ready_fd = ready_fd
        self.pid_path = pid_path
        self.old_pid = old_pid
        self.ready = False  # the new master said it serves
        self.waiters: list[Any] = []  # control-socket replies waiting for the outcome
        self._heard = b""

    @classmethod
    def begin(cls, listeners: Sequence[Listener], argv: Sequence[str], env: dict[str, str],
              pid_path: str, old_pid: int) -> Upgrade:
        """Rename the pid file to .oldbin and start the new master (OSError: neither)."""
        os.rename(pid_path, oldbin_path(pid_path))
        try:
            pid, ready_fd = spawn_master(listeners, argv, env)
        except OSError:
            os.rename(oldbin_path(pid_path), pid_path)
            raise
        return cls(pid, ready_fd, pid_path, old_pid)

    def hear(self) -> str | None:
        """Read the new master's report: None until a whole line (or EOF) came."""
        try:
            data = os.read(self.ready_fd, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        self._heard += data
        if data and b"\n" not in self._heard:
            return None
        line = self._heard.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        return line or "error the new master exited before it served"

    def conclude(self, message: str) -> None:
        """The new master's report came: "ok" (it serves) or why it failed (the old pid
        file comes back); the waiting `preforkd upgrade` hears which."""
        self.close()
        if message.startswith("ok"):
            self.ready = True
            log.info("event=upgrade-done new_master=%d", self.pid)
            reply = f"ok new master pid {self.pid} serving"
        else:
            why = message.removeprefix("error ")
            self.restore_pid_file()
            log.error("event=upgrade-failed new_master=%d error=%s", self.pid, why)
            reply = f"error the new master failed: {why}"
        for waiter in self.waiters:
            waiter.send(reply)
        self.waiters = []

    def restore_pid_file(self) -> None:
        """The old master is the one again: its pid file comes back."""
        try:
            os.replace(oldbin_path(self.pid_path), self.pid_path)
        except OSError:
            pass

    def remove_oldbin(self) -> None:
        """The old master exits after a completed upgrade."""
        path = oldbin_path(self.pid_path)
        try:
            with open(path) as f:
                if f.read().strip() == str(self.old_pid):
                    os.unlink(path)
        except OSError:
            pass

    def close(self) -> None:
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1


def child_argv(argv: Sequence[str]) -> list[str]:
    """The new master's arguments: the old one's, without --daemon (it is detached
    already; daemonizing again would make the process we wait for exit at once)."""
    return [a for a in argv if a not in ("--daemon", "-D")]


# -- the old master's side (its command and its callbacks) ---------------------


def begin(master: Any, reply: Any = None) -> None:
    """USR2 / `preforkd upgrade`: start a new master that inherits our sockets."""
    if master.stopping or master.upgrading is not None:
        if reply is not None:
            reply.send("error the master is stopping" if master.stopping else
                       f"error an upgrade is under way: pid {master.upgrading.pid}")
        return
    try:
        up = Upgrade.begin(master.listeners, child_argv(master.argv), master.notify.child_env(),
                           master.config.pid, master.pid)
    except OSError as e:
        log.error("event=upgrade-failed error=%s", e)
        if reply is not None:
            reply.send(f"error cannot start a new master: {e}")
        return
    if reply is not None:
        up.waiters.append(reply)
    master.upgrading = up
    master.selector.register(up.ready_fd, selectors.EVENT_READ, partial(_heard, master))
    log.info("event=upgrade new_master=%d pid_file=%s.oldbin", up.pid, master.config.pid)


def _heard(master: Any) -> None:
    up = master.upgrading
    assert up is not None
    message = up.hear()
    if message is None:
        return
    master.selector.unregister(up.ready_fd)
    up.conclude(message)
    if up.ready:
        master.notify.main_pid(up.pid, f"upgraded: master pid {up.pid}")


def other_child_exited(master: Any, pid: int, status: int) -> None:
    """A child of the master that is not a worker exited: the new master, if ours."""
    up = master.upgrading
    if up is None or pid != up.pid:
        return
    log.info("event=new-master-exited pid=%d status=%s", pid, describe_status(status))
    if up.ready:  # a rollback: the old master is the one again
        up.restore_pid_file()
        master.open_control()
    elif up.ready_fd >= 0:
        _heard(master)  # (its report, or the EOF that says it failed)
    master.upgrading = None
