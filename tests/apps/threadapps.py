"""WSGI apps for the thread-pool tests: waits, big streams, write(), files, errors."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from wsgiref.validate import validator

CHUNK = b"x" * 65536
_FILE = tempfile.NamedTemporaryFile(prefix="preforkd-threads-", delete=False)  # noqa: SIM115
_FILE.write(b"0123456789" * 10_000)
_FILE.flush()


def _app(environ, start_response):
    path = environ["PATH_INFO"]
    query = dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
    if path == "/wait":
        time.sleep(int(query.get("ms", "200")) / 1000)
        body = f"{threading.current_thread().name} {environ['wsgi.multithread']}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/big":  # a long stream, pulled as the client reads
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (CHUNK for _ in range(int(query.get("chunks", "1600"))))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one ")
        write(b"two ")
        return [b"three"]
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(_FILE.name, "rb"))
    if path == "/error":
        raise RuntimeError("the test app fails on purpose")
    if path == "/pid":
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


app = validator(_app)
