"""The two wires, each end against the other: channel codec and control socket."""

from __future__ import annotations

import os
import socket
import stat
import threading

from preforkd import control
from preforkd.control import Channel, ControlServer, FromWorker, Reply, ToWorker


def test_orders_down_and_messages_up_the_channel():
    master_end, worker_end = socket.socketpair()
    channel = Channel(master_end)
    assert channel.send(ToWorker.REOPEN) and channel.send(ToWorker.GRACEFUL)
    assert control.read_orders(worker_end) == [ToWorker.REOPEN, ToWorker.GRACEFUL]
    control.send_line(worker_end, control.MSG_READY)
    control.report_error(worker_end, "ImportError: no module\nnamed app")
    assert channel.receive() == [(FromWorker.READY, ""),
                                 (FromWorker.ERROR, "ImportError: no module named app")]
    worker_end.close()
    assert channel.receive() is None  # EOF: the worker is gone
    assert not channel.send(ToWorker.FAST)  # so the master falls back to a signal
    channel.close()


def test_a_message_split_across_reads_waits_for_its_newline():
    master_end, worker_end = socket.socketpair()
    channel = Channel(master_end)
    worker_end.sendall(b"rea")
    assert channel.receive() == []
    worker_end.sendall(b"dy\nnonsense\nerr")
    assert channel.receive() == [(FromWorker.READY, "")]
    worker_end.close()
    channel.close()


def test_worker_sees_the_masters_eof():
    master_end, worker_end = socket.socketpair()
    worker_end.setblocking(False)
    assert control.read_orders(worker_end) == []  # nothing yet
    master_end.close()
    assert control.read_orders(worker_end) is None
    worker_end.close()


def test_control_socket_roundtrip_and_mode(tmp_path):
    path = str(tmp_path / "m.pid.ctl")
    got: list[tuple[str, Reply]] = []
    server = ControlServer.open(path, {"reload": "RELOAD", "status": "STATUS"},
                                lambda entry, reply: got.append((entry, reply)))
    assert server is not None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    answers: list[str | None] = []

    def ask(word: str) -> None:
        answers.append(control.request(path, word, 5.0))

    for word, answer in (("reload", "ok generation 2 serving"), ("bogus", None)):
        client = threading.Thread(target=ask, args=(word,))
        client.start()
        server.sock.setblocking(True)
        server.accept()
        if answer is not None:
            entry, reply = got.pop()
            assert entry == "RELOAD"
            reply.send(answer)
        client.join(5)
    assert answers == ["ok generation 2 serving", "error unknown command 'bogus'"]
    server.close()
    assert not os.path.exists(path)
    assert control.request(path, "status", 1.0) is None  # nobody listens
