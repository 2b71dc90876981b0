"""A WSGI app that answers every request 200 with what it received, as JSON.

The request-smuggling corpus (tests/smuggling.py) compares this with the RFC's
reading of each raw request: which requests the server saw, with which target,
header fields and body.
"""

from __future__ import annotations

import json


def app(environ, start_response):
    headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if key in environ:
            headers[key] = environ[key]
    body = environ["wsgi.input"].read()
    out = json.dumps({
        "method": environ["REQUEST_METHOD"],
        "target": environ.get("RAW_URI"),
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "protocol": environ["SERVER_PROTOCOL"],
        "headers": headers,
        "body": body.decode("latin-1"),
    }, sort_keys=True).encode("ascii")
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]
