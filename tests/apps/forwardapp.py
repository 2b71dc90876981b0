"""A WSGI app that answers with what trusted forwarding leaves in the environ, as JSON."""

from __future__ import annotations

import json
from wsgiref.validate import validator

KEYS = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTPS", "HTTP_HOST", "SERVER_NAME",
        "SERVER_PORT", "preforkd.peer", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
        "HTTP_X_FORWARDED_HOST", "HTTP_FORWARDED")


def _app(environ, start_response):
    body = json.dumps({k: environ.get(k) for k in KEYS}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = validator(_app)
