"""The process model against real processes: titles, respawn, signals, reload, stop."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from harness import alive, children, cmdline, echo_roundtrip, wait_until


def connect(srv, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(srv.address, timeout=timeout)
    return s


def test_start_titles_and_echo(server):
    srv = server("-w", "4", "--protocol", "echo")
    pids = srv.wait_ready(4)
    assert "preforkd: master" in cmdline(srv.pid)
    assert sorted(srv.workers()) == sorted(pids)
    titles = sorted(cmdline(p) for p in pids)
    assert titles == [f"preforkd: worker {i} [gen 1]" for i in range(4)]
    with connect(srv) as s:
        echo_roundtrip(s, b"hello preforkd")
    assert int(srv.pidfile.read_text()) == srv.pid


def test_sigkill_worker_is_respawned_with_same_index(server):
    srv = server("-w", "2", "--protocol", "echo")
    pids = srv.wait_ready(2)
    n = len(srv.events())
    t0 = time.monotonic()
    os.kill(pids[1], signal.SIGKILL)
    event = srv.wait_event("ready", after=n, index=1, gen=1)
    respawn = time.monotonic() - t0
    assert int(event["pid"]) not in pids
    assert cmdline(int(event["pid"])) == "preforkd: worker 1 [gen 1]"
    assert respawn < 2.0
    with connect(srv) as s:
        echo_roundtrip(s, b"still here")
    srv.allowed_errors.append("killed by SIGKILL")


def test_hup_replaces_every_worker(server):
    srv = server("-w", "3", "--protocol", "echo")
    old = srv.wait_ready(3)
    srv.signal(signal.SIGHUP)
    new = srv.wait_ready(3, gen=2)
    srv.wait_event("reloaded", gen=2)
    assert not set(old) & set(new)
    wait_until(lambda: sorted(srv.workers()) == sorted(new), what="old generation gone")
    assert all(cmdline(p).endswith("[gen 2]") for p in new)
    assert alive(srv.pid)
    with connect(srv) as s:
        echo_roundtrip(s, b"gen 2")


def test_hup_with_broken_config_changes_nothing(server):
    srv = server(config='protocol = "echo"\nworkers = 2\n')
    old = srv.wait_ready(2)
    srv.config_path.write_text('protocol = "echo"\nworkers = -3\n')
    srv.signal(signal.SIGHUP)
    wait_until(lambda: "reload-refused" in srv.log(), what="reload refused in the log")
    assert "workers: expected a positive integer" in srv.log()
    assert srv.workers() == sorted(old)
    with connect(srv) as s:
        echo_roundtrip(s, b"old generation serves")
    # and a fixed config reloads fine
    srv.config_path.write_text('protocol = "echo"\nworkers = 3\n')
    result = srv.cli("reload")
    assert result.returncode == 0, result.stderr
    assert "generation 2 serving" in result.stdout
    assert len(srv.wait_ready(3, gen=2)) == 3
    srv.allowed_errors.append("reload-refused")


def test_reload_cli_reports_failed_generation_and_keeps_old(server):
    srv = server(config='protocol = "echo"\nworkers = 2\n')
    old = srv.wait_ready(2)
    srv.config_path.write_text('protocol = "brokenapp:Protocol"\nworkers = 2\n')
    result = srv.cli("reload")
    assert result.returncode == 1
    assert "failed to boot" in result.stderr and "broken on purpose" in result.stderr
    assert srv.workers() == sorted(old)
    with connect(srv) as s:
        echo_roundtrip(s, b"old generation still serves")
    srv.allow_traceback = True
    srv.allowed_errors += ["boot-failed", "reload-failed", "event=exited"]


def test_term_graceful_waits_for_open_connection(server):
    srv = server("-w", "2", "--protocol", "echo")
    srv.wait_ready(2)
    client = connect(srv)
    echo_roundtrip(client, b"before")
    workers = srv.workers()
    srv.signal(signal.SIGTERM)
    # the listener closes at once: new connections are refused
    wait_until(lambda: _refused(srv.address), what="listener closed")
    # the open connection still works until the client closes it
    echo_roundtrip(client, b"during drain")
    assert alive(srv.pid)
    client.close()
    assert srv.wait_exit() == 0
    assert not any(alive(p) for p in workers)
    assert not srv.pidfile.exists()


def _refused(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_int_is_fast(server):
    srv = server("-w", "2", "--protocol", "echo")
    srv.wait_ready(2)
    client = connect(srv)
    echo_roundtrip(client, b"x")
    workers = srv.workers()
    t0 = time.monotonic()
    srv.signal(signal.SIGINT)
    assert srv.wait_exit(5) == 0
    assert time.monotonic() - t0 < 1.5
    assert not any(alive(p) for p in workers)
    client.close()


def test_second_term_turns_graceful_into_fast(server):
    srv = server("-w", "1", "--protocol", "echo")
    srv.wait_ready(1)
    client = connect(srv)
    echo_roundtrip(client, b"x")
    srv.signal(signal.SIGTERM)
    wait_until(lambda: "mode=graceful" in srv.log(), what="graceful stop begun")
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(3) == 0
    client.close()


def test_nginx_signals_term_is_fast(server):
    srv = server(config='protocol = "echo"\nworkers = 1\nsignals = "nginx"\n')
    srv.wait_ready(1)
    client = connect(srv)
    echo_roundtrip(client, b"x")
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(3) == 0  # the open connection does not hold it
    client.close()


def test_ttin_ttou_winch(server):
    srv = server("-w", "2", "--protocol", "echo")
    srv.wait_ready(2)
    srv.signal(signal.SIGTTIN)
    srv.wait_event("ready", index=2, gen=1)
    wait_until(lambda: len(srv.workers()) == 3, what="3 workers")
    # one at a time: the kernel merges a signal sent again while still pending
    srv.signal(signal.SIGTTOU)
    wait_until(lambda: len(srv.workers()) == 2, what="2 workers")
    srv.signal(signal.SIGTTOU)
    wait_until(lambda: len(srv.workers()) == 1, what="1 worker")
    srv.signal(signal.SIGWINCH)
    wait_until(lambda: srv.workers() == [], what="no workers")
    assert alive(srv.pid)
    n = len(srv.events())
    srv.signal(signal.SIGTTIN)
    srv.wait_event("ready", after=n, index=0)
    wait_until(lambda: len(srv.workers()) == 1, what="1 worker back")
    srv.signal(signal.SIGWINCH)
    wait_until(lambda: srv.workers() == [], what="no workers again")
    srv.signal(signal.SIGHUP)  # HUP brings back the configured count
    srv.wait_ready(2, gen=2)
    with connect(srv) as s:
        echo_roundtrip(s, b"back")


def test_usr1_reopens_error_log(server, tmp_path):
    log = tmp_path / "err.log"
    srv = server("-w", "1", "--protocol", "echo", "--error-log", str(log))
    srv.wait_ready(1)
    wait_until(lambda: log.exists() and "event=serving" in log.read_text(), what="log written")
    rotated = tmp_path / "err.log.1"
    log.rename(rotated)
    srv.signal(signal.SIGUSR1)
    wait_until(lambda: log.exists() and "event=reopen" in log.read_text(), what="log reopened")
    srv.signal(signal.SIGTTIN)  # the worker's lines land in the new file too
    wait_until(lambda: "worker=1" in log.read_text(), what="new worker logged")
    assert "event=reopen" not in rotated.read_text()


def test_app_import_failure_exits_1_without_fork_loop(server):
    srv = server("-w", "4", "--protocol", "brokenapp:Protocol")
    assert srv.wait_exit(10) == 1
    spawned = [e for e in srv.events() if e["event"] == "spawned"]
    assert 1 <= len(spawned) <= 4
    assert "broken on purpose" in srv.log()
    assert "startup-failed" in srv.log()
    srv.allow_traceback = True
    srv.allowed_errors += ["boot-failed", "startup-failed", "event=exited"]


def test_stuck_worker_is_killed_and_replaced(server):
    srv = server("-w", "1", "--protocol", "testprotocols:SleepyEcho", "--timeout", "1")
    (pid,) = srv.wait_ready(1)
    n = len(srv.events())
    s = connect(srv)
    s.sendall(b"sleep")
    t0 = time.monotonic()
    srv.wait_event("timeout", after=n, pid=pid, timeout=5)
    new = srv.wait_event("ready", after=n, index=0, timeout=5)
    assert int(new["pid"]) != pid
    assert time.monotonic() - t0 < 4.0
    wait_until(lambda: not alive(pid), what="stuck worker gone")
    assert "data_received" in srv.log()  # faulthandler said where it was stuck
    s.close()
    with connect(srv) as s2:
        echo_roundtrip(s2, b"alive again")
    srv.allow_traceback = True
    srv.allowed_errors += ["event=timeout", "event=exited"]


def test_sigkill_master_workers_exit(server):
    srv = server("-w", "3", "--protocol", "echo")
    pids = srv.wait_ready(3)
    client = connect(srv)
    echo_roundtrip(client, b"x")
    os.kill(srv.pid, signal.SIGKILL)
    srv.proc.wait(5)
    wait_until(lambda: not any(alive(p) for p in pids), timeout=2.0, what="workers exit")
    client.close()
    srv.allowed_errors.append("master-gone")


def test_pidfile_conflict_and_stale(server, tmp_path):
    srv = server("-w", "1", "--protocol", "echo")
    srv.wait_ready(1)
    second = server("--pid", str(srv.pidfile), "--protocol", "echo")
    assert second.wait_exit(10) == 1
    assert f"already running: master pid {srv.pid}" in second.log()
    # a stale pid file (dead pid) is replaced
    stale = tmp_path / "stale.pid"
    stale.write_text("999999\n")
    third = server("--pid", str(stale), "--protocol", "echo", "-w", "1")
    third.wait_ready(1)
    assert int(stale.read_text()) == third.pid


def test_status_command(server):
    srv = server("-w", "2", "--protocol", "echo")
    pids = srv.wait_ready(2)
    with connect(srv) as s:
        echo_roundtrip(s, b"count me")
    result = srv.cli("status")
    assert result.returncode == 0, result.stderr
    assert f"master pid {srv.pid}" in result.stdout
    for pid in pids:
        assert str(pid) in result.stdout
    stop = srv.cli("stop")
    assert stop.returncode == 0, stop.stderr
    assert srv.wait_exit(5) == 0


def test_cli_against_no_master(tmp_path, server):
    srv = server("-w", "1", "--protocol", "echo")  # only to borrow its cli() helper
    srv.wait_ready(1)
    srv.cli("stop")
    srv.wait_exit()
    for cmd in ("stop", "reload", "reopen", "status"):
        result = srv.cli(cmd)
        assert result.returncode == 1
        assert "no running master" in result.stderr


@pytest.mark.parametrize("args,message", [
    (["-w", "-3"], "--workers: expected a positive integer (up to 512) or \"auto\", got '-3'"),
    (["--timeout", "soon"], "--timeout: expected a number of seconds > 0, got 'soon'"),
    (["--protocol", "ftp"], "--protocol: expected \"http\", \"echo\" or \"module:factory\""),
    (["-b", "localhost"], "--bind: expected \"host:port\""),
])
def test_cli_value_errors_exit_1(tmp_path, args, message):
    import subprocess
    import sys

    from harness import env_for_server

    r = subprocess.run([sys.executable, "-m", "preforkd", "start", *args], capture_output=True,
                       text=True, env=env_for_server(), cwd=tmp_path, timeout=20)
    assert r.returncode == 1
    assert message in r.stderr
    assert r.stderr.count("\n") == 1


def test_config_file_errors_name_file_and_key(tmp_path):
    import subprocess
    import sys

    from harness import env_for_server

    conf = tmp_path / "p.toml"
    for text, message in [
        ("workers = -3\n", f"{conf}: workers: expected a positive integer"),
        ("wokers = 3\n", f'{conf}: unknown key "wokers" (did you mean "workers"?)'),
        ("workers = [\n", f"{conf}: invalid TOML"),
    ]:
        conf.write_text(text)
        r = subprocess.run([sys.executable, "-m", "preforkd", "start", "-c", str(conf)],
                           capture_output=True, text=True, env=env_for_server(), cwd=tmp_path,
                           timeout=20)
        assert r.returncode == 1, text
        assert message in r.stderr


def test_address_in_use_exits_1(tmp_path):
    import subprocess
    import sys

    from harness import env_for_server

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "preforkd", "start", "-b", f"127.0.0.1:{port}"],
                       capture_output=True, text=True, env=env_for_server(), cwd=tmp_path,
                       timeout=20)
    holder.close()
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in r.stderr


def test_unix_socket_listener(server, tmp_path):
    path = tmp_path / "echo.sock"
    srv = server("-b", f"unix:{path}", "--protocol", "echo", "-w", "1", bind=False)
    srv.wait_ready(1)
    assert oct(os.stat(path).st_mode & 0o777) == "0o660"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        echo_roundtrip(s, b"over unix")
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit() == 0
    assert not path.exists()


def test_daemon_mode(tmp_path):
    import subprocess
    import sys

    from harness import env_for_server

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    holder.close()
    pid = tmp_path / "d.pid"
    log = tmp_path / "d.log"
    r = subprocess.run([sys.executable, "-m", "preforkd", "start", "--daemon", "-w", "1",
                        "--protocol", "echo", "-b", f"127.0.0.1:{port}", "--pid", str(pid),
                        "--error-log", str(log)], capture_output=True, text=True,
                       env=env_for_server(), cwd=tmp_path, timeout=20)
    assert r.returncode == 0, r.stderr
    master = int(pid.read_text())
    try:
        # detached: a new session, and (double fork) not its leader, so no terminal
        assert os.getsid(master) not in (os.getsid(0), master)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            echo_roundtrip(s, b"daemon")
        workers = children(master)
        stop = subprocess.run([sys.executable, "-m", "preforkd", "stop", "--pid", str(pid)],
                              capture_output=True, text=True, env=env_for_server(), timeout=30)
        assert stop.returncode == 0, stop.stderr
        assert not alive(master) and not any(alive(w) for w in workers)
    finally:
        if alive(master):
            os.kill(master, signal.SIGKILL)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_drop_after_binding(server, tmp_path):
    import pwd

    nobody = pwd.getpwnam("nobody")
    os.chmod(tmp_path, 0o755)
    sock_path = tmp_path / "echo.sock"  # (a bind of its own, so that a reload can add one)
    config = f'workers = 1\nprotocol = "echo"\nuser = "nobody"\nbind = ["unix:{sock_path}"]\n'
    srv = server(config=config, bind=False)
    (worker,) = srv.wait_ready(1)

    def uid(pid: int) -> int:
        with open(f"/proc/{pid}/status") as f:
            return int(next(ln for ln in f if ln.startswith("Uid:")).split()[1])

    assert uid(worker) == nobody.pw_uid
    assert uid(srv.pid) == os.getuid() == 0  # the master stays privileged, as nginx's
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock_path))
        echo_roundtrip(s, b"as nobody")
    # So a reload can add a port below 1024, which a worker as nobody could never bind.
    low = _free_low_port()
    srv.config_path.write_text(config.replace('"]', f'", "127.0.0.1:{low}"]'))
    result = srv.cli("reload")
    assert result.returncode == 0, result.stderr
    new_worker = srv.wait_ready(1, gen=2)[0]
    assert uid(new_worker) == nobody.pw_uid
    with socket.create_connection(("127.0.0.1", low), timeout=5) as s:
        echo_roundtrip(s, b"on a privileged port")


def _free_low_port() -> int:
    for port in range(1000, 600, -1):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError("no free port below 1024")


def test_unknown_user_is_a_clear_error(tmp_path):
    import subprocess
    import sys

    from harness import env_for_server

    r = subprocess.run([sys.executable, "-m", "preforkd", "start", "--user", "no-such-user-x"],
                       capture_output=True, text=True, env=env_for_server(), cwd=tmp_path,
                       timeout=20)
    assert r.returncode == 1
    assert "user: no such user 'no-such-user-x'" in r.stderr


def test_check_command(tmp_path):
    import subprocess
    import sys

    from harness import env_for_server

    def check(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "preforkd", "check", *args],
                              capture_output=True, text=True, env=env_for_server(),
                              cwd=tmp_path, timeout=20)

    ok = check("-b", "127.0.0.1:0", "--protocol", "echo", "--print")
    assert ok.returncode == 0, ok.stderr
    assert 'protocol = "echo"' in ok.stdout and "is ok" in ok.stdout
    broken = check("-b", "127.0.0.1:0", "--protocol", "brokenapp:Protocol")
    assert broken.returncode == 1
    assert "cannot load brokenapp:Protocol: RuntimeError: this app is broken" in broken.stderr
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = check("-b", f"127.0.0.1:{holder.getsockname()[1]}", "--protocol", "echo")
    holder.close()
    assert busy.returncode == 1 and "address already in use" in busy.stderr


def test_systemd_socket_activation(server, tmp_path):
    import subprocess
    import sys

    from harness import env_for_server

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    fd = sock.fileno()
    pid = tmp_path / "sd.pid"
    # what systemd does: the socket as fd 3, LISTEN_PID naming the exec'ed process
    script = (f"import os, sys; os.dup2({fd}, 3); os.close({fd}); "
              f"os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
              f"os.execv(sys.executable, [sys.executable, '-m', 'preforkd', 'start', '-w', '1', "
              f"'--protocol', 'echo', '--pid', {str(pid)!r}, '-b', '127.0.0.1:1'])")
    log = open(tmp_path / "sd.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", script], pass_fds=(fd,), env=env_for_server(),
                            stdout=log, stderr=log, start_new_session=True)
    sock.close()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            echo_roundtrip(s, b"activated")  # served on the passed socket, not on port 1
        assert _refused(("127.0.0.1", 1))  # the passed socket replaced the bind list
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        log.close()
    assert "Traceback" not in (tmp_path / "sd.log").read_text()


def test_accept_pauses_at_fd_limit_and_keeps_serving(server):
    """A worker out of file descriptors stops accepting, serves what it has, resumes later."""
    srv = server("-w", "1", "--protocol", "echo", "--rlimit-nofile", "64")
    srv.wait_ready(1)
    socks = []
    for _ in range(80):  # more than the worker can hold; the rest wait in the backlog
        socks.append(socket.create_connection(srv.address, timeout=5))
    wait_until(lambda: "accept-paused" in srv.log(), what="accept paused on EMFILE")
    echo_roundtrip(socks[0], b"still served")
    for s in socks[:40]:
        s.close()
    for s in socks[40:]:  # once fds free up, the queued connections are served
        echo_roundtrip(s, b"late but served")
        s.close()
