"""The worker process: one event loop serving the shared listeners.

Theory of operation
-------------------
The master forks us with the listeners, our end of a socketpair (the
channel) and a slot in the shared scoreboard. We build everything else
fresh: signal pipe, event loop, protocol factory (importing the app here,
never in the master). Then we tell the master READY and run the loop.

- Listeners are registered with EPOLLEXCLUSIVE: one connection wakes one
  worker. We accept in batches until EAGAIN, stop at worker_connections and
  on EMFILE/ENFILE (retry on a timer), keeping what we already serve.
- The channel carries the master's commands (graceful, fast, reopen); EOF on
  it means the master died, and we exit rather than hold the port.
- A timer stamps our heartbeat every HEARTBEAT_INTERVAL; if the loop blocks,
  the stamps stop and the master kills us.
- Graceful stop: stop watching the listeners, take what already sits in the
  accept queue, close the listeners, ask each protocol to close when idle,
  and exit when the last connection is gone or graceful_timeout passes.
"""

from __future__ import annotations

import errno
import faulthandler
import fcntl
import gc
import os
import signal
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from preforkd import logs
from preforkd.config import Config
from preforkd.control import MSG_READY, ToWorker, read_orders, report_error, send_line
from preforkd.listeners import Listener
from preforkd.loader import LoadError
from preforkd.loop import Loop
from preforkd.process import EX_APP, EX_OK, drop_privileges, resolve_user, set_title
from preforkd.protocols.base import Host
from preforkd.protocols.proxy import ProxyProtocol
from preforkd.protocols.registry import protocol_factory
from preforkd.scoreboard import Scoreboard
from preforkd.signals import NAME_BUSY_SIGNAL, WORKER_SIGNALS, SignalPipe
from preforkd.transport import Transport, metered_transport

log = logs.log

HEARTBEAT_INTERVAL = 0.5
ACCEPT_BATCH = 1024  # per wake-up, so one busy listener cannot starve the rest of the loop
EMFILE_BACKOFF = 0.5
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_fcntl, _F_SETFL, _O_NONBLOCK = fcntl.fcntl, fcntl.F_SETFL, os.O_NONBLOCK


