"""sd_notify datagrams, to a path socket and to an abstract one the test binds."""

from __future__ import annotations

import os
import socket

import pytest

from preforkd.notify import Notifier


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_messages_arrive_as_key_value_lines(tmp_path, kind):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "path":
        address = str(tmp_path / "notify")
        sock.bind(address)
    else:
        name = f"preforkd-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name)
        address = "@" + name
    sock.settimeout(2)
    n = Notifier(address)
    n.ready("serving 2 workers")
    n.reloading()
    n.stopping()
    n.main_pid(4242, "upgraded")
    got = [sock.recv(4096).decode() for _ in range(4)]
    assert got[0] == "READY=1\nSTATUS=serving 2 workers\n"
    lines = dict(line.split("=", 1) for line in got[1].splitlines())
    assert lines["RELOADING"] == "1" and int(lines["MONOTONIC_USEC"]) > 0
    assert got[2] == "STOPPING=1\nSTATUS=stopping\n"
    assert got[3] == "MAINPID=4242\nSTATUS=upgraded\n"
    n.close()
    sock.close()


def test_no_socket_no_messages_and_a_dead_socket_is_not_fatal(tmp_path):
    Notifier("").ready("nobody listens")  # disabled: nothing happens
    n = Notifier(str(tmp_path / "nobody"))
    n.ready("x")  # ENOENT: logged once, not raised
    n.stopping()
    assert n._failed
