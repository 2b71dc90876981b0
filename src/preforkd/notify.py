"""sd_notify: tell systemd (or whoever set NOTIFY_SOCKET) how the service is doing.

One datagram per state change to the unix socket named by NOTIFY_SOCKET (a
path, or "@name" for an abstract socket), as `KEY=value` lines: READY=1 when
the first generation serves, RELOADING=1 with MONOTONIC_USEC= when a reload
starts and READY=1 again when it is done (what `Type=notify-reload` units
expect), STOPPING=1, STATUS= lines for `systemctl status`, MAINPID= when an
upgrade hands the service to a new master. Without NOTIFY_SOCKET it does
nothing; a failed send is logged once, never fatal.
"""

from __future__ import annotations

import os
import socket
import time

from preforkd import logs

log = logs.log


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        if address is None:
            # Taken out of the environment: workers and the app are not the service.
            address = os.environ.pop("NOTIFY_SOCKET", "")
        self.given = address  # as NOTIFY_SOCKET said it, for a new master (upgrade)
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self._sock: socket.socket | None = None
        self._failed = False

    def send(self, **fields: object) -> None:
        """send(READY=1, STATUS="...") -> one datagram "READY=1\\nSTATUS=...\\n"."""
        if not self.address:
            return
        message = "".join(f"{k}={v}\n" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, self.address)
        except OSError as e:
            if not self._failed:
                self._failed = True
                log.warning("event=notify-failed socket=%s error=%s", self.address.lstrip("\0"),
                            e.strerror or e)

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(RELOADING=1, MONOTONIC_USEC=usec, STATUS="reloading")

    def stopping(self) -> None:
        self.send(STOPPING=1, STATUS="stopping")

    def main_pid(self, pid: int, status: str) -> None:
        self.send(MAINPID=pid, STATUS=status)

    def child_env(self) -> dict[str, str]:
        """The environment for a new master (an upgrade): ours, with NOTIFY_SOCKET."""
        env = dict(os.environ)
        if self.given:
            env["NOTIFY_SOCKET"] = self.given
        return env

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
