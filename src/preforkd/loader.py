"""Import "module:callable" targets (a leaf: it imports nothing of preforkd)."""

from __future__ import annotations

import importlib
import traceback
from typing import Any


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
