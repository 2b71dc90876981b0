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
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ValueError('an address or a list of addresses ("host:port", "[v6]:port", '
                         '"unix:/path", "fd://N")')
    for item in items:
        parse_bind(item)  # raises ValueError naming what is wrong
    return tuple(items)


def _allow_ips(v: Any) -> tuple[str, ...]:
    """forwarded_allow_ips: a list (or a comma-separated string, as the flag gives it)."""
    import ipaddress

    expected = 'a list of addresses or networks ("10.0.0.0/8", "::1"), "unix" or "*"'
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ValueError(expected)
    out = tuple(p.strip() for i in items for p in i.split(",") if p.strip())
    for item in out:
        if item in ("*", "unix"):
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{expected}; {item!r} is none of these") from None
    return out


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


def _networks(v: Any) -> tuple[str, ...]:
    import ipaddress

    items = [v] if isinstance(v, str) else v
    expected = 'a list of addresses or CIDRs ("10.0.0.0/8", "::1"), "unix" or "*"'
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ValueError(expected)
    for item in items:
        if item not in ("unix", "*"):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{expected}; {item!r} is none of these") from None
    return tuple(items)


def _admin_bind(v: Any) -> str:
    if v == "":
        return v
    if not isinstance(v, str):
        raise ValueError('"" or one address ("host:port", "unix:/path")')
    return _binds(v)[0]


_PROXY_VERSIONS = ("off", "v1", "v2", "auto")
_proxy_version = _choice(*_PROXY_VERSIONS)


@dataclass(frozen=True)
class ListenerTable:
    """A [[listener]] table: one address with options that differ from the top level
    (None: as the top level says)."""

    bind: str
    proxy_protocol: str | None = None
    proxy_allow_ips: tuple[str, ...] | None = None


def _listener_tables(v: Any) -> tuple[ListenerTable, ...]:
    keys = ("bind", "proxy_protocol", "proxy_allow_ips")
    expected = f"[[listener]] tables with bind and optionally {', '.join(keys[1:])}"
    if not isinstance(v, (list, tuple)) or not all(isinstance(t, (dict, ListenerTable))
                                                   for t in v):
        raise ValueError(expected)
    out = []
    for t in v:
        if isinstance(t, ListenerTable):
            out.append(t)
            continue
        if "bind" not in t or set(t) - set(keys):
            raise ValueError(expected)
        try:
            (bind,) = _binds(t["bind"])
            out.append(ListenerTable(
                bind, None if "proxy_protocol" not in t else _proxy_version(t["proxy_protocol"]),
                None if "proxy_allow_ips" not in t else _networks(t["proxy_allow_ips"])))
        except ValueError as e:
            raise ValueError(f"{expected} ({e} in {t!r})") from None
    return tuple(out)


class TableError(ValueError):
    """A value in the i-th table of an array of tables is wrong: the message names
    the table and the key (`static[0].root: expected ..., got ...`)."""

    def __init__(self, index: int, key: str, expected: str, value: Any,
                 text: str = "") -> None:
        super().__init__(expected)
        self.where = f"[{index}].{key}" if key else f"[{index}]"
        self.text = text or f"expected {expected}, got {value!r}"


@dataclass(frozen=True)
class StaticTable:
    """A [[static]] table: files under `root` served at `prefix` (see http/static.py).
    `root` is made absolute by load(), against the config file's directory."""

    prefix: str
    root: str
    index: str = "index.html"
    max_age: int | None = None  # None: no Cache-Control
    precompressed: bool = False
    follow_symlinks: bool = False
    fallthrough: bool = False


def _static_prefix(v: Any) -> str:
    if (not isinstance(v, str) or not v.startswith("/")
            or any(c in v for c in "?#% \\") or any(ord(c) < 33 or ord(c) > 126 for c in v)
            or any(seg in (".", "..") for seg in v.split("/"))):
        raise ValueError('a URL path starting with "/" (plain ASCII, no "%", "?", "#", '
                         'spaces or dot segments), e.g. "/static/"')
    return v if v.endswith("/") else v + "/"