class WorkerProcess:
    def __init__(self, config: Config, listeners: list[Listener], index: int, generation: int,
                 scoreboard: Scoreboard, slot_no: int, channel: socket.socket) -> None:
        self.config = config
        self.scoreboard = scoreboard
        self.slot = scoreboard.view(slot_no)
        self.listeners = listeners
        self.index = index
        self.generation = generation
        self.channel = channel
        self.loop = Loop()
        self.connections: set[Transport] = set()
        self.factory: Callable[[], Any] | None = None
        # What the protocols get from us, and what they registered with it.
        self.host = Host(self.loop, scoreboard, self.slot, index, generation, self.connections,
                         listeners)
        self.transport_type: type[Transport] = Transport  # (a counting one: metrics on)
        self.accepting = False
        self.nodelay = True
        # accept = "exclusive": EPOLLEXCLUSIVE on the shared sockets; "reuseport": the
        # sockets are this worker index's own; "shared": every idle worker is woken.
        self.exclusive = config.accept == "exclusive"
        self.rotate = self.exclusive and config.workers > 1 and self.loop.exclusive_supported
        self.stopping = False
        self.stop_announced = False  # the server stops: health fails, drain_delay runs
        self.exit_code = EX_OK
        self._resume_timer: Any = None
        self._closed_callback = self._connection_closed  # one bound method, not one each
        self._last_emfile_log = 0.0

    # -- boot ---------------------------------------------------------------
    def run(self) -> int:
        set_title(f"worker {self.index} [gen {self.generation}]")
        self.signals = SignalPipe(WORKER_SIGNALS)
        # The master's timeout kill: NAME_BUSY_SIGNAL (we say which request we are stuck
        # in), then SIGABRT (faulthandler prints where).
        signal.signal(NAME_BUSY_SIGNAL, self._name_busy_request)
        faulthandler.enable(all_threads=True)
        ids = resolve_user(self.config.user, self.config.group)
        if ids is not None:  # before the app is imported: it never runs privileged
            drop_privileges(ids, [])
        try:
            self.factory = protocol_factory(self.config, self.host)
            for listener in self.listeners:
                listener.factory = self._listener_factory(listener)
            # TCP_NODELAY at accept, unless the protocol sets it itself when it matters
            # (HTTP: only on kept-alive connections, saving a syscall on one-shot ones).
            self.nodelay = self.host.nodelay_at_accept
            if self.host.byte_meter is not None:
                self.transport_type = metered_transport(self.host.byte_meter)
        except LoadError as e:
            log.error("worker=%d event=boot-failed error=%s\n%s", self.index, e, e.detail)
            report_error(self.channel, str(e))
            return EX_APP
        self.channel.setblocking(False)
        self.loop.add_reader(self.channel.fileno(), self._channel_readable)
        self.loop.add_reader(self.signals.fileno(), self._signals_readable)
        for listener in self.listeners:
            listener.sock.setblocking(False)
        self._start_accepting()
        self._beat()
        # What exists now (the app, its modules) lives as long as the worker: keep it
        # out of the collector's way, so collections only look at young objects. Per
        # connection and request nothing is cyclic (transports break their cycles on
        # close), so collections can be rare: they cost ~10% of a one-request
        # connection at the default threshold.
        gc.freeze()
        gc.set_threshold(20000, 20, 20)
        self._send(MSG_READY)
        log.debug("worker=%d gen=%d event=ready", self.index, self.generation)
        self.loop.run()
        for hook in self.host.exit_hooks:
            hook()
        return self.exit_code

    def _name_busy_request(self, signum: int, frame: Any) -> None:
        """Our loop stopped beating: stamp the request the interrupted code serves in the
        scoreboard, for the master's log. Found on the stack, so no request pays for it."""
        find = self.host.find_busy
        found = find(frame) if find is not None else None
        if found is not None:
            self.slot.busy(time.monotonic(), *found)

    def _send(self, msg: bytes) -> None:
        send_line(self.channel, msg)  # the master is gone? the channel's EOF will stop us

    def _beat(self) -> None:
        count = self.host.count_states
        counts = count() if count is not None else (0, 0, 0)
        self.slot.beat(self.loop.now, len(self.connections), counts)
        self.loop.call_later(HEARTBEAT_INTERVAL, self._beat)

    # -- accepting ------------------------------------------------------------
    def _start_accepting(self) -> None:
        if self.accepting or self.stopping:
            return
        self.accepting = True
        for listener in self.listeners:
            callback = partial(self._accept, listener)
            if self.exclusive:
                self.loop.add_exclusive_reader(listener.sock.fileno(), callback)
            else:
                self.loop.add_reader(listener.sock.fileno(), callback)

    def _stop_accepting(self) -> None:
        if not self.accepting:
            return
        self.accepting = False
        for listener in self.listeners:
            self.loop.remove_reader(listener.sock.fileno())

    def _accept(self, listener: Listener) -> None:
        # Bare fds: socket.accept() spends microseconds on enums and a socket object
        # costs a getsockname() syscall (the transport makes one if it is asked to).
        accept = listener.sock._accept
        room = self.config.worker_connections - len(self.connections)
        accepted = 0
        for _ in range(min(room, ACCEPT_BATCH)):
            try:
                fd, addr = accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno in _RESOURCE_ERRORS:
                    self._pause_accepting(e)
                    return
                if e.errno == errno.ECONNABORTED:
                    continue  # the client gave up while queued
                raise
            accepted += 1
            self._serve(fd, addr, listener)
        if len(self.connections) >= self.config.worker_connections:
            self._stop_accepting()  # _connection_closed resumes below the cap
        elif accepted and self.rotate:
            # EPOLLEXCLUSIVE wakes the first idle worker in the listener's wait queue,
            # which is registration order: worker 0 would take nearly every connection
            # while it keeps up. Registering again puts us at the queue's tail, so the
            # next connection goes to the worker idle the longest.
            fd = listener.sock.fileno()
            self.loop.remove_reader(fd)
            self.loop.add_exclusive_reader(fd, partial(self._accept, listener))

    def _serve(self, fd: int, addr: Any, listener: Listener) -> None:
        # An accepted socket's file status flags are all clear: one fcntl, no F_GETFL.
        _fcntl(fd, _F_SETFL, _O_NONBLOCK)
        self.slot.accepted += 1
        try:
            protocol = listener.factory()
        except Exception:
            log.exception("worker=%d event=protocol-error", self.index)
            os.close(fd)
            return
        transport = self.transport_type(self.loop, fd, protocol, self._closed_callback, addr,
                                        listener)
        if self.nodelay and listener.family != socket.AF_UNIX:
            try:
                transport.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                os.close(fd)  # the client is already gone; the protocol never saw it
                return
        self.connections.add(transport)
        try:
            transport.start()
        except Exception:
            log.exception("worker=%d event=protocol-error", self.index)
            transport.abort()

    def _pause_accepting(self, e: OSError) -> None:
        now = self.loop.now
        if now - self._last_emfile_log > 10.0:  # rate-limited: this can fire thousands of times
            self._last_emfile_log = now
            log.warning("worker=%d event=accept-paused error=%s connections=%d",
                        self.index, errno.errorcode.get(e.errno or 0, e), len(self.connections))
        self._stop_accepting()
        if self._resume_timer is None:
            self._resume_timer = self.loop.call_later(EMFILE_BACKOFF, self._resume_after_backoff)

    def _resume_after_backoff(self) -> None:
        self._resume_timer = None
        self._start_accepting()

    def _connection_closed(self, transport: Transport) -> None:
        self.connections.discard(transport)
        if self.stopping:
            if not self.connections:
                self.loop.stop()
        elif not self.accepting and self._resume_timer is None:
            self._start_accepting()

    def _listener_factory(self, listener: Listener) -> Callable[[], Any]:
        """The protocol, behind a PROXY header where this listener expects one."""
        version, allow = self.config.proxy_for(listener.spec, listener.name)
        if version == "off":
            return self.factory
        return ProxyProtocol.factory(self.factory, version, None if "*" in allow else allow)

    # -- commands -------------------------------------------------------------
    def _channel_readable(self) -> None:
        orders = read_orders(self.channel)
        if orders is None:
            log.warning("worker=%d event=master-gone action=exit", self.index)
            self.loop.remove_reader(self.channel.fileno())
            self.stop_fast()
            return
        for order in orders:
            if order is ToWorker.STOP:
                self.stop_server()
            elif order is ToWorker.GRACEFUL:
                self.stop_graceful()
            elif order is ToWorker.FAST:
                self.stop_fast()
            elif order is ToWorker.REOPEN:
                self.reopen_logs()

    def _signals_readable(self) -> None:
        for sig in self.signals.drain():
            if sig == signal.SIGINT:
                self.stop_fast()
            elif sig == signal.SIGUSR1:
                self.reopen_logs()
            elif sig == signal.SIGQUIT:
                self.stop_graceful()  # (the master's fallback when it retires us)
            else:
                self.stop_server()

    def reopen_logs(self) -> None:
        logs.reopen(self.config.error_log)
        for hook in self.host.reopen_hooks:
            hook()

    def stop_server(self) -> None:
        """The whole server stops: the health path fails at once while we serve on
        for drain_delay (the balancer takes us out meanwhile), then a graceful stop."""
        if self.stopping or self.stop_announced:
            return
        self.stop_announced = True
        log.debug("worker=%d event=stop-announced drain_delay=%s", self.index,
                  self.config.drain_delay)
        for hook in self.host.stop_hooks:
            hook()
        if self.config.drain_delay > 0:
            self.loop.call_later(self.config.drain_delay, self.stop_graceful)
        else:
            self.stop_graceful()

    def stop_graceful(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.slot.draining = True  # (published at the next heartbeat)
        log.debug("worker=%d event=draining connections=%d", self.index, len(self.connections))
        for hook in self.host.drain_hooks:
            hook()
        self._stop_accepting()
        for listener in self.listeners:
            # What already sits in the accept queue was meant for us (EPOLLEXCLUSIVE woke
            # only us for it): serve it rather than leave it to wait for another wake-up.
            self._drain_accept_queue(listener)
            listener.sock.close()
        for transport in list(self.connections):
            transport.get_protocol().close_when_idle()
        if not self.connections:
            self.loop.stop()
            return
        self.loop.call_later(self.config.graceful_timeout, self._graceful_expired)

    def _drain_accept_queue(self, listener: Listener) -> None:
        while len(self.connections) < self.config.worker_connections:
            try:
                fd, addr = listener.sock._accept()
            except OSError:
                return
            self._serve(fd, addr, listener)

    def _graceful_expired(self) -> None:
        log.warning("worker=%d event=graceful-timeout aborted=%d", self.index,
                    len(self.connections))
        self.stop_fast()

    def stop_fast(self) -> None:
        self.stopping = True
        self._stop_accepting()
        for transport in list(self.connections):
            transport.abort()
        self.loop.stop()


def worker_main(config: Config, listeners: list[Listener], index: int, generation: int,
                scoreboard: Scoreboard, slot_no: int, channel: socket.socket) -> int:
    try:
        return WorkerProcess(config, listeners, index, generation, scoreboard, slot_no,
                             channel).run()
    except Exception as e:
        log.exception("worker=%d event=crashed", index)
        # A crash before READY is a boot failure: let the master say why.
        report_error(channel, f"{type(e).__name__}: {e}")
        return 1
    finally:
        for handler in log.handlers:
            handler.flush()
