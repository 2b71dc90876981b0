"""Error log: key=value lines on fd 2, which points at the log file.

The file is dup2'ed onto fd 2, so tracebacks, faulthandler dumps and anything
a library prints land in the same log, and reopening (USR1, logrotate) is one
open + dup2 in each process.
"""

from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger("preforkd")

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        line = f"{t} [{record.levelname.lower()}] {record.process}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _open(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


def setup(level: str, path: str) -> None:
    """Send the error log to `path` ("-": leave stderr as it is)."""
    if path != "-":
        fd = _open(path)
        os.dup2(fd, 2)
        os.close(fd)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log.handlers[:] = [handler]
    log.setLevel(LEVELS[level])
    log.propagate = False


def reopen(path: str) -> None:
    if path == "-":
        return
    try:
        fd = _open(path)
    except OSError as e:
        log.error("event=reopen-failed path=%s error=%s", path, e.strerror)
        return
    sys.stderr.flush()
    os.dup2(fd, 2)
    os.close(fd)
