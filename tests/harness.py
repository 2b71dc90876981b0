"""Run real preforkd processes for integration tests.

The test binds 127.0.0.1:0 itself and passes the fd (`-b fd://N`), so there is
no port race and clients can connect at once. Lifecycle events come as lines
in a file named by PREFORKD_EVENTS; tests wait on them with deadlines. Every
process started is stopped and reaped at teardown, and the error log is
checked for tracebacks the test did not expect.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

APPS = Path(__file__).parent / "apps"
SRC = Path(__file__).parent.parent / "src"


def wait_until(pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # (gone before or while reading)
        return False


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return sorted(out)


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def env_for_server() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(APPS), env.get("PYTHONPATH", "")])
    return env


class Server:
    def __init__(self, tmp_path: Path, args: list[str], config: str | None = None,
                 bind: bool = True, env: dict[str, str] | None = None,
                 reuseport: bool = False, sock: socket.socket | None = None) -> None:
        self.dir = tmp_path
        self.pidfile = tmp_path / "preforkd.pid"
        self.errlog = tmp_path / "error.log"
        self.events_path = tmp_path / "events"
        self.config_path = tmp_path / "preforkd.toml"
        self.allowed_errors: list[str] = []
        self.allow_traceback = False
        self.pids: set[int] = set()
        argv = [sys.executable, "-m", "preforkd", "start", "--pid", str(self.pidfile)]
        if config is not None:
            self.config_path.write_text(config)
            argv += ["-c", str(self.config_path)]
        pass_fds: tuple[int, ...] = ()
        self.listen_sock = None
        if sock is not None:
            # A listening socket the test keeps (so a server started again later gets the
            # same port): the server gets a copy, the test's own stays open.
            self.port = sock.getsockname()[1]
            pass_fds = (sock.fileno(),)
            argv += ["-b", f"fd://{sock.fileno()}"]
        elif bind:
            self.listen_sock = socket.socket()
            if reuseport:  # (so that the server can add sockets to its group)
                self.listen_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self.listen_sock.bind(("127.0.0.1", 0))
            self.listen_sock.listen(2048)
            self.port = self.listen_sock.getsockname()[1]
            pass_fds = (self.listen_sock.fileno(),)
            argv += ["-b", f"fd://{self.listen_sock.fileno()}"]
        argv += args
        env = {**env_for_server(), **(env or {})}
        env["PREFORKD_EVENTS"] = str(self.events_path)
        self.out = open(self.errlog, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=self.out, pass_fds=pass_fds, env=env,
                                     start_new_session=True, cwd=tmp_path)
        self.pid = self.proc.pid
        self.pids.add(self.pid)
        if self.listen_sock is not None:
            self.listen_sock.close()  # the server holds it now; ours would keep it open

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    # -- events ------------------------------------------------------------------
    def events(self) -> list[dict[str, str]]:
        try:
            text = self.events_path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            name, *fields = line.split()
            event = {"event": name}
            event.update(f.split("=", 1) for f in fields)
            out.append(event)
        for e in out:
            if "pid" in e:
                self.pids.add(int(e["pid"]))
        return out

    def wait_event(self, name: str, timeout: float = 10.0, after: int = 0,
                   **match: Any) -> dict[str, str]:
        def find() -> dict[str, str] | None:
            for e in self.events()[after:]:
                if e["event"] == name and all(e.get(k) == str(v) for k, v in match.items()):
                    return e
            self._check_running()
            return None

        return wait_until(find, timeout, what=f"event {name} {match}")

    def _check_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"master exited with {self.proc.returncode}:\n{self.log()}")

    def wait_ready(self, workers: int, gen: int = 1, timeout: float = 10.0) -> list[int]:
        """Wait until `workers` workers of generation `gen` have reported ready; their pids."""
        def ready() -> list[int] | None:
            pids = {e["index"]: int(e["pid"]) for e in self.events()
                    if e["event"] == "ready" and e["gen"] == str(gen)}
            self._check_running()
            if len(pids) >= workers:
                return [pids[k] for k in sorted(pids)]
            return None

        return wait_until(ready, timeout, what=f"{workers} ready workers of gen {gen}")

    def workers(self) -> list[int]:
        return children(self.pid)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def log(self) -> str:
        return self.errlog.read_text(errors="replace")

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "preforkd", *args, "--pid",
                               str(self.pidfile)], capture_output=True, text=True,
                              timeout=timeout, env=env_for_server(), cwd=self.dir)

    # -- teardown ------------------------------------------------------------------
    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"master still running after {timeout}s:\n{self.log()}") from None

    def cleanup(self) -> None:
        self.events()  # learn every worker pid ever reported
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for pid in self.pids:
            if alive(pid) and "preforkd" in cmdline(pid):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.out.close()

    def assert_clean_log(self) -> None:
        """No traceback unless the test allows it; every [error] line must be expected."""
        text = self.log()
        if "Traceback" in text and not self.allow_traceback:
            raise AssertionError(f"unexpected traceback in the server log:\n{text}")
        for line in text.splitlines():
            if "[error]" in line and not any(a in line for a in self.allowed_errors):
                raise AssertionError(f"unexpected error in the server log: {line}\n{text}")


def echo_roundtrip(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(got)} of {len(payload)} bytes")
        got += chunk
    assert got == payload


LOADGEN = Path(__file__).parent.parent / "scripts" / "loadgen"


class Load:
    """scripts/loadgen in the background against a server; result() waits for its report."""

    def __init__(self, target: str, duration: float, *args: str) -> None:
        self.out = open(os.devnull, "wb")  # noqa: SIM115 (closed in result())
        self.proc = subprocess.Popen(
            [sys.executable, str(LOADGEN), "--target", target, "--duration", str(duration),
             "--json", *args], stdout=subprocess.PIPE, stderr=self.out,
            stdin=subprocess.DEVNULL)

    def result(self, timeout: float = 60.0) -> dict[str, Any]:
        import json

        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"loadgen still running after {timeout}s") from None
        finally:
            self.out.close()
        report = json.loads(out)
        print(f"loadgen: sent={report['sent']} ok={report['ok']} failed={report['failed']} "
              f"by_reason={report['by_reason']} p99_ms={report['latency_ms']['p99']}")
        assert report["ok"] > 0, f"no request succeeded: {report}"
        return report


def serving_counts(events: list[dict[str, str]]) -> list[int]:
    """How many workers were serving (ready, not yet stopping or gone) after each event."""
    serving: set[str] = set()
    counts = []
    for e in events:
        pid = e.get("pid")
        if e["event"] == "ready":
            serving.add(pid)
        elif e["event"] in ("stopping", "exited"):
            serving.discard(pid)
        else:
            continue
        counts.append(len(serving))
    return counts
