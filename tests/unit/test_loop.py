from __future__ import annotations

import socket

import pytest

from preforkd.loop import Loop


@pytest.fixture(params=[True, False], ids=["epoll", "selectors"])
def loop(request):
    lp = Loop(use_epoll=request.param)
    yield lp
    lp.close()


def test_timers_fire_in_order_and_cancel(loop):
    fired = []
    loop.call_later(0.03, fired.append, "c")
    loop.call_later(0.01, fired.append, "a")
    t = loop.call_later(0.02, fired.append, "cancelled")
    loop.call_later(0.02, fired.append, "b")
    t.cancel()
    loop.call_later(0.04, loop.stop)
    loop.run()
    assert fired == ["a", "b", "c"]


def test_call_soon_runs_next_turn_in_order(loop):
    seen = []
    loop.call_soon(seen.append, 1)
    loop.call_soon(seen.append, 2)
    loop.call_soon(loop.stop)
    loop.run()
    assert seen == [1, 2]


def test_reader_and_writer_callbacks(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    got = []

    def on_read():
        got.append(a.recv(100))
        loop.remove_reader(a.fileno())
        loop.stop()

    wrote = []

    def on_write():
        wrote.append(True)
        loop.remove_writer(b.fileno())
        b.send(b"ping")

    loop.add_reader(a.fileno(), on_read)
    loop.add_writer(b.fileno(), on_write)
    loop.call_later(2.0, loop.stop)
    loop.run()
    assert got == [b"ping"] and wrote == [True]
    a.close()
    b.close()


def test_exclusive_reader_can_be_removed_and_added_again(loop):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.setblocking(False)
    accepted = []

    def on_accept():
        conn, _ = srv.accept()
        accepted.append(conn)
        loop.stop()

    loop.add_exclusive_reader(srv.fileno(), on_accept)
    loop.remove_reader(srv.fileno())
    loop.add_exclusive_reader(srv.fileno(), on_accept)
    c = socket.create_connection(srv.getsockname())
    loop.call_later(2.0, loop.stop)
    loop.run()
    assert len(accepted) == 1
    for s in (c, srv, *accepted):
        s.close()
