"""The page preforkd serves when no app is given, like nginx's welcome page."""

from __future__ import annotations

import html
import os

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Welcome to preforkd</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;line-height:1.5}}
code{{background:#f3f3f3;padding:0 .3em}}</style></head>
<body><h1>Welcome to preforkd {version}</h1>
<p>If you see this page, preforkd is installed and serving. Point it at your
WSGI application with <code>preforkd start --app module:callable</code>.</p>
<p>Served by worker {worker} (pid {pid}), generation {generation}.
Reload with <code>kill -HUP</code> and watch the generation grow.</p>
<p>Request: <code>{method} {path}</code></p>
</body></html>
"""


def app(environ, start_response):
    body = PAGE.format(
        version=environ.get("preforkd.version", ""),
        worker=environ.get("preforkd.worker", "?"),
        pid=os.getpid(),
        generation=environ.get("preforkd.generation", "?"),
        method=html.escape(environ["REQUEST_METHOD"]),
        path=html.escape(environ["PATH_INFO"]),
    ).encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
