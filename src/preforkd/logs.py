"""Error log: key=value lines on fd 2, which points at the log file.

The file is dup2'ed onto fd 2, so tracebacks, faulthandler dumps and anything
a library prints land in the same log, and reopening (USR1, logrotate) is one
open + dup2 in each process.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

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


class AccessLog:
    """One line per request, combined (with rt_us= and worker=) or JSON lines.

    Buffered: lines go out when 64 KiB collect, on the worker's 1 s sweep, on
    reopen (USR1) and at exit. Off (enabled False) costs one attribute check."""

    def __init__(self, path: str, fmt: str, worker: int) -> None:
        self.path = path
        self.enabled = bool(path)
        self.json = fmt == "json"
        self.worker = worker
        self._file: Any = None
        self._stamp_second = -1
        self._stamp = ""
        if self.enabled:
            self._open()

    def _open(self) -> None:
        if self.path == "-":
            self._file = os.fdopen(os.dup(1), "ab", buffering=65536)
        else:
            self._file = open(self.path, "ab", buffering=65536)  # noqa: SIM115

    def log(self, remote: str, req: Any, status: int, sent: int, seconds: float) -> None:
        now = time.time()
        second = int(now)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
        referer = agent = "-"
        for name, value in req.headers:
            if len(name) == 7 and name.lower() == b"referer":
                referer = value.decode("latin-1")
            elif len(name) == 10 and name.lower() == b"user-agent":
                agent = value.decode("latin-1")
        method = req.method.decode("latin-1")
        target = req.target.decode("latin-1")
        us = int(seconds * 1e6)
        if self.json:
            line = json.dumps({"time": self._stamp, "remote": remote, "method": method,
                               "target": target, "protocol": f"HTTP/{req.version}",
                               "status": status,
                               "bytes": sent, "referer": referer, "user_agent": agent,
                               "duration_us": us, "worker": self.worker})
        else:
            line = (f'{remote or "-"} - - [{self._stamp}] "{method} {target} HTTP/{req.version}" '
                    f'{status or "-"} {sent} "{_quote(referer)}" "{_quote(agent)}" '
                    f"rt_us={us} worker={self.worker}")
        self._file.write(line.encode("utf-8", "replace") + b"\n")

    def flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError:
                pass

    def reopen(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._open()

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None


def _quote(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')
