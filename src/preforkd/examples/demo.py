"""A small framework-free app that exercises the server: bodies, streaming, files, errors.

    preforkd start --app preforkd.examples.demo:app

    GET  /              this index
    POST /echo          the request body back (any size, chunked uploads too)
    GET  /stream?n=5    a generator response, n chunks (chunked encoding)
    GET  /write         a response written with start_response's write()
    GET  /file          this file, through wsgi.file_wrapper (sendfile)
    GET  /env           the WSGI environ as text
    GET  /error         an exception in the app (500, traceback in the error log)
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs

TEXT = [("Content-Type", "text/plain; charset=utf-8")]


def index(environ, start_response):
    body = (__doc__ or "").encode()
    start_response("200 OK", TEXT + [("Content-Length", str(len(body)))])
    return [body]


def echo(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", environ.get("CONTENT_TYPE") or
                               "application/octet-stream"), ("Content-Length", str(len(body)))])
    return [body]


def stream(environ, start_response):
    n = int(parse_qs(environ["QUERY_STRING"]).get("n", ["5"])[0])
    start_response("200 OK", TEXT)
    for i in range(n):
        yield f"chunk {i}\n".encode()


def write_style(environ, start_response):
    write = start_response("200 OK", TEXT)
    write(b"written with write()\n")
    return [b"and returned\n"]


def file(environ, start_response):
    f = open(__file__, "rb")  # noqa: SIM115 - the server closes it through the wrapper
    size = os.fstat(f.fileno()).st_size
    start_response("200 OK", TEXT + [("Content-Length", str(size))])
    return environ["wsgi.file_wrapper"](f)


def env(environ, start_response):
    body = "".join(f"{k}: {v!r}\n" for k, v in sorted(environ.items())).encode()
    start_response("200 OK", TEXT + [("Content-Length", str(len(body)))])
    return [body]


def error(environ, start_response):
    raise RuntimeError("the demo app fails on purpose")


ROUTES = {"/": index, "/echo": echo, "/stream": stream, "/write": write_style, "/file": file,
          "/env": env, "/error": error}


def app(environ, start_response):
    handler = ROUTES.get(environ["PATH_INFO"])
    if handler is None:
        start_response("404 Not Found", TEXT + [("Content-Length", "10")])
        return [b"not found\n"]
    return handler(environ, start_response)