def _static_root(v: Any) -> str:
    if not isinstance(v, str) or not v or "\0" in v:
        raise ValueError("a directory (absolute, or relative to the config file's directory)")
    return v


def _static_index(v: Any) -> str:
    if not isinstance(v, str) or "/" in v or v.startswith(".") or "\0" in v:
        raise ValueError('a file name (no "/", not starting with "."), or "" for none')
    return v


def _max_age(v: Any) -> int:
    return _int(0)(v)


_STATIC_KEYS: dict[str, Callable[[Any], Any]] = {
    "prefix": _static_prefix, "root": _static_root, "index": _static_index,
    "max_age": _max_age, "precompressed": _bool, "follow_symlinks": _bool,
    "fallthrough": _bool,
}


def _static_tables(v: Any) -> tuple[StaticTable, ...]:
    if not isinstance(v, (list, tuple)):
        raise ValueError("[[static]] tables with prefix and root")
    out: list[StaticTable] = []
    for i, t in enumerate(v):
        if isinstance(t, StaticTable):
            out.append(t)
            continue
        if not isinstance(t, dict):
            raise TableError(i, "", "a table with prefix and root", t)
        for key in t:
            if key not in _STATIC_KEYS:
                close = difflib.get_close_matches(key, _STATIC_KEYS, n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                raise TableError(i, key, "", None, f"unknown key{hint}; the keys are "
                                 + ", ".join(_STATIC_KEYS))
        values = {}
        for key in ("prefix", "root"):
            if key not in t:
                raise TableError(i, key, "a value (the key is required)", None)
        for key, value in t.items():
            try:
                values[key] = _STATIC_KEYS[key](value)
            except ValueError as e:
                raise TableError(i, key, str(e), value) from None
        if any(o.prefix == values["prefix"] for o in out):
            raise TableError(i, "prefix", "a prefix no other [[static]] table has",
                             values["prefix"])
        out.append(StaticTable(**values))
    return tuple(out)


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
    cli: bool = True  # (a table has no command-line flag)

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


FIELDS: tuple[Field, ...] = (
    Field("bind", _binds, ("127.0.0.1:8000",), "address to listen on (repeatable)",
          short="-b", multiple=True),
    Field("listener", _listener_tables, (), "[[listener]] tables: an address with its own "
          "proxy_protocol / proxy_allow_ips (in the config file only)", cli=False),
    Field("static", _static_tables, (), "[[static]] tables: files served before the app "
          "(prefix, root, index, max_age, precompressed, follow_symlinks, fallthrough; "
          "in the config file only)", cli=False),
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
    Field("threads", _int(0, 1024), 0,
          "app threads per worker: 0 runs the app on the event loop (fastest for quick "
          "handlers); N > 0 for apps that wait on I/O (databases, APIs)"),
    Field("max_pending", _int(1), 1000,
          "with threads: requests waiting for a thread beyond this get 503 + Retry-After"),
    Field("request_timeout", _seconds(), 0.0,
          "with threads: log a request still running after this long, with its stack "
          "(0: never; a thread cannot be killed)"),
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
    Field("drain_delay", _seconds(), 0.0,
          "on a graceful stop, answer health_path 503 while still serving for this long "
          "before closing the listeners (let the load balancer take us out first)"),
    Field("max_request_line_bytes", _int(64, 1 << 20), 8192, "longer request target: 414"),
    Field("max_header_bytes", _int(256, 1 << 24), 65536, "larger header section: 431"),
    Field("max_header_count", _int(1, 10000), 100, "more header fields: 431"),
    Field("max_body_bytes", _int(0), 100 * 1024 * 1024, "larger request body: 413"),
    Field("body_buffer_bytes", _int(0), 256 * 1024,
          "request bodies up to this stay in memory; larger ones spill to a temp file"),
    Field("forwarded_allow_ips", _allow_ips, ("127.0.0.1", "::1"),
          "peers whose Forwarded / X-Forwarded-* fields are applied (repeatable): "
          'addresses, networks, "unix" for unix-socket peers, "*" for any',
          multiple=True),
    Field("forwarded_host", _bool, False,
          "also apply X-Forwarded-Host/-Port and Forwarded host= (HTTP_HOST, SERVER_NAME, "
          "SERVER_PORT)", is_flag=True),
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
    Field("proxy_protocol", _proxy_version, "off",
          'expect a PROXY protocol header on every connection: "v1", "v2", "auto" or "off"'),
    Field("proxy_allow_ips", _networks, ("127.0.0.1", "::1", "unix"),
          "peers allowed to send a PROXY header (others are closed); \"*\": any"),
    Field("admin_bind", _admin_bind, "",
          "a listener of its own for health, status and metrics, answered by the master "
          '(e.g. "127.0.0.1:9101"; "" is none)'),
    Field("user", _str, "", "user to run workers as (master started as root)"),
    Field("group", _str, "", "group to run workers as"),
)

FIELDS_BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}


