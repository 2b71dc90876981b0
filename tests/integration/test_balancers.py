"""The deployment kit in conf/, run for real: HAProxy and nginx in front of preforkd servers,
under load that never retries (scripts/loadgen), while one server stops gracefully and the
other reloads. Each test reads the shipped file and changes only addresses, ports, paths
and (for HAProxy) the check timings and `retries`, each substitution named where it is made.

Run with -s to see the numbers: failed/total requests per run, and for HAProxy the time from
the stop signal to the server marked DOWN.
"""

from __future__ import annotations

import csv
import http.client
import io
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import Load, env_for_server, wait_until

pytestmark = pytest.mark.slow

CONF = Path(__file__).resolve().parents[2] / "conf"
APP = ("--app", "preforkd.examples.checksum:app")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
# Client addresses (all of 127.0.0.0/8 is loopback on Linux) the REMOTE_ADDR checks bind
# their sockets to, so the address the app sees can only have come from the balancer.
CLIENTS = ("127.0.0.5", "127.0.0.6")


# -- helpers -------------------------------------------------------------------------------
def free_port() -> int:
    """A port free on 127.0.0.1 now, for a balancer's frontend (it binds it itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kept_listener() -> socket.socket:
    """A listening socket the test keeps, so a server started again gets the same port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(2048)
    return s


def substitute(text: str, *pairs: tuple[str, str]) -> str:
    """Replace each `old` (which must be there) with `new`."""
    for old, new in pairs:
        assert old in text, f"{old!r} is no longer in the shipped file"
        text = text.replace(old, new)
    return text


def where(srv) -> str:
    return f"127.0.0.1:{srv.port}"


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start a balancer process (its output to a log file); each is stopped by its pid."""
    procs: list[tuple[subprocess.Popen, object]] = []

    def start(argv: list[str], log: Path) -> subprocess.Popen:
        out = open(log, "ab")  # noqa: SIM115 (closed at teardown)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, cwd=tmp_path)
        procs.append((proc, out))
        return proc

    try:
        yield start
    finally:
        for proc, out in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            out.close()


@pytest.fixture
def load() -> Iterator[Callable[..., Load]]:
    """scripts/loadgen through a balancer (harness.Load); one a failed test left running is
    stopped by its pid."""
    started: list[Load] = []

    def start(port: int, seconds: float) -> Load:
        started.append(Load(f"127.0.0.1:{port}", seconds, "--keepalive", "8", "--fresh", "8"))
        return started[-1]

    try:
        yield start
    finally:
        for one in started:
            if one.proc.poll() is None:
                os.kill(one.proc.pid, signal.SIGTERM)
                one.proc.wait(5)
            one.out.close()


def accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_serving(proc: subprocess.Popen, port: int, log: Path) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}:\n{log.read_text()}")
        return accepting(port)

    wait_until(up, timeout=10, what=f"a balancer listening on {port}")


def refused(srv) -> bool:
    try:
        socket.create_connection(srv.address, timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


def requests_served(srv) -> int:
    import json

    out = srv.cli("status", "--json")
    return sum(w.get("requests", 0) for w in json.loads(out.stdout)["workers"])


def peers(port: int, rounds: int = 4) -> dict[str, list[tuple[str, str | None]]]:
    """GET /peer `rounds` times on one kept-alive connection per client address in CLIENTS,
    taking turns; what each got: (REMOTE_ADDR, the X-Forwarded-For the app saw)."""
    conns = {}
    for src in CLIENTS:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(src, 0))
        c.connect()
        conns[src] = (c, c.sock)
    got: dict[str, list[tuple[str, str | None]]] = {src: [] for src in CLIENTS}
    try:
        for _ in range(rounds):
            for src, (c, first) in conns.items():
                c.request("GET", "/peer")
                r = c.getresponse()
                assert r.status == 200, r.status
                got[src].append((r.read().decode().strip(), r.getheader("x-seen-forwarded-for")))
                assert c.sock is first, "the balancer closed the client's connection"
    finally:
        for c, _ in conns.values():
            c.close()
    return got


def report_line(name: str, report: dict) -> None:
    print(f"\n[{name}] failed/total = {report['failed']}/{report['sent']} "
          f"(by reason {({k: v for k, v in report['by_reason'].items() if v})}, "
          f"{report['rps']} req/s)")


# -- HAProxy -------------------------------------------------------------------------------
def haproxy_stat(sock_path: Path) -> dict[str, dict[str, str]]:
    """`show stat` on the runtime API: the preforkd backend's rows by server name."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
    return {r["svname"]: r for r in rows if r["pxname"] == "preforkd"}


