"""Command line: argv -> Config -> Master, and the verbs that talk to a running master.

No logic: the words sent and the signals sent when there is no control socket
are the command table's (preforkd.commands)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import click

from preforkd import __version__, admin, logs, pidfile
from preforkd import config as configmod
from preforkd import control as controlmod
from preforkd.commands import BY_WORD, Command
from preforkd.config import FIELDS, Config, ConfigError, control_path_for
from preforkd.listeners import ListenError, open_listeners, systemd_fds
from preforkd.process import resolve_user
from preforkd.upgrade import UPGRADE_ENV, inherited_ready_fd


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"preforkd: {message}", err=True)
    sys.exit(code)


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One click option per FIELDS entry; an option not given stays None (file or default wins)."""
    for f in reversed(FIELDS):
        if not f.cli:
            continue
        names = [f.short, f.flag] if f.short else [f.flag]
        if f.is_flag:
            func = click.option(*names, f.key, is_flag=True, flag_value=True, default=None,
                                help=f.doc)(func)
        else:
            func = click.option(*names, f.key, multiple=f.multiple, default=None,
                                help=f.doc, metavar="VALUE")(func)
    return click.option("-c", "--config", "config_path", default="", metavar="FILE",
                        help="TOML config file")(func)


def load_config(config_path: str, options: dict[str, Any]) -> tuple[Config, dict[str, Any]]:
    overrides = {k: v for k, v in options.items() if v is not None and v != ()}
    try:
        return configmod.load(config_path, overrides), overrides
    except ConfigError as e:
        fail(str(e))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="preforkd")
def main() -> None:
    """An nginx-style prefork server for Python."""


@main.command()
@config_options
def start(config_path: str, **options: Any) -> None:
    """Bind, fork the workers and serve (foreground unless --daemon)."""
    from preforkd.master import Master

    cfg, overrides = load_config(config_path, options)
    try:
        resolve_user(cfg.user, cfg.group)
    except ValueError as e:
        fail(str(e))
    # A new master started by an upgrade (USR2) reports to the old one, and is detached.
    upgraded = os.environ.pop(UPGRADE_ENV, "") == "1"
    try:
        pidfile.check_free(cfg.pid)
        listeners = open_listeners(cfg.binds, cfg.backlog, cfg.unix_socket_mode,
                                   inherited=systemd_fds(), reuseport=cfg.accept == "reuseport")
        admin_server = admin.bind(cfg.admin_bind, cfg.unix_socket_mode, upgraded)
    except (pidfile.PidFileError, ListenError) as e:
        fail(str(e))
    try:
        logs.setup(cfg.log_level, cfg.error_log)
    except OSError as e:
        fail(f"error_log: cannot open {cfg.error_log}: {e.strerror}")
    ready_fd = inherited_ready_fd()
    if ready_fd < 0 and cfg.daemon:
        ready_fd = daemonize(cfg.error_log)
    try:
        code = Master(cfg, overrides, listeners, ready_fd, sys.argv[1:], upgraded,
                      admin_server).run()
    except pidfile.PidFileError as e:
        fail(str(e))
    sys.exit(code)


def daemonize(error_log: str) -> int:
    """Double fork and setsid. The caller's process waits until the master reports
    "ok" (workers serving) or an error, and exits 0 or 1 with it."""
    r, w = os.pipe()
    if os.fork():
        os.close(w)
        with os.fdopen(r, "rb") as f:
            message = f.read().decode(errors="replace").strip()
        if message.startswith("ok"):
            sys.exit(0)
        fail(message.removeprefix("error ") or "the master exited during start-up")
    os.close(r)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if error_log == "-":
        os.dup2(null, 2)
    os.close(null)
    return w


@main.command()
@config_options
@click.option("--print", "print_config", is_flag=True, help="print the effective configuration")
def check(config_path: str, print_config: bool, **options: Any) -> None:
    """Validate the configuration, import the app, try the binds (like nginx -t)."""
    from preforkd.loader import LoadError
    from preforkd.protocols.registry import check_loadable

    cfg, _ = load_config(config_path, options)
    try:
        check_loadable(cfg)
    except LoadError as e:
        fail(str(e))
    from preforkd.http.static import missing_roots

    for problem in missing_roots(cfg):
        fail(f"{cfg.config_path}: {problem}")
    running = pidfile.read(cfg.pid)
    if running and pidfile.is_master(running):
        click.echo(f"preforkd: binds not tried: master pid {running} holds them")
    else:
        try:
            for lst in open_listeners(cfg.binds, cfg.backlog, cfg.unix_socket_mode):
                lst.close(unlink=True)
        except ListenError as e:
            fail(str(e))
    if print_config:
        click.echo(cfg.describe(), nl=False)
    click.echo(f"preforkd: configuration {cfg.config_path or '(defaults)'} is ok")


# -- talking to a running master ------------------------------------------------

def _pid_path(config_path: str, pid: str | None) -> str:
    if pid:
        return pid
    if config_path:
        try:
            return str(configmod.read_file(config_path).get("pid", "preforkd.pid"))
        except ConfigError as e:
            fail(str(e))
    return "preforkd.pid"


