"""Configuration: one FIELDS table feeds TOML validation, click options, `check --print`.

Precedence: built-in default < config file < command line. Every error names
where the value came from, the key, the value and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(Exception):
    """A configuration value is wrong; str(self) is the one line to show the user."""


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    expected = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"

    def parse(v: Any) -> int:
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise ValueError(expected)
        return v

    return parse


def _seconds(lo: float = 0.0, allow_zero: bool = True) -> Callable[[Any], float]:
    expected = "a number of seconds >= 0" if allow_zero else "a number of seconds > 0"

    def parse(v: Any) -> float:
        try:
            f = float(v) if not isinstance(v, bool) else None
        except (TypeError, ValueError):
            f = None
        if f is None or f != f or f < lo or (not allow_zero and f == 0):
            raise ValueError(expected)
        return f

    return parse


def _fraction(v: Any) -> float:
    try:
        f = float(v) if not isinstance(v, bool) else None
    except (TypeError, ValueError):
        f = None
    if f is None or not 0.0 <= f <= 1.0:
        raise ValueError("a fraction from 0 to 1")
    return f


def _choice(*options: str) -> Callable[[Any], str]:
    expected = "one of " + ", ".join(f'"{o}"' for o in options)

    def parse(v: Any) -> str:
        if v not in options:
            raise ValueError(expected)
        return v

    return parse


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("a string")
    return v


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return v.lower() in ("true", "yes", "on", "1")
    raise ValueError("true or false")


def _workers(v: Any) -> int:
    if v == "auto":
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1
    try:
        return _int(1, 512)(v)
    except ValueError:
        raise ValueError('a positive integer (up to 512) or "auto"') from None


def _binds(v: Any) -> tuple[str, ...]:
    from preforkd.listeners import parse_bind

    items = [v] if isinstance(v, str) else v
    if (not isinstance(items, (list, tuple)) or not items
            or not all(isinstance(i, str) for i in items)):
        raise ValueError('an address or a list of addresses ("host:port", "[v6]:port", '
                         '"unix:/path", "fd://N")')
    for item in items:
        parse_bind(item)  # raises ValueError naming what is wrong
    return tuple(items)


def _mode(v: Any) -> int:
    if isinstance(v, str):
        try:
            v = int(v, 8)
        except ValueError:
            raise ValueError('an octal file mode such as "0660"') from None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0o777:
        raise ValueError('an octal file mode such as "0660"')
    return v


def _path(v: Any) -> str:
    if not isinstance(v, str) or (v and not v.startswith("/")) or any(c in v for c in "? \r\n"):
        raise ValueError('"" or a path starting with "/" (no query, no spaces)')
    return v


def _target(v: Any) -> str:
    if not isinstance(v, str) or (v and ":" not in v):
        raise ValueError('"module:callable"')
    return v


def _protocol(v: Any) -> str:
    if v in ("http", "echo"):
        return v
    try:
        return _target(v)
    except ValueError:
        raise ValueError('"http", "echo" or "module:factory"') from None


@dataclass(frozen=True)
class Field:
    key: str
    parse: Callable[[Any], Any]
    default: Any
    doc: str
    short: str | None = None
    multiple: bool = False
    is_flag: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


FIELDS: tuple[Field, ...] = (
    Field("bind", _binds, ("127.0.0.1:8000",), "address to listen on (repeatable)",
          short="-b", multiple=True),
    Field("workers", _workers, "auto", 'number of worker processes, or "auto" (usable CPUs)',
          short="-w"),
    Field("protocol", _protocol, "http", 'what workers speak: "http", "echo" or "module:factory"'),
    Field("app", _target, "", "WSGI application as module:callable (default: the welcome app)"),
    Field("pid", _str, "preforkd.pid", "pid file; the control socket sits beside it (.ctl)",
          short="-p"),
    Field("daemon", _bool, False, "detach from the terminal", short="-D", is_flag=True),
    Field("log_level", _choice("debug", "info", "warning", "error"), "info", "error log level"),
    Field("error_log", _str, "-", 'error log file, "-" for stderr'),
    Field("backlog", _int(1, 65535), 2048, "listen backlog"),
    Field("accept", _choice("exclusive", "reuseport", "shared"), "exclusive",
          '"exclusive": one shared socket, one worker woken per connection (EPOLLEXCLUSIVE); '
          '"reuseport": one SO_REUSEPORT socket per worker index, kept by the master; '
          '"shared": one socket, every idle worker woken'),
    Field("unix_socket_mode", _mode, 0o660, "file mode of unix: listeners"),
    Field("worker_connections", _int(1), 10000, "connections one worker serves at once"),
    Field("rlimit_nofile", _int(0), 0,
          "open-file limit to set; 0: raise the soft limit to the hard"),
    Field("timeout", _seconds(allow_zero=False), 30.0,
          "kill a worker whose event loop is silent this long"),
    Field("graceful_timeout", _seconds(), 30.0,
          "on graceful stop or reload, time given to in-flight connections before KILL"),
    Field("max_requests", _int(0), 0,
          "replace a worker after this many requests (0: never)"),
    Field("max_worker_lifetime", _seconds(), 0.0,
          "replace a worker after this many seconds (0: never)"),
    Field("max_worker_rss", _int(0), 0,
          "replace a worker whose RSS grows past this many MiB (0: never)"),
    Field("recycle_jitter", _fraction, 0.1,
          "each worker's limits above are drawn from [limit, limit x (1 + this)]"),
    Field("header_timeout", _seconds(allow_zero=False), 20.0,
          "the whole request header must arrive within this (slowloris): 408"),
    Field("body_timeout", _seconds(allow_zero=False), 60.0,
          "longest pause between two reads of a request body: 408"),
    Field("min_body_rate", _int(0), 500,
          "after body_timeout, a request body must average this many bytes/s: 408 (0: off)"),
    Field("keepalive_timeout", _seconds(allow_zero=False), 75.0,
          "close an idle keep-alive connection after this (above load balancers' 60 s)"),
    Field("write_timeout", _seconds(allow_zero=False), 60.0,
          "abort a connection whose client reads none of its response for this long"),
    Field("max_request_line_bytes", _int(64, 1 << 20), 8192, "longer request target: 414"),
    Field("max_header_bytes", _int(256, 1 << 24), 65536, "larger header section: 431"),
    Field("max_header_count", _int(1, 10000), 100, "more header fields: 431"),
    Field("max_body_bytes", _int(0), 100 * 1024 * 1024, "larger request body: 413"),
    Field("body_buffer_bytes", _int(0), 256 * 1024,
          "request bodies up to this stay in memory; larger ones spill to a temp file"),
    Field("health_path", _path, "/healthz",
          'answered by the worker: 200 "ok", 503 while draining; "" turns it off'),
    Field("status_path", _path, "", "per-worker JSON status; off unless set"),
    Field("metrics_path", _path, "",
          "Prometheus metrics of every worker (text 0.0.4, or OpenMetrics when the "
          "scraper asks); off unless set"),
    Field("access_log", _str, "", 'access log file, "-" for stdout; "" (default) is off'),
    Field("access_log_format", _choice("combined", "json"), "combined", "access log format"),
    Field("signals", _choice("default", "nginx"), "default",
          '"nginx": TERM is a fast stop and QUIT graceful; default: TERM graceful'),
    Field("user", _str, "", "user to run workers as (master started as root)"),
    Field("group", _str, "", "group to run workers as"),
)

FIELDS_BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}


@dataclass(frozen=True)
class Config:
    bind: tuple[str, ...]
    workers: int
    protocol: str
    app: str
    pid: str
    daemon: bool
    log_level: str
    error_log: str
    backlog: int
    accept: str
    unix_socket_mode: int
    worker_connections: int
    rlimit_nofile: int
    timeout: float
    graceful_timeout: float
    max_requests: int
    max_worker_lifetime: float
    max_worker_rss: int
    recycle_jitter: float
    header_timeout: float
    body_timeout: float
    min_body_rate: int
    keepalive_timeout: float
    write_timeout: float
    max_request_line_bytes: int
    max_header_bytes: int
    max_header_count: int
    max_body_bytes: int
    body_buffer_bytes: int
    health_path: str
    status_path: str
    metrics_path: str
    access_log: str
    access_log_format: str
    signals: str
    user: str
    group: str
    # Where the file values came from, so HUP re-reads the same file.
    config_path: str = ""

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @property
    def control_path(self) -> str:
        return control_path_for(self.pid)

    def describe(self) -> str:
        """The effective configuration as TOML, for `check --print`."""
        lines = []
        for f in FIELDS:
            lines.append(f"# {f.doc}")
            lines.append(f"{f.key} = {_toml_value(f, getattr(self, f.key))}")
        return "\n".join(lines) + "\n"


def control_path_for(pid_path: str) -> str:
    root, ext = os.path.splitext(pid_path)
    return (root if ext == ".pid" else pid_path) + ".ctl"


def _toml_value(field: Field, v: Any) -> str:
    if field.key == "unix_socket_mode":
        return f'"{v:04o}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(field, i) for i in v) + "]"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def _parse(field: Field, value: Any, name: str) -> Any:
    try:
        return field.parse(value)
    except ValueError as e:
        shown = list(value) if isinstance(value, tuple) else value
        raise ConfigError(f"{name}: expected {e}, got {shown!r}") from None


def read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    for key in data:
        if key not in FIELDS_BY_KEY:
            close = difflib.get_close_matches(key, FIELDS_BY_KEY, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            raise ConfigError(f'{path}: unknown key "{key}"{hint}')
    return data


def load(path: str = "", overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the file at `path` (if any), then command-line `overrides`."""
    values: dict[str, Any] = {}
    file_values = read_file(path) if path else {}
    for f in FIELDS:
        if overrides and overrides.get(f.key) is not None:
            values[f.key] = _parse(f, overrides[f.key], f.flag)
        elif f.key in file_values:
            values[f.key] = _parse(f, file_values[f.key], f"{path}: {f.key}")
        else:
            values[f.key] = f.parse(f.default)
    return Config(**values, config_path=os.path.abspath(path) if path else "")
