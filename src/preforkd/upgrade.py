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
import sys
from collections.abc import Sequence

from preforkd.listeners import SD_LISTEN_FDS_START, Listener

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
