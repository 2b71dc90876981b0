"""The server's own paths, answered before the app: health and status here, metrics
(http/metrics.py; later static mounts).

The driver looks a request target up in `routes` (a dict: one lookup per
request, no parsing); only a target with a query string takes a second look,
by its path. A route is called as route(driver, req) and answers through the
driver like any responder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from preforkd import __version__
from preforkd.http.connection import Request
from preforkd.http.response import encode_head

Route = Callable[[Any, Request], None]

TEXT = encode_head("200 OK", [("content-type", "text/plain")])
DRAINING = encode_head("503 Service Unavailable", [("content-type", "text/plain")])
JSON = encode_head("200 OK", [("content-type", "application/json")])


class Router:
    def __init__(self) -> None:
        self.routes: dict[bytes, Route] = {}

    def add(self, path: str, route: Route) -> None:
        if path:
            self.routes[path.encode("latin-1")] = route

    def match_query(self, target: bytes) -> Route | None:
        """For a target with a query string: the route of its path, if any."""
        return self.routes.get(target.split(b"?", 1)[0]) if self.routes else None


class OwnPaths:
    """health_path: 200 "ok", or 503 "draining" once the server stops (so a
    balancer stops sending before the listener closes); status_path: every
    worker's scoreboard slot as JSON."""

    def __init__(self, scoreboard: Any, is_draining: Callable[[], bool]) -> None:
        self.scoreboard = scoreboard
        self.is_draining = is_draining

    def install(self, router: Router, health_path: str, status_path: str) -> None:
        router.add(health_path, self.health)
        router.add(status_path, self.status)

    def health(self, driver: Any, req: Request) -> None:
        if self.is_draining():
            driver.send_whole(DRAINING, b"draining\n")
        else:
            driver.send_whole(TEXT, b"ok\n")

    def status(self, driver: Any, req: Request) -> None:
        driver.send_whole(JSON, self.status_document())

    def status_document(self) -> bytes:
        return json.dumps({"version": __version__,
                           "workers": self.scoreboard.snapshot()}).encode()
