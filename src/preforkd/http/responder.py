"""The seam between the connection driver and whatever produces responses.

The driver (http/driver.py) parses, keeps order and decides keep-alive; it
does not know what an application is. For each connection it asks the
worker's responder for an exchange (`responder.exchange(driver)`), and hands
that exchange each request the router did not answer (`exchange.respond(req)`).

An exchange answers with one response plan, by calling one of the driver's:

- `send_whole(parts, body)`      head + the whole body (the fast path);
- `send_stream(it, head, done)`  an iterator of body chunks, pulled only while
                                 the client reads (`head()` gives the HeadParts
                                 after the first chunk was pulled);
- `send_file(parts, fd, offset, count, done)`  a file span, sent with sendfile;
- `write_body(head, data)`       an unbuffered piece of a body of unknown length
                                 (WSGI's write()), before any of the above;
- `fail(exc)`                    it could not answer: a 500, or an abort if a head
                                 already went out.

Now or later: a synchronous exchange (inline WSGI) calls one of them before
`respond` returns. One that answers later (a thread pool, an asyncio app)
returns at once, calls the plan from the loop's thread when it is ready, then
`driver.proceed()` so the requests pipelined behind it run. `done` callbacks
run once the response is fully handed over, fails, or the client goes away:
that is where an app's iterable is closed.

A driver calls `exchange.trim()` when its connection goes idle for a while
(drop caches the next request can rebuild) and `exchange.close()` when the
connection is gone.
"""

from __future__ import annotations

from typing import Any, Protocol

from preforkd.http.connection import Request


class Exchange(Protocol):
    def respond(self, req: Request) -> None: ...

    def trim(self) -> None: ...

    def close(self) -> None: ...


class Responder(Protocol):
    def exchange(self, driver: Any) -> Exchange: ...
