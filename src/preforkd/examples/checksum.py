"""The app scripts/loadgen talks to: every answer can be checked by the client.

    GET  /fast            a small body; `x-sha256` is its digest
    GET  /slow?ms=N       the same after N ms (it holds its worker: an in-flight request)
    POST /sum             the body's digest, checked against the client's
                          `x-body-sha256` first (a mismatch is a 422: a body lost or
                          mangled on the way in)
    GET  /alloc?mb=N      keeps N MiB more for the life of the worker (grows its RSS)
    GET  /peer            the client's address as the app sees it (REMOTE_ADDR), and the
                          X-Forwarded-For field it got, if any, in `x-seen-forwarded-for`
                          (what a balancer in front passed on)
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

FAST = b"preforkd fast answer\n" * 4
FAST_SHA = hashlib.sha256(FAST).hexdigest()
_kept: list[bytes] = []


def _query_int(environ: dict[str, Any], name: str, default: int, cap: int) -> int:
    for part in environ.get("QUERY_STRING", "").split("&"):
        key, _, value = part.partition("=")
        if key == name and value.isdigit():
            return min(int(value), cap)
    return default


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    if path == "/sum" and method == "POST":
        body = environ["wsgi.input"].read()
        digest = hashlib.sha256(body).hexdigest()
        if environ.get("HTTP_X_BODY_SHA256", digest) != digest:
            start_response("422 Unprocessable Content", [("Content-Type", "text/plain")])
            return [b"body digest mismatch\n"]
        start_response("200 OK", [("Content-Type", "text/plain"), ("x-sha256", digest)])
        return [digest.encode()]
    if path in ("/fast", "/slow", "/"):
        if path == "/slow":
            time.sleep(_query_int(environ, "ms", 100, 10_000) / 1000)
        start_response("200 OK", [("Content-Type", "text/plain"), ("x-sha256", FAST_SHA),
                                  ("x-worker-pid", str(os.getpid()))])
        return [FAST]
    if path == "/peer":
        headers = [("Content-Type", "text/plain")]
        if "HTTP_X_FORWARDED_FOR" in environ:
            headers.append(("x-seen-forwarded-for", environ["HTTP_X_FORWARDED_FOR"]))
        start_response("200 OK", headers)
        return [environ.get("REMOTE_ADDR", "").encode() + b"\n"]
    if path == "/alloc":
        _kept.append(b"\x01" * (_query_int(environ, "mb", 1, 1024) << 20))  # pages touched
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d MiB kept\n" % (sum(len(b) for b in _kept) >> 20)]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
