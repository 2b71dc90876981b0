"""A WSGI app whose /sleep path blocks its worker forever (a stuck request)."""

import time


def app(environ, start_response):
    if environ["PATH_INFO"].startswith("/sleep"):
        while True:
            time.sleep(3600)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"awake"]
