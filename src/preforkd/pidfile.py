"""The pid file: written atomically, refused while a live master holds it, stale ones cleaned."""

from __future__ import annotations

import os

from preforkd.process import alive


class PidFileError(Exception):
    pass


def read(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:  # missing, or unreadable after a privilege drop: not ours to judge
        return None
    return int(text) if text.isdigit() else None


def is_master(pid: int) -> bool:
    """A live process that is a preforkd master (pids are reused, so check its title)."""
    if not alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: assume it is one rather than clobber it
    return b"preforkd" in cmdline


def check_free(path: str) -> None:
    pid = read(path)
    if pid is not None and pid != os.getpid() and is_master(pid):
        raise PidFileError(f"already running: master pid {pid} holds {path}")


def write(path: str, pid: int) -> None:
    check_free(path)
    tmp = f"{path}.{pid}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(f"{pid}\n")
        os.replace(tmp, path)
    except OSError as e:
        raise PidFileError(f"cannot write pid file {path}: {e.strerror}") from None


def remove(path: str, pid: int) -> None:
    if read(path) == pid:
        try:
            os.unlink(path)
        except OSError:
            pass
