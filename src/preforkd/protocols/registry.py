"""Which protocol a worker serves: "http", "echo", or a user's "module:factory"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from preforkd.config import Config
from preforkd.http.server import http_factory
from preforkd.http.wsgi import load_app
from preforkd.loader import LoadError, import_target
from preforkd.protocols.base import Host
from preforkd.protocols.echo import EchoProtocol


def protocol_factory(config: Config, host: Host) -> Callable[[], Any]:
    """A zero-argument callable that makes one protocol object per connection."""
    if config.protocol == "echo":
        return EchoProtocol
    if config.protocol == "http":
        return http_factory(config, host)
    return _user_factory(config.protocol)


def check_loadable(config: Config) -> None:
    """Import what a worker would serve (the app, or the protocol factory), as
    `preforkd check` does; LoadError says why not."""
    if config.protocol == "http":
        load_app(config.app)
    elif config.protocol != "echo":
        _user_factory(config.protocol)


def _user_factory(spec: str) -> Callable[[], Any]:
    factory = import_target(spec)
    if not callable(factory):
        raise LoadError(f"cannot load {spec}: not callable")
    return factory
