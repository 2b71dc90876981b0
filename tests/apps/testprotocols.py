"""Protocols used by the integration tests (importable by the server via PYTHONPATH)."""

from __future__ import annotations

import time

from preforkd.protocols.echo import EchoProtocol


class SleepyEcho(EchoProtocol):
    """Echoes, but blocks its whole worker forever on b"sleep": a stuck event loop."""

    def data_received(self, data: bytes) -> None:
        if data.startswith(b"sleep"):
            while True:
                time.sleep(3600)
        super().data_received(data)


class PidProtocol(EchoProtocol):
    """Answers b"pid" with the worker's pid, echoes anything else."""

    def data_received(self, data: bytes) -> None:
        if data == b"pid":
            import os

            self.transport.write(str(os.getpid()).encode())
        else:
            super().data_received(data)
