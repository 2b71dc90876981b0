"""The driver's phase table is exactly the moves it makes: each listed move is taken by
some exchange below, and none outside the table is."""

from __future__ import annotations

from preforkd.http.driver import PHASE_NAMES, TRANSITIONS

from httpkit import PhaseMoves, connect, drain, make_server


def hello(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hi"]


def fresh(srv):
    proto, t = connect(srv)
    return proto, t


def test_every_listed_move_is_taken_and_no_other():
    srv = make_server(hello)
    with PhaseMoves() as recorded:
        # IDLE -> RESPONDING -> IDLE; then IDLE -> HEADERS -> RESPONDING; IDLE -> CLOSED (EOF)
        proto, t = fresh(srv)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n")
        proto.data_received(b"\r\n")
        proto.eof_received()
        # IDLE -> BODY -> RESPONDING -> CLOSED (the client asked for close)
        proto, t = fresh(srv)
        proto.data_received(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
            b"Connection: close\r\n\r\nab")
        proto.data_received(b"cd")
        # IDLE -> HEADERS -> BODY -> CLOSED (body timeout: 408)
        proto, t = fresh(srv)
        proto.data_received(b"POST / HTTP/1.1\r\nHost: t\r\n")
        proto.data_received(b"Content-Length: 4\r\n\r\nab")
        proto.deadline_passed()
        # HEADERS -> CLOSED (header timeout)
        proto, t = fresh(srv)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
        proto.deadline_passed()
        # IDLE -> CLOSED when the worker drains
        proto, t = fresh(srv)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        drain(srv)
        proto.close_when_idle()
    taken = {(PHASE_NAMES[a], PHASE_NAMES[b]) for a, b in recorded.moves}
    listed = {(PHASE_NAMES[a], PHASE_NAMES[b]) for a, b in TRANSITIONS}
    assert taken == listed, f"not taken: {listed - taken}; not listed: {taken - listed}"
