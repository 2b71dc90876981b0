"""Import "module:callable" targets and build the protocol factory a worker serves with."""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable
from typing import Any

from preforkd.config import Config


class LoadError(Exception):
    """The app or protocol cannot be loaded: str(self) is one line, `detail` the traceback."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def import_target(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as e:  # anything the imported code raises is the user's error to see
        raise LoadError(f"cannot load {spec}: {type(e).__name__}: {e}",
                        traceback.format_exc()) from None
    return obj


def protocol_factory(config: Config, context: Any = None) -> Callable[[], Any]:
    """A zero-argument callable that makes one protocol object per connection."""
    if config.protocol == "echo":
        from preforkd.protocols.echo import EchoProtocol

        return EchoProtocol
    if config.protocol == "http":
        from preforkd.http.protocol import http_factory

        return http_factory(config, context)
    factory = import_target(config.protocol)
    if not callable(factory):
        raise LoadError(f"cannot load {config.protocol}: not callable")
    return factory