def ask(pid_path: str, command: Command, timeout: float) -> str | None:
    """Send a command's word over the control socket and return the reply (None: no socket)."""
    assert command.word is not None
    try:
        return controlmod.request(control_path_for(pid_path), command.word, timeout)
    except TimeoutError:
        fail(f"{command.word}: no answer from the master within {timeout:.0f}s")


def running_master(pid_path: str) -> int:
    pid = pidfile.read(pid_path)
    if pid is None:
        fail(f"no running master: no pid file at {pid_path}")
    if not pidfile.is_master(pid):
        fail(f"no running master: pid {pid} in {pid_path} is not running")
    return pid


def _report(reply: str) -> None:
    ok = reply.startswith("ok")
    click.echo(f"preforkd: {reply.removeprefix('ok ').removeprefix('error ')}", err=not ok)
    sys.exit(0 if ok else 1)


pid_options = [
    click.option("-c", "--config", "config_path", default="", metavar="FILE",
                 help="config file (for its pid key)"),
    click.option("-p", "--pid", default=None, metavar="FILE", help="pid file of the master"),
]


def with_pid(func: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(pid_options):
        func = opt(func)
    return func


@main.command()
@with_pid
@click.option("--fast", is_flag=True, help="do not wait for in-flight requests")
@click.option("--wait", default=120.0, show_default=True, help="seconds to wait for the exit")
def stop(config_path: str, pid: str | None, fast: bool, wait: float) -> None:
    """Stop the master: graceful (drain, finish, exit) or --fast."""
    path = _pid_path(config_path, pid)
    master = running_master(path)
    command = BY_WORD["stop fast" if fast else "stop"]
    if ask(path, command, 5.0) is None:
        os.kill(master, command.signals[0])
    _wait_gone(master, wait)
    click.echo(f"preforkd: master pid {master} stopped")


@main.command()
@with_pid
@click.option("--wait", default=120.0, show_default=True, help="seconds to wait for the outcome")
def reload(config_path: str, pid: str | None, wait: float) -> None:
    """Reload config and code; exits 0 once the new generation serves, 1 with the reason."""
    path = _pid_path(config_path, pid)
    master = running_master(path)
    command = BY_WORD["reload"]
    reply = ask(path, command, wait)
    if reply is None:
        sig = command.signals[0]
        os.kill(master, sig)
        click.echo(f"preforkd: sent {sig.name.removeprefix('SIG')} to master pid {master} "
                   "(no control socket: no report)")
        return
    _report(reply)


@main.command()
@with_pid
@click.option("--wait", default=120.0, show_default=True, help="seconds to wait for each step")
def upgrade(config_path: str, pid: str | None, wait: float) -> None:
    """Start a new master (new code, new config) on the same sockets, then stop the old
    one gracefully; exits 0 with the new master's pid, 1 and why (the old one serves on)."""
    path = _pid_path(config_path, pid)
    old = running_master(path)
    reply = ask(path, BY_WORD["upgrade"], wait)
    if reply is None:
        fail(f"no control socket at {control_path_for(path)}: send USR2 to master pid {old}")
    if not reply.startswith("ok"):
        _report(reply)
    new = int(reply.split("pid", 1)[1].split()[0])
    os.kill(old, signal.SIGQUIT)  # graceful with either `signals` setting
    _wait_gone(old, wait)
    click.echo(f"preforkd: upgraded: master pid {new} serves; old master pid {old} stopped")


def _wait_gone(pid: int, wait: float) -> None:
    deadline = time.monotonic() + wait
    while pidfile.is_master(pid):
        if time.monotonic() > deadline:
            fail(f"master pid {pid} still running after {wait:.0f}s")
        time.sleep(0.05)


@main.command()
@with_pid
def reopen(config_path: str, pid: str | None) -> None:
    """Reopen log files (after logrotate moved them)."""
    path = _pid_path(config_path, pid)
    master = running_master(path)
    command = BY_WORD["reopen"]
    reply = ask(path, command, 5.0)
    if reply is None:
        os.kill(master, command.signals[0])
        reply = "ok"
    _report(reply)


@main.command()
@with_pid
@click.option("--json", "as_json", is_flag=True, help="print the raw JSON")
def status(config_path: str, pid: str | None, as_json: bool) -> None:
    """Show the master and each worker: pid, generation, connections, heartbeat age, RSS."""
    path = _pid_path(config_path, pid)
    running_master(path)
    reply = ask(path, BY_WORD["status"], 5.0)
    if reply is None:
        fail(f"no control socket at {control_path_for(path)}")
    data = json.loads(reply)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"master pid {data['master']}  generation {data['generation']}  "
               f"workers {len(data['workers'])}/{data['workers_wanted']}"
               + ("  reloading" if data["reloading"] else "")
               + (f"  stopping ({data['stopping']})" if data["stopping"] else ""))
    click.echo(f"{'index':>5} {'pid':>8} {'gen':>4} {'state':<9} {'requests':>9} "
               f"{'accepted':>9} {'conns':>6} {'overdue':>7} {'beat':>6} {'rss':>9}")
    for w in data["workers"]:
        click.echo(f"{w['index']:>5} {w['pid']:>8} {w['generation']:>4} {w['state']:<9} "
                   f"{w['requests']:>9} {w['accepted']:>9} {w['connections']:>6} "
                   f"{w['overdue']:>7} {w['heartbeat_age']:>5.1f}s "
                   f"{w['rss_kib'] / 1024:>7.1f}M")
