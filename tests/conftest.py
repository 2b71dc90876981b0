from __future__ import annotations

import resource
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Server  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _raise_nofile() -> None:
    # The load tests hold thousands of client sockets in this process.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start preforkd with extra CLI args; every server is stopped, reaped and its log checked.

    `sock`: a listening socket the test made and keeps (the server gets its fd), so that a
    server started again later listens on the same port."""
    started: list[Server] = []

    def start(*args: str, config: str | None = None, bind: bool = True,
              env: dict[str, str] | None = None, reuseport: bool = False,
              sock: socket.socket | None = None) -> Server:
        d = tmp_path / f"s{len(started)}"
        d.mkdir()
        srv = Server(d, list(args), config=config, bind=bind, env=env, reuseport=reuseport,
                     sock=sock)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.cleanup()
    for srv in started:
        srv.assert_clean_log()
