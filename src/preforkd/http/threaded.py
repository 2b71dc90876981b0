"""threads = N: WSGI apps run in a pool of N threads, the loop stays free.

Theory of operation
-------------------
The loop builds the environ (as inline WSGI does) and queues the app call; a
pool thread calls the app and hands what it returned back to the loop through
a Waker: a deque of callbacks and an eventfd written once per batch (a thread
writes only if the loop has not been woken yet), so a busy pool costs one
wake-up per loop turn, not one per request. The loop then answers through the
driver as inline WSGI does: a list -> send_whole, a FileWrapper -> sendfile
from the loop, anything else -> a stream. A stream is pulled in the app's
thread and pushed through a bounded queue (QueuedStream): a slow client blocks
that thread (as it would in any threaded server), never the loop, and the
worker never holds more than a few chunks of a large body. If the client
goes, the thread is told, stops pulling and closes the iterable.

The loop keeps accepting, reading, writing and timing out connections while
the threads run, and stamps the heartbeat: the watchdog judges the loop, not
the app. Requests beyond the threads wait in arrival order (a connection's
pipelined requests one after another); past `max_pending` waiting, a request
is answered 503 with Retry-After at once. A request running longer than
`request_timeout` is logged once with its thread's stack, and counted in the
status and metrics while it runs (Python cannot kill a thread). Graceful stop
and reload wait for running calls (a connection with a call in flight is not
idle), bounded by graceful_timeout; the threads are daemons, so a call still
stuck then does not hold the process.
"""

from __future__ import annotations

import collections
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from preforkd import logs
from preforkd.http.bodies import BodyStream
from preforkd.http.connection import Request
from preforkd.http.environ import FileWrapper
from preforkd.http.response import encode_head
from preforkd.http.wsgi import AppError, WsgiExchange, WsgiResponder, close_iterable

log = logs.log

STREAM_QUEUE = 8  # chunks an app thread may run ahead of a slow client
BUSY = encode_head("503 Service Unavailable", [("content-type", "text/plain"),
                                               ("retry-after", "1")])
_END = object()  # a stream's last item