def v2_local_get(srv, path: str = "/fast") -> int | None:
    """A request straight to a server, as HAProxy's checks send it (PROXY v2 LOCAL)."""
    header = b"\r\n\r\n\x00\r\nQUIT\n" + b"\x20\x00" + struct.pack("!H", 0)
    try:
        with socket.create_connection(srv.address, timeout=2) as s:
            s.sendall(header + b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      % path.encode())
            head = s.recv(64)
        return int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else None
    except OSError:
        return None


def test_haproxy_takes_a_draining_server_out_before_it_stops_listening(server, spawn, load,
                                                                       tmp_path):
    backend = ("-w", "2", "--proxy-protocol", "v2", "--drain-delay", "2",
               "--graceful-timeout", "5", *APP)
    socks = [kept_listener(), kept_listener()]
    try:
        a, b = (server(*backend, sock=s) for s in socks)
        a.wait_ready(2)
        b.wait_ready(2)
        port, stats = free_port(), tmp_path / "haproxy.sock"
        cfg = substitute(
            (CONF / "haproxy.cfg").read_text(),
            ("bind :80", f"bind 127.0.0.1:{port}"),                   # the frontend
            ("10.0.0.11:8000", where(a)), ("10.0.0.12:8000", where(b)),  # the servers
            ("/run/haproxy/admin.sock", str(stats)),                  # the stats socket
            ("log /dev/log", "log stderr"),                           # no syslog here
            # Faster checks, so the test is short: DOWN within 300 ms x 2 (< drain 2 s).
            ("inter 2s fall 3 rise 2", "inter 300ms fall 2 rise 2"),
            # No retries at all: every request HAProxy sent must have succeeded first time.
            ("retries 3", "retries 0"),
        )
        path, log = tmp_path / "haproxy.cfg", tmp_path / "haproxy.log"
        path.write_text(cfg)
        check = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        proc = spawn([HAPROXY, "-f", str(path), "-db"], log)
        wait_serving(proc, port, log)

        def status(name: str) -> str:
            return haproxy_stat(stats)[name]["status"]

        def served(name: str) -> int:
            return int(haproxy_stat(stats)[name]["req_tot"] or 0)

        wait_until(lambda: status("app1") == status("app2") == "UP", timeout=10,
                   what="both servers UP")

        # REMOTE_ADDR is the client's on every request, though HAProxy reuses its server
        # connections (a PROXY connection is reused only for the same client address).
        for src, answers in peers(port, rounds=6).items():
            assert [addr for addr, _ in answers] == [src] * 6, answers
        reused = sum(int(haproxy_stat(stats)[n]["reuse"] or 0) for n in ("app1", "app2"))
        print(f"\n[haproxy] /peer from {CLIENTS}: each answered its own address; "
              f"server connections reused {reused} times")
        assert reused > 0

        # 1. Graceful stop of app1 under load: DOWN before it stops serving, nothing fails.
        run = load(port, 8.0)
        wait_until(lambda: served("app1") > 100 and served("app2") > 100, timeout=5,
                   what="load on both servers")
        a.signal(signal.SIGTERM)
        t0 = time.monotonic()
        wait_until(lambda: status("app1").startswith("DOWN"), timeout=2, interval=0.005,
                   what="app1 DOWN")
        to_down = time.monotonic() - t0
        still = v2_local_get(a)  # its listener still serves (drain_delay runs to 2 s)
        print(f"[haproxy] stop signal -> DOWN: {to_down * 1000:.0f} ms "
              f"(checks inter 300ms fall 2; drain_delay 2 s); app1 then still answered {still}")
        assert to_down < 2.0 and still == 200
        assert a.wait_exit(12) == 0
        report = run.result()
        report_line("haproxy: graceful stop of app1 under load, retries 0", report)
        assert report["failed"] == 0, report

        # 2. app1 again, on the same port: UP after `rise` checks, and it gets traffic.
        a2 = server(*backend, sock=socks[0])
        a2.wait_ready(2)
        t1 = time.monotonic()
        wait_until(lambda: status("app1") == "UP", timeout=10, what="app1 UP again")
        print(f"[haproxy] app1 started again -> UP: {(time.monotonic() - t1) * 1000:.0f} ms")

        # 3. HUP app2 under load: it never leaves UP; app1's request count grows.
        before = served("app1")
        states: list[str] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                states.append(status("app2"))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        run = load(port, 6.0)
        watcher.start()
        try:
            wait_until(lambda: served("app1") > before + 100, timeout=5,
                       what="traffic to app1 again")
            b.signal(signal.SIGHUP)
            b.wait_event("reloaded", gen=2, timeout=15)
            report = run.result()
        finally:
            done.set()
            watcher.join()
        report_line("haproxy: HUP of app2 under load, retries 0", report)
        print(f"[haproxy] app2 states polled during the run: {sorted(set(states))} "
              f"({len(states)} polls); app1 served {served('app1') - before} more requests")
        assert report["failed"] == 0, report
        assert len(states) > 20 and set(states) == {"UP"}, set(states)
    finally:
        for s in socks:
            s.close()