@dataclass(frozen=True)
class Config:
    bind: tuple[str, ...]
    listener: tuple[ListenerTable, ...]
    static: tuple[StaticTable, ...]
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
    threads: int
    max_pending: int
    request_timeout: float
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
    drain_delay: float
    max_request_line_bytes: int
    max_header_bytes: int
    max_header_count: int
    max_body_bytes: int
    body_buffer_bytes: int
    forwarded_allow_ips: tuple[str, ...]
    forwarded_host: bool
    health_path: str
    status_path: str
    metrics_path: str
    access_log: str
    access_log_format: str
    signals: str
    proxy_protocol: str
    proxy_allow_ips: tuple[str, ...]
    admin_bind: str
    user: str
    group: str
    # Where the file values came from, so HUP re-reads the same file.
    config_path: str = ""

    @property
    def binds(self) -> tuple[str, ...]:
        """Every address to listen on: `bind`, then each [[listener]]'s (a table naming
        an address of `bind` only gives it options)."""
        return self.bind + tuple(t.bind for t in self.listener if t.bind not in self.bind)

    def proxy_for(self, spec: str, name: str) -> tuple[str, tuple[str, ...]]:
        """(proxy_protocol, proxy_allow_ips) for the listener bound from `spec` (or, for
        an inherited socket, whose address is `name`)."""
        for t in self.listener:
            if t.bind in (spec, name):
                return (t.proxy_protocol or self.proxy_protocol,
                        self.proxy_allow_ips if t.proxy_allow_ips is None else t.proxy_allow_ips)
        return self.proxy_protocol, self.proxy_allow_ips

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
    if isinstance(v, (ListenerTable, StaticTable)):
        pairs = [f"{k} = {_toml_value(field, x)}" for k, x in vars(v).items() if x is not None]
        return "{" + ", ".join(pairs) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(field, i) for i in v) + "]"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def _parse(field: Field, value: Any, name: str) -> Any:
    try:
        return field.parse(value)
    except TableError as e:
        raise ConfigError(f"{name}{e.where}: {e.text}") from None
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
    if values["listener"] and "bind" not in file_values and not (overrides or {}).get("bind"):
        values["bind"] = ()  # [[listener]] tables alone say where to listen
    if not values["bind"] and not values["listener"]:
        raise ConfigError(f"{path or 'bind'}: bind: no address to listen on (bind or "
                          "[[listener]])")
    # A relative [[static]] root is the config file's neighbour (cwd without a file):
    # the same file serves the same files wherever the server is started from.
    base = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    values["static"] = tuple(dataclasses.replace(t, root=os.path.join(base, t.root))
                             if not os.path.isabs(t.root) else t for t in values["static"])
    return Config(**values, config_path=os.path.abspath(path) if path else "")
