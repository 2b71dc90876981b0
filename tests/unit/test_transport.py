"""The transport over a real socketpair, driven by a real loop."""

from __future__ import annotations

import os
import socket

import pytest

from preforkd.loop import Loop
from preforkd.protocols.base import Protocol
from preforkd.transport import HIGH_WATER, Transport, metered_transport


class Recorder(Protocol):
    def __init__(self):
        self.data = bytearray()
        self.events = []

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.events.append("eof")
        return True  # keep open for writing

    def connection_lost(self, exc):
        self.events.append(("lost", exc))

    def pause_writing(self):
        self.events.append("pause")
        super().pause_writing()

    def resume_writing(self):
        self.events.append("resume")
        super().resume_writing()


KIND: dict = {"bare": False, "class": Transport}


class Meter:
    bytes_in = bytes_out = 0


@pytest.fixture(autouse=True, params=["socket", "bare-fd"])
def _transport_kind(request):
    """Every test runs over a socket object and over a bare fd (as the worker accepts)."""
    KIND["bare"] = request.param == "bare-fd"
    yield
    KIND["bare"] = False


@pytest.fixture(autouse=True, params=["plain", "metered"])
def _transport_class(request):
    """... and with the transport that counts bytes (metrics on), which must behave the
    same."""
    KIND["class"] = metered_transport(Meter()) if request.param == "metered" else Transport
    yield
    KIND["class"] = Transport


def make():
    loop = Loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    closed = []
    proto = Recorder()
    t = KIND["class"](loop, a.detach() if KIND["bare"] else a, proto, closed.append)
    t.start()
    return loop, t, proto, b, closed


def tick(loop):
    loop.call_later(0.001, loop.stop)
    loop.run()


def read_to_eof(loop, peer, turns=10000):
    """Run the loop and read what the peer gets until the transport's FIN."""
    got = bytearray()
    peer.setblocking(False)
    for _ in range(turns):
        tick(loop)
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            continue
        if not chunk:
            break
        got += chunk
    return got


def run_until(loop, pred, limit=200):
    for _ in range(limit):
        if pred():
            return
        loop.call_later(0.01, loop.stop)
        loop.run()
    raise AssertionError("condition not reached")


def test_reads_and_half_close():
    loop, t, proto, peer, closed = make()
    peer.sendall(b"hello")
    peer.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: "eof" in proto.events)
    assert bytes(proto.data) == b"hello"
    t.write(b"bye")
    t.close()
    run_until(loop, lambda: closed)
    assert peer.recv(10) == b"bye" and peer.recv(10) == b""
    assert proto.events[-1] == ("lost", None)


def test_backpressure_pauses_reading_and_resumes():
    loop, t, proto, peer, closed = make()
    peer.setblocking(False)
    big = b"x" * (HIGH_WATER * 3)
    t.write(big)
    assert "pause" in proto.events and not t.is_reading()
    got = bytearray()
    for _ in range(10000):
        if len(got) >= len(big):
            break
        tick(loop)
        try:
            got += peer.recv(1 << 20)
        except BlockingIOError:
            pass
    run_until(loop, lambda: "resume" in proto.events)
    assert t.is_reading() and got == big
    t.abort()
    run_until(loop, lambda: closed)


def test_sendfile_then_tail_in_order(tmp_path):
    loop, t, proto, peer, closed = make()
    f = tmp_path / "f"
    f.write_bytes(b"0123456789" * 100000)
    fd = open(f, "rb")
    t.write(b"head:")
    t.sendfile(fd.fileno(), 5, 999990)
    t.write(b":tail")
    t.close()
    got = read_to_eof(loop, peer)
    assert bytes(got) == b"head:" + f.read_bytes()[5:999995] + b":tail"
    fd.close()


def test_abort_drops_buffer_and_reports_once():
    loop, t, proto, peer, closed = make()
    peer.close()
    t.write(b"x" * 10)
    t.abort()
    t.abort()
    run_until(loop, lambda: closed)
    lost = [e for e in proto.events if isinstance(e, tuple)]
    assert len(lost) == 1 and isinstance(lost[0][1], (BrokenPipeError, type(None)))


def test_write_later_goes_out_after_the_turn_in_order():
    loop, t, proto, peer, closed = make()
    peer.setblocking(False)
    t.write_later(b"a")
    t.write_later(b"b")
    try:
        assert peer.recv(10) == b""  # nothing sent before the turn ends
    except BlockingIOError:
        pass
    t.write(b"c")  # a direct write sends what waits first
    assert peer.recv(10) == b"abc"
    t.write_later(b"d")
    tick(loop)
    assert peer.recv(10) == b"d"
    t.write_later(b"e")
    t.close()  # close sends what waits, then closes
    run_until(loop, lambda: closed)
    assert peer.recv(10) == b"e" and peer.recv(10) == b""


def test_write_eof_half_closes_after_buffered_data():
    loop, t, proto, peer, closed = make()
    big = b"y" * (HIGH_WATER * 2)
    t.write(big)
    assert t.get_write_buffer_size() > 0
    t.write_eof()
    got = read_to_eof(loop, peer)
    assert bytes(got) == big and t.get_write_buffer_size() == 0
    peer.sendall(b"still readable")  # only our side is shut: the peer can still write
    run_until(loop, lambda: bytes(proto.data).endswith(b"still readable"))


