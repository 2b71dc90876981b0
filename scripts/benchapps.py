"""Apps and reference servers for scripts/bench (kept out of the package)."""

from __future__ import annotations

import selectors
import socket
import sys
import time

BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def wsgi(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


def sleep10(environ, start_response):
    """An app that waits 10 ms on "I/O" per request (the thread-pool benchmark); its
    health path does not wait."""
    if environ["PATH_INFO"] != "/healthz":
        time.sleep(0.01)
    start_response("200 OK", HEADERS)
    return [BODY]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": BODY})


def selectors_echo(port: int) -> None:
    """The textbook selectors echo server: the seed this project grew from."""
    sel = selectors.DefaultSelector()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(1024)
    lsock.setblocking(False)

    def accept(sock: socket.socket) -> None:
        conn, _ = sock.accept()
        conn.setblocking(False)
        sel.register(conn, selectors.EVENT_READ, read)

    def read(conn: socket.socket) -> None:
        data = conn.recv(1024)
        if data:
            conn.send(data)
        else:
            sel.unregister(conn)
            conn.close()

    sel.register(lsock, selectors.EVENT_READ, accept)
    while True:
        for key, _ in sel.select():
            key.data(key.fileobj)


if __name__ == "__main__":
    selectors_echo(int(sys.argv[1]))
