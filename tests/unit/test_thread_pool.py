"""The thread pool's hand-off (http/threaded.py): every task is run once, in arrival
order, blocking tasks get every thread, and no wake-up is lost between a thread
going idle and a task coming in."""

from __future__ import annotations

import threading
import time

from preforkd.http.threaded import Task, ThreadPool


class Turns:
    """The loop's side: call_soon runs at the end of the turn (`end_turn`)."""

    def __init__(self) -> None:
        self.soon: list = []

    def call_soon(self, fn) -> None:
        self.soon.append(fn)

    def end_turn(self) -> None:
        soon, self.soon = self.soon, []
        for fn in soon:
            fn()


class Results:
    """The Waker's side: what the threads hand back, and when."""

    def __init__(self) -> None:
        self.done: list = []
        self.all_in = threading.Event()
        self.expected = 0

    def call(self, fn, task, *args) -> None:
        self.done.append((task.env["n"], time.monotonic()))
        if len(self.done) >= self.expected:
            self.all_in.set()


class Exchange:
    def __init__(self, results: Results) -> None:
        self.whole = self.failed = results.call


def app(env, start_response):
    start_response("200 OK", [])
    if env["sleep"]:
        time.sleep(env["sleep"])
    return [b"x"]


def run(threads: int, bursts: list[list[float]], timeout: float = 10.0) -> Results:
    """Submit each burst in one loop turn; wait until every task is back."""
    results, loop = Results(), Turns()
    results.expected = sum(len(b) for b in bursts)
    pool = ThreadPool(threads, app, results, loop)
    exchange, n = Exchange(results), 0
    for burst in bursts:
        for sleep in burst:
            pool.submit(Task(exchange, {"n": n, "sleep": sleep}, None))
            n += 1
        loop.end_turn()
        time.sleep(0.0005 if n % 7 else 0)  # (threads go idle and come back, or not)
    assert results.all_in.wait(timeout), f"{len(results.done)} of {n} tasks came back"
    assert pool.waiting() == 0 and not pool.running
    return results


def test_quick_tasks_all_run_once_in_arrival_order_with_one_thread():
    results = run(1, [[0.0] * k for k in (1, 5, 40, 3, 200, 1, 1, 64)])
    assert [n for n, _ in results.done] == list(range(315))


def test_quick_tasks_all_run_once_whatever_the_threads():
    for threads in (2, 8, 32):
        bursts = [[0.0] * ((i * 37) % 50 + 1) for i in range(60)]
        results = run(threads, bursts)
        assert sorted(n for n, _ in results.done) == list(range(sum(map(len, bursts))))


def test_blocking_tasks_get_every_thread():
    t0 = time.monotonic()
    results = run(8, [[0.2] * 8])
    assert max(t for _, t in results.done) - t0 < 0.2 * 3  # side by side, not 1.6 s


def test_blocking_tasks_behind_quick_ones_still_spread():
    # A thread that ran quick tasks alone still wakes a second one for a slow one.
    t0 = time.monotonic()
    run(4, [[0.0] * 30 + [0.2] * 4])
    assert time.monotonic() - t0 < 0.2 * 3
