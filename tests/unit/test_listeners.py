from __future__ import annotations

import socket

import pytest

from preforkd.listeners import BindSpec, ListenError, open_listeners, parse_bind, reuseport_sibling


@pytest.mark.parametrize("spec,expected", [
    ("127.0.0.1:8000", BindSpec("tcp", host="127.0.0.1", port=8000)),
    (":80", BindSpec("tcp", host="0.0.0.0", port=80)),
    ("[::1]:9000", BindSpec("tcp", host="::1", port=9000)),
    ("localhost:0", BindSpec("tcp", host="localhost", port=0)),
    ("unix:/run/p.sock", BindSpec("unix", path="/run/p.sock")),
    ("fd://3", BindSpec("fd", fd=3)),
])
def test_parse_bind(spec, expected):
    assert parse_bind(spec) == expected


@pytest.mark.parametrize("spec", ["localhost", "1.2.3.4:http", "::1:80", "[::1]80", "unix:",
                                  "fd://x", "host:70000"])
def test_parse_bind_rejects(spec):
    with pytest.raises(ValueError):
        parse_bind(spec)


def test_bind_tcp_v4_and_v6():
    ls = open_listeners(("127.0.0.1:0", "[::1]:0"), 16, 0o660)
    try:
        assert ls[0].name.startswith("127.0.0.1:")
        assert ls[1].name.startswith("[::1]:")
        port = int(ls[1].name.rsplit(":", 1)[1])
        with socket.create_connection(("::1", port), timeout=2):
            pass
    finally:
        for lst in ls:
            lst.close()


def test_unix_stale_file_removed_live_one_refused(tmp_path):
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    (lst,) = open_listeners((f"unix:{path}",), 16, 0o600)
    try:
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        with pytest.raises(ListenError, match="address already in use"):
            open_listeners((f"unix:{path}",), 16, 0o600)
    finally:
        lst.close(unlink=True)
    assert not path.exists()


def test_unix_refuses_to_remove_a_regular_file(tmp_path):
    path = tmp_path / "data"
    path.write_text("precious")
    with pytest.raises(ListenError, match="exists and is not a socket"):
        open_listeners((f"unix:{path}",), 16, 0o600)
    assert path.read_text() == "precious"


def test_fd_must_be_a_listening_socket():
    s = socket.socket()
    try:
        with pytest.raises(ListenError, match="not a listening stream socket"):
            open_listeners((f"fd://{s.fileno()}",), 16, 0o600)
    finally:
        s.close()


def test_failure_closes_what_was_bound():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{busy}: address already"):
        open_listeners(("127.0.0.1:0", f"127.0.0.1:{busy}"), 16, 0o600)
    holder.close()


def test_reuseport_group_spreads_connections_over_its_sockets():
    # (a backlog no socket's share of 200 can fill: a full queue drops SYNs, and the
    # client would wait out its retransmits)
    (first,) = open_listeners(("127.0.0.1:0",), 512, 0o600, reuseport=True)
    group = [first] + [reuseport_sibling(first, 512) for _ in range(3)]
    assert {lst.sock.getsockname() for lst in group} == {first.sock.getsockname()}
    clients = [socket.create_connection(first.sock.getsockname(), timeout=5)
               for _ in range(200)]
    taken = []
    for lst in group:
        lst.sock.setblocking(False)
        n = 0
        while True:
            try:
                conn, _ = lst.sock.accept()
            except BlockingIOError:
                break
            conn.close()
            n += 1
        taken.append(n)
    assert sum(taken) == 200 and min(taken) >= 20, taken  # each socket has its own queue
    for c in clients:
        c.close()
    for lst in group:
        lst.close()


def test_reuseport_refuses_what_cannot_join_a_group(tmp_path):
    with pytest.raises(ListenError, match="reuseport needs host:port"):
        open_listeners((f"unix:{tmp_path}/s",), 16, 0o600, reuseport=True)