def test_socket_object_made_on_demand_and_gone_with_the_connection():
    loop, t, proto, peer, closed = make()
    sock = t.get_extra_info("socket")
    assert sock is not None and sock.fileno() == t._fd
    assert t.get_extra_info("socket") is sock  # one object, made once
    fd = t._fd
    t.close()
    tick(loop)
    assert closed == [t]
    assert t.get_extra_info("socket") is None
    try:
        os.fstat(fd)
    except OSError:
        pass
    else:
        raise AssertionError("the fd is still open")


def test_setsockopt_keeps_no_socket_object_and_the_fd_open():
    loop, t, proto, peer, closed = make()
    had_object = t._sock is not None
    t.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    assert (t._sock is not None) == had_object  # none made (and kept) for this
    probe = socket.socket(fileno=os.dup(t._fd))
    try:
        assert probe.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    finally:
        probe.close()
    peer.sendall(b"still open")
    run_until(loop, lambda: proto.data == b"still open")


@pytest.mark.parametrize("size", [13, 4 << 20])
def test_last_write_before_close_arrives_whole_over_tcp(size):
    """The bytes written just before close() go out with the FIN (MSG_MORE): small ones
    in one segment, large ones partly buffered; either way all of them, then EOF."""
    loop = Loop()
    t, proto, peer, closed = tcp_pair(loop)
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    t.write_later(payload)
    t.close()
    got = read_to_eof(loop, peer)
    peer.close()
    assert got == payload and closed == [t]


def tcp_pair(loop):
    lsock = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(lsock.getsockname())
    conn, _ = lsock.accept()
    lsock.close()
    conn.setblocking(False)
    proto, closed = Recorder(), []
    t = KIND["class"](loop, conn.detach() if KIND["bare"] else conn, proto, closed.append)
    t.start()
    return t, proto, peer, closed


def test_lingering_close_delivers_the_answer_to_a_client_still_sending():
    """A plain close() with unread input makes the kernel send RST, and the client loses
    the answer; close_lingering() sends it with a FIN and drops the input instead."""
    loop = Loop()
    t, proto, peer, closed = tcp_pair(loop)
    peer.sendall(b"x" * 200_000)  # more than we will ever read as the protocol
    run_until(loop, lambda: proto.data)
    t.pause_reading()
    t.write_later(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\n\r\n")
    t.close_lingering()
    peer.sendall(b"y" * 100_000)  # still sending after the answer
    got = read_to_eof(loop, peer)
    assert got.startswith(b"HTTP/1.1 413") and not closed  # FIN seen, fd still open
    peer.close()  # the client goes: the linger ends
    run_until(loop, lambda: closed)
    assert closed == [t] and ("lost", None) in proto.events


def test_lingering_close_is_bounded(monkeypatch):
    import preforkd.transport as transport_mod

    monkeypatch.setattr(transport_mod, "LINGER_TIMEOUT", 0.05)
    monkeypatch.setattr(transport_mod, "LINGER_BYTES", 64 * 1024)
    loop = Loop()
    t, proto, quiet, closed = tcp_pair(loop)  # a client that sends nothing more
    t.close_lingering()
    run_until(loop, lambda: closed)
    t2, _, flood, closed2 = tcp_pair(loop)  # a client that never stops sending
    t2.close_lingering()
    flood.setblocking(False)
    for _ in range(400):
        try:
            flood.send(b"z" * 16384)
        except (BlockingIOError, ConnectionResetError, BrokenPipeError):
            pass
        if closed2:
            break
        tick(loop)
    assert closed2 == [t2]
    quiet.close()
    flood.close()


def test_the_metered_transport_counts_bytes_read_and_given_to_send(tmp_path):
    meter = Meter()
    KIND["class"] = metered_transport(meter)
    loop, t, proto, peer, closed = make()
    peer.sendall(b"hello")
    run_until(loop, lambda: proto.data == b"hello")
    t.write(b"abc")
    t.write_later(b"defg")
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    fd = os.open(path, os.O_RDONLY)
    t.sendfile(fd, 2, 5)
    t.close()
    t.write(b"after close: not sent, not counted")
    run_until(loop, lambda: closed)
    os.close(fd)
    assert (meter.bytes_in, meter.bytes_out) == (5, 3 + 4 + 5)
    assert peer.recv(100) == b"abcdefgxxxxx"


def test_the_metered_transport_counts_held_bytes_once_as_they_leave():
    meter = Meter()
    KIND["class"] = metered_transport(meter)
    loop, t, proto, peer, closed = make()
    t.write_later(b"ab")
    t.write_later(b"cd")
    assert meter.bytes_out == 0  # (held for the turn's end)
    tick(loop)
    assert meter.bytes_out == 4
    t.write_later(b"e")
    t.flush()
    t.write_later(b"f")
    t.write(b"gh")  # sends the held byte first
    t.write_later(b"dropped")
    t.abort()
    tick(loop)
    assert meter.bytes_out == 4 + 1 + 1 + 2
    assert peer.recv(100) == b"abcdefgh"