class Waker:
    """Threads call `call(fn, *args)`; the loop runs those calls in order, woken
    through one eventfd write per batch."""

    def __init__(self, loop: Any) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.calls: collections.deque = collections.deque()
        self.woken = False
        loop.add_reader(self.fd, self._run)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self.calls.append((fn, args))
        if not self.woken:
            self.woken = True
            os.eventfd_write(self.fd, 1)

    def _run(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass
        self.woken = False  # (before draining: a call appended from now on writes again)
        calls = self.calls
        while calls:
            fn, args = calls.popleft()
            fn(*args)


class Task:
    """One app call: made in the loop, run in a thread, finished in the loop. Fields
    most calls leave alone are class attributes (a task is made per request)."""

    status: str | None = None
    headers: Any = None
    result: Any = None
    chunks: queue.Queue | None = None  # a stream's chunks, once it is one
    cancelled = False  # the client went: stop pulling
    started = 0.0
    thread = 0
    reported = False
    wrote = False  # write() was called: the body is a stream

    def __init__(self, exchange: ThreadedExchange, env: dict[str, Any], req: Request) -> None:
        self.exchange = exchange
        self.env = env
        self.req = req

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> Any:
        if exc_info is not None:
            try:
                if self.wrote:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AppError("start_response called a second time without exc_info")
        self.status, self.headers = status, list(headers)
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's write(), from the app's thread: the body becomes a stream."""
        if not self.wrote:
            self.wrote = True
            self._open_stream([data])
        else:
            self.put(data)

    def _open_stream(self, first: list[bytes]) -> None:
        self.chunks = queue.Queue(STREAM_QUEUE)
        for data in first:
            self.chunks.put(data)
        self.exchange.pool.waker.call(self.exchange.stream_ready, self)

    def put(self, item: Any) -> None:
        """A stream's next item, waiting while the client is slow (never the loop)."""
        while not self.cancelled:
            try:
                self.chunks.put(item, timeout=0.5)  # (rechecks `cancelled`)
                self.exchange.pool.waker.call(self.exchange.stream_more)
                return
            except queue.Full:
                continue


class ThreadPool:
    """N daemon threads taking Tasks in arrival order.

    Each thread sleeps on a lock of its own, and idle threads wait on a stack: the
    last one to go idle is woken first (its memory is warm). Waking a thread costs
    two context switches at least, and with the GIL a thread woken while another
    runs Python code only waits, so threads are woken one at a time: the loop wakes
    one per loop turn if tasks wait, and a thread that takes a task while more wait
    wakes one more, unless one is already on its way. A thread whose app call
    blocks (I/O) lets the one it woke run, which wakes the next: blocking apps get
    every thread; a CPU-bound app's tasks are run by one or two threads, one after
    another, with few switches. (A Condition would take many more Python steps.)"""

    def __init__(self, threads: int, app: Callable[..., Any], waker: Waker,
                 loop: Any) -> None:
        self.app = app
        self.waker = waker
        self.loop = loop
        self.todo: collections.deque[Task] = collections.deque()
        self.idle: list[Any] = []  # the locks of sleeping threads (held; release wakes)
        self.woken: list[Any] = []  # those of threads woken and not yet running
        self.wake_due = False
        self.running: dict[int, Task] = {}
        for n in range(threads):
            lock = threading.Lock()
            lock.acquire()
            threading.Thread(target=self._work, args=(lock,), name=f"preforkd-app-{n}",
                             daemon=True).start()

    def waiting(self) -> int:
        return len(self.todo)

    def submit(self, task: Task) -> None:
        self.todo.append(task)
        if not self.wake_due:
            self.wake_due = True
            self.loop.call_soon(self._wake)  # (at the end of this loop turn)

    def _wake(self) -> None:
        self.wake_due = False
        if self.todo and not self.woken:
            self._wake_one()

    def _wake_one(self) -> None:
        try:
            lock = self.idle.pop()
        except IndexError:
            return  # none idle (another thread may have just taken the last one)
        self.woken.append(lock)
        lock.release()

    def _take(self, lock: Any) -> Task:
        # List and deque operations are atomic: the GIL is the only lock needed. But
        # another thread may act between two of them (hence the IndexErrors), and a
        # thread taken off `idle` by another must consume the release it is given.
        todo, idle, woken = self.todo, self.idle, self.woken
        while True:
            try:
                task = todo.popleft()
            except IndexError:
                pass
            else:
                if todo and idle and not woken:
                    self._wake_one()  # more to do, and no thread on its way: one more
                return task
            idle.append(lock)
            if todo:  # work came in before this thread was seen idle
                try:
                    idle.remove(lock)
                    continue
                except ValueError:
                    pass  # already woken: consume that release below
            lock.acquire()
            woken.remove(lock)

    def _work(self, lock: Any) -> None:
        me = threading.get_ident()
        running, monotonic = self.running, time.monotonic
        while True:
            task = self._take(lock)
            if task.cancelled:
                continue
            task.started, task.thread = monotonic(), me
            running[me] = task
            try:
                self._call(task)
            finally:
                del running[me]

    def _call(self, task: Task) -> None:
        exchange = task.exchange
        try:
            result = task.result = self.app(task.env, task.start_response)
            if task.wrote:
                self._pull(task, iter(result))
            elif type(result) is list:
                task.result = None
                self.waker.call(exchange.whole, task, b"".join(result))  # (one: no copy)
            elif type(result) is FileWrapper and result.sendfile_span() is not None:
                self.waker.call(exchange.file, task)
            else:
                # Two chunks ahead (or the end): a body of one chunk gets a Content-Length.
                it, ahead = iter(result), []
                while len(ahead) < 2 and (not ahead or ahead[-1] is not _END):
                    ahead.append(next(it, _END))
                task._open_stream(ahead)
                if ahead[-1] is _END:
                    self._close(task)
                else:
                    self._pull(task, it)
        except Exception as e:
            self._close(task)
            self.waker.call(exchange.failed, task, e)

    def _pull(self, task: Task, it: Any) -> None:
        """The rest of a stream, pulled here and queued for the loop."""
        try:
            for data in it:
                if task.cancelled:
                    break
                task.put(data)
            else:
                task.put(_END)
        except Exception as e:
            task.put(e)
        self._close(task)

    def _close(self, task: Task) -> None:
        result, task.result = task.result, None
        close_iterable(result)

    def report_overdue(self, limit: float, now: float) -> tuple[int, int]:
        """Log, once each, the calls running longer than `limit`, with their stack.
        Returns how many run that long now, and how many were logged now."""
        late = [t for t in list(self.running.values()) if now - t.started > limit]
        new = [t for t in late if not t.reported]
        frames = sys._current_frames() if new else {}
        for task in new:
            task.reported = True
            stack = ("".join(traceback.format_stack(frames[task.thread]))
                     if task.thread in frames else "")
            line = f"{task.req.method.decode()} {task.req.target.decode('latin-1')}"
            log.warning("event=request-timeout request=%r running=%.1fs\n%s", line,
                        now - task.started, stack)
        return len(late), len(new)


class QueuedStream(BodyStream):
    """The loop's side of a stream an app thread fills (see Task.put)."""

    __slots__ = ("task",)

    def __init__(self, driver: Any, task: Task) -> None:
        super().__init__(driver, iter(()))
        self.task = task

    def start(self, head: Callable[[], Any]) -> None:
        driver, chunks = self.driver, self.task.chunks
        resp = driver.new_framing(head())
        extra, transport = driver.server.extra_head, driver.transport
        ahead = [] if self.task.wrote else [chunks.get_nowait() for _ in range(
            min(2, chunks.qsize()))]
        if ahead and ahead[-1] is _END:  # the whole body is known: one or no chunk
            data = ahead[0] if len(ahead) == 2 else b""
            transport.write_later(resp.head(len(data), extra) + resp.frame(data) + resp.end())
            driver.finish()
            return
        transport.write_later(resp.head(-1, extra))
        for data in ahead:
            self._write(data)
        self.pull()

    def _write(self, item: Any) -> None:
        if isinstance(item, BaseException):
            raise item
        chunk = self.driver.framing.frame(item)
        if chunk:
            self.driver.transport.write(chunk)

    def pull(self) -> None:
        driver, chunks = self.driver, self.task.chunks
        transport = driver.transport
        while not (driver.paused or transport.is_closing()):
            try:
                item = chunks.get_nowait()
            except queue.Empty:
                return  # the thread's next put wakes us (stream_more)
            if item is _END:
                end = driver.framing.end()
                if end:
                    transport.write(end)
                driver.finish()
                return
            self._write(item)


class ThreadedExchange(WsgiExchange):
    __slots__ = ("pool", "task", "max_pending")

    def __init__(self, wsgi: ThreadedResponder, driver: Any) -> None:
        super().__init__(wsgi, driver)
        self.pool = wsgi.pool
        self.max_pending = wsgi.max_pending
        self.task: Task | None = None

    def respond(self, req: Request) -> None:
        driver, wsgi = self.driver, self.wsgi
        if self.pool.waiting() >= self.max_pending:
            driver.send_whole(BUSY, b"busy: try again\n")
            return
        line = wsgi.targets.get(req.target) or wsgi.environ.target(req.target)
        if req.headers is not self.env_headers:
            self.env_headers = req.headers
            self.env_template = self.connection_environ(req.headers)
        task = self.task = Task(self, wsgi.fill(self.env_template.copy(), line, req), req)
        self.pool.submit(task)

    def _current(self, task: Task) -> bool:
        """The task is still what this connection waits for (the client may be gone)."""
        return task is self.task and not task.cancelled and self.driver is not None

    def _plan(self, task: Task, send: Callable[[], None]) -> None:
        driver = self.driver
        try:
            if task.status is None:
                raise AppError("the app returned without calling start_response")
            send()
        except Exception as e:
            self.close_result()
            driver.fail(e)
        driver.proceed()

    def whole(self, task: Task, body: bytes) -> None:
        # (_plan, inline: this runs for most requests)
        if task is not self.task or task.cancelled or self.driver is None:
            return
        driver, wsgi, status = self.driver, self.wsgi, task.status
        try:
            if status is None:
                raise AppError("the app returned without calling start_response")
            if status is wsgi.last_status and task.headers == wsgi.last_headers:
                parts = wsgi.last_parts  # the app answered as last time (usual)
            else:
                parts = wsgi.head_for(status, task.headers)
            driver.send_whole(parts, body)
        except Exception as e:
            driver.fail(e)
        driver.proceed()

    def file(self, task: Task) -> None:
        if not self._current(task):
            close_iterable(task.result)
            return
        self.result, task.result = task.result, None  # closed once sent (close_result)
        self._plan(task, lambda: self.driver.send_file(
            self.wsgi.head_for(task.status, task.headers), *self.result.sendfile_span(),
            self.close_result))

    def failed(self, task: Task, e: Exception) -> None:
        if self._current(task):
            self.driver.fail(e)
            self.driver.proceed()

    def stream_ready(self, task: Task) -> None:
        if self._current(task):
            driver = self.driver
            driver.stream = QueuedStream(driver, task)
            driver.on_done = self._cancel
            self._plan(task, lambda: driver.stream.start(
                lambda: self.wsgi.head_for(task.status, task.headers)))

    def stream_more(self) -> None:
        driver = self.driver
        if driver is not None and type(driver.stream) is QueuedStream:
            try:
                driver.stream.pull()
            except Exception as e:
                driver.fail(e)
            driver.proceed()

    def _cancel(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancelled = True

    def close(self) -> None:
        self._cancel()
        super().close()


class ThreadedResponder(WsgiResponder):
    """Per worker: the app, its thread pool, and what inline WSGI shares."""

    def __init__(self, app: Callable[..., Any], environ: Any, loop: Any, threads: int,
                 max_pending: int) -> None:
        super().__init__(app, environ)
        self.pool = ThreadPool(threads, app, Waker(loop), loop)
        self.max_pending = max_pending

    def exchange(self, driver: Any) -> ThreadedExchange:
        return ThreadedExchange(self, driver)
