"""USR2: a new master on the same sockets, under load; completing, rolling back, failing."""

from __future__ import annotations

import os
import signal
import time

import pytest

from harness import Load, alive, wait_until

pytestmark = pytest.mark.slow

CONFIG = 'workers = 2\napp = "preforkd.examples.checksum:app"\n'


def target(srv) -> str:
    return f"{srv.address[0]}:{srv.address[1]}"


def pid_in(path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def new_master(srv) -> int:
    """Wait until the new master serves: it writes the pid file then."""
    pid = wait_until(lambda: (p := pid_in(srv.pidfile)) and p != srv.pid and p, timeout=15,
                     what="the new master's pid file")
    srv.pids.add(pid)  # (cleaned up with the rest)
    return pid


@pytest.mark.parametrize("extra", ["", "threads = 4\n"], ids=["inline", "threads"])
def test_usr2_then_quit_old_master_drops_nothing(server, extra):
    srv = server(config=CONFIG + extra)
    srv.wait_ready(2)
    oldbin = srv.pidfile.with_name(srv.pidfile.name + ".oldbin")
    load = Load(target(srv), 6.0)
    time.sleep(0.5)
    srv.signal(signal.SIGUSR2)
    new = new_master(srv)
    assert pid_in(oldbin) == srv.pid and alive(new)
    time.sleep(0.5)  # both masters serve for a while
    srv.signal(signal.SIGQUIT)
    assert srv.wait_exit(15) == 0
    report = load.result()
    assert report["failed"] == 0, report  # no refused: the socket never closed
    assert pid_in(srv.pidfile) == new and not oldbin.exists() and alive(new)
    assert "event=upgrade-done" in srv.log()


def test_upgrade_rolls_back_to_the_old_master(server):
    srv = server(config=CONFIG)
    srv.wait_ready(2)
    load = Load(target(srv), 6.0)
    time.sleep(0.3)
    srv.signal(signal.SIGUSR2)
    new = new_master(srv)
    srv.signal(signal.SIGWINCH)  # the old workers go; the new master's serve
    time.sleep(0.5)
    srv.signal(signal.SIGHUP)  # and come back
    srv.wait_event("reloaded", gen=2, timeout=15)
    os.kill(new, signal.SIGQUIT)
    wait_until(lambda: pid_in(srv.pidfile) == srv.pid, timeout=15, what="pid file restored")
    wait_until(lambda: not alive(new), timeout=15, what="the new master gone")
    report = load.result()
    assert report["failed"] == 0, report
    assert srv.proc.poll() is None and "event=new-master-exited" in srv.log()
    assert srv.cli("status").returncode == 0  # its control socket is back too


def test_preforkd_upgrade_reports_and_a_failing_new_master_changes_nothing(server):
    srv = server(config=CONFIG)
    old_workers = srv.wait_ready(2)
    srv.config_path.write_text('workers = 2\napp = "brokenapp:app"\n')
    result = srv.cli("upgrade")
    assert result.returncode == 1 and "broken on purpose" in result.stderr, result.stderr
    assert pid_in(srv.pidfile) == srv.pid
    assert not srv.pidfile.with_name(srv.pidfile.name + ".oldbin").exists()
    wait_until(lambda: srv.workers() == sorted(old_workers), what="the failed master gone")
    srv.config_path.write_text(CONFIG)
    result = srv.cli("upgrade")
    assert result.returncode == 0, result.stderr
    new = pid_in(srv.pidfile)
    srv.pids.add(new)
    assert f"master pid {new} serves" in result.stdout
    assert srv.wait_exit(15) == 0 and alive(new)
    srv.allow_traceback = True
    srv.allowed_errors += ["boot-failed", "startup-failed", "upgrade-failed", "event=exited"]