# -- nginx ---------------------------------------------------------------------------------
def nginx_main(tmp: Path, body: str, stream: bool = False) -> Path:
    """The test's own nginx.conf around a shipped file: every path inside `tmp`."""
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / d).mkdir(exist_ok=True)
    temps = "".join(f"    {d}_temp_path {tmp / d};\n" for d in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    temps = temps.replace("client_body_temp_path " + str(tmp / "client_body"),
                          "client_body_temp_path " + str(tmp / "body"))
    (tmp / "preforkd.conf").write_text(body)
    text = (f"load_module {STREAM_MODULE};\n" if stream else "")
    # (root's workers can write the temp paths under the test's private tmp dir)
    text += "user root root;\n" if os.geteuid() == 0 else ""
    text += (f"pid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'} notice;\n"
             "worker_processes 2;\nevents { worker_connections 4096; }\n")
    if stream:
        text += f"include {tmp / 'preforkd.conf'};\n"
    else:
        text += (f"http {{\n    access_log off;\n{temps}"
                 f"    include {tmp / 'preforkd.conf'};\n}}\n")
    path = tmp / "nginx.conf"
    path.write_text(text)
    check = subprocess.run([NGINX, "-t", "-p", str(tmp), "-c", str(path)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return path


def start_nginx(spawn, tmp: Path, body: str, port: int, stream: bool = False) -> None:
    tmp.mkdir()
    conf = nginx_main(tmp, body, stream)
    proc = spawn([NGINX, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
                 tmp / "stderr.log")
    wait_serving(proc, port, tmp / "error.log")


def drain_and_reload_under_load(load, port: int, a, b, name: str, nginx_log: Path) -> None:
    """TERM a (drain_delay 2 s), HUP b once a stopped listening, all under one load run.

    nginx has no active health checks (open source), yet nothing fails: a serves every
    request it gets through drain_delay (kept-alive connections are answered, with
    Connection: close); once its listener is closed, a connection to it is refused and
    nginx tries the request on b before anything was sent (proxy_next_upstream)."""
    run = load(port, 8.0)
    wait_until(lambda: requests_served(a) > 100 and requests_served(b) > 100, timeout=5,
               what="load on both servers")
    a.signal(signal.SIGTERM)
    t0 = time.monotonic()
    wait_until(lambda: refused(a), timeout=5, what="a's listener closed")
    closed = time.monotonic() - t0
    b.signal(signal.SIGHUP)  # everything goes to b now
    b.wait_event("reloaded", gen=2, timeout=15)
    assert a.wait_exit(12) == 0
    report = run.result()
    report_line(f"{name}: graceful stop of one server, HUP of the other, under load", report)
    retried = nginx_log.read_text().count("(111: Connection refused)")
    print(f"[{name}] a's listener closed {closed:.2f} s after TERM (drain_delay 2 s); "
          f"connections nginx found refused and passed to the other server: {retried}")
    assert report["failed"] == 0, report


def test_nginx_http_upstream_keepalive(server, spawn, load, tmp_path):
    backend = ("-w", "2", "--drain-delay", "2", "--graceful-timeout", "5", *APP)
    a, b = server(*backend), server(*backend)
    a.wait_ready(2)
    b.wait_ready(2)
    port = free_port()
    body = substitute(
        (CONF / "nginx-upstream.conf").read_text(),
        ("listen 80;", f"listen 127.0.0.1:{port};"),             # the frontend
        ("10.0.0.11:8000", where(a)), ("10.0.0.12:8000", where(b)),  # the servers
    )
    start_nginx(spawn, tmp_path / "nginx", body, port)
    # X-Forwarded-For reaches the app with the client's address, and nginx (127.0.0.1,
    # in the default forwarded_allow_ips) is trusted: REMOTE_ADDR is the client's.
    for src, answers in peers(port).items():
        assert answers == [(src, src)] * 4, answers
    drain_and_reload_under_load(load, port, a, b, "nginx http upstream",
                                tmp_path / "nginx" / "error.log")


def test_nginx_stream_proxy_protocol(server, spawn, load, tmp_path):
    backend = ("-w", "2", "--proxy-protocol", "v1", "--drain-delay", "2",
               "--graceful-timeout", "5", *APP)
    a, b = server(*backend), server(*backend)
    a.wait_ready(2)
    b.wait_ready(2)
    port = free_port()
    body = substitute(
        (CONF / "nginx-stream-proxy-protocol.conf").read_text(),
        ("listen 80;", f"listen 127.0.0.1:{port};"),             # the frontend
        ("10.0.0.11:8000", where(a)), ("10.0.0.12:8000", where(b)),  # the servers
    )
    start_nginx(spawn, tmp_path / "nginx", body, port, stream=True)
    # The PROXY v1 header's source is REMOTE_ADDR for every request on the connection.
    for src, answers in peers(port).items():
        assert [addr for addr, _ in answers] == [src] * 4, answers
    drain_and_reload_under_load(load, port, a, b, "nginx stream + PROXY v1",
                                tmp_path / "nginx" / "error.log")


# -- Kubernetes, logrotate -----------------------------------------------------------------
def test_kubernetes_manifest_numbers_agree(tmp_path):
    import yaml  # (PyYAML: in the test extra)

    docs = list(yaml.safe_load_all((CONF / "kubernetes.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs if d}
    assert set(kinds) == {"Deployment", "Service"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:2] == ["preforkd", "start"]
    flags = dict(f[2:].split("=", 1) for f in command[2:])
    drain, graceful = float(flags["drain-delay"]), float(flags["graceful-timeout"])
    assert pod["terminationGracePeriodSeconds"] >= drain + graceful
    probe = container["readinessProbe"]
    assert probe["httpGet"]["path"] == "/healthz"
    assert probe["periodSeconds"] * probe["failureThreshold"] <= drain
    assert "preStop" not in str(container)
    port = container["ports"][0]
    assert flags["bind"].endswith(f":{port['containerPort']}")
    assert kinds["Service"]["spec"]["ports"][0]["targetPort"] == port["name"]
    # The command's flags are preforkd's: `preforkd check` takes them (on a loopback port,
    # with this repo's app in place of the image's, and the pid file in tmp).
    flags.update(bind="127.0.0.1:0", app=APP[1], pid=str(tmp_path / "preforkd.pid"))
    result = subprocess.run([sys.executable, "-m", "preforkd", "check",
                             *(f"--{k}={v}" for k, v in flags.items())],
                            capture_output=True, text=True, env=env_for_server(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_logrotate_rotates_and_usr1_reopens(server, tmp_path):
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"  # (scripts/test installs it)
    logs = tmp_path / "logs"
    logs.mkdir()
    srv = server("-w", "2", "--access-log", str(logs / "access.log"), *APP)
    srv.wait_ready(2)
    conf = tmp_path / "logrotate.conf"
    conf.write_text(substitute(
        (CONF / "logrotate").read_text(),
        ("/var/log/preforkd/", f"{logs}/"),                   # the log directory
        ("/run/preforkd/preforkd.pid", str(srv.pidfile)),     # the pid file
    ))
    state = tmp_path / "logrotate.state"
    dry = subprocess.run([logrotate, "-d", "-s", str(state), str(conf)],
                         capture_output=True, text=True)
    assert dry.returncode == 0 and "error" not in dry.stderr.lower(), dry.stderr

    def get(path: str) -> None:
        c = http.client.HTTPConnection(*srv.address, timeout=5)
        c.request("GET", path)
        assert c.getresponse().status == 200
        c.close()

    get("/fast?before")
    wait_until(lambda: "before" in (logs / "access.log").read_text(), timeout=5,
               what="the access log line")
    forced = subprocess.run([logrotate, "-f", "-s", str(state), str(conf)],
                            capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr
    assert "before" in (logs / "access.log.1").read_text()
    wait_until(lambda: (logs / "access.log").exists(), timeout=5, what="a reopened log")
    get("/fast?after")
    wait_until(lambda: "after" in (logs / "access.log").read_text(), timeout=5,
               what="the next line in the new file")
    assert "after" not in (logs / "access.log.1").read_text()
