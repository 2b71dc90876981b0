"""Static files, served by the worker before the app, as nginx serves them.

Each [[static]] table of the config is a Mount: a URL prefix and a root
directory. StaticResponder wraps the app's responder (http/responder.py): its
exchange looks at a request's target, serves it from disk when it is under a
mount's prefix (the longest prefix wins, as nginx's locations), and hands
anything else to the app's exchange unchanged. The server installs the
wrapper only when there is a mount: without one, requests pay nothing.

A file goes out with os.sendfile through driver.send_file (zero copy, never
read into memory; the transport resumes it as the client reads). Its fd is
closed by the response's done callback, which the driver runs on every path:
sent, client gone, write timeout, error. What a response carries:
Content-Type (text types with `; charset=utf-8`), Content-Length,
Last-Modified, a strong ETag (size, mtime_ns, inode; one per content coding),
Accept-Ranges, Cache-Control when `max_age` is set, and with `precompressed`
a `.br` / `.gz` sibling when Accept-Encoding takes it, with Content-Encoding
and `Vary: Accept-Encoding` on every response of that mount. Conditional
requests and ranges follow RFC 9110 (http/conditional.py); how a path is
kept inside the root is http/static_path.py.

GET and HEAD only: another method gets 405 with Allow. A file that is not
there gets 404, or, with `fallthrough`, goes to the app (try_files $uri @app).
"""

from __future__ import annotations

import mimetypes
import os
import stat
from functools import partial
from typing import Any
from urllib.parse import quote

from preforkd import logs
from preforkd.config import Config, StaticTable
from preforkd.http.conditional import (
    UNSATISFIABLE,
    etag_for,
    http_date,
    if_range_holds,
    parse_range,
    precondition,
)
from preforkd.http.conditional import choose_coding as _choose
from preforkd.http.connection import Request
from preforkd.http.response import HeadParts
from preforkd.http.static_path import (
    open_under,
    root_prefix,
    split_path,
    symlink_free,
    url_path,
)

log = logs.log

GET_HEAD = (b"GET", b"HEAD")
SUFFIXES = {"br": ".br", "gzip": ".gz"}
CODINGS = ("br", "gzip")  # preference on equal q: brotli is the smaller
STATUS_LINES = {200: b"HTTP/1.1 200 OK\r\n", 206: b"HTTP/1.1 206 Partial Content\r\n",
                301: b"HTTP/1.1 301 Moved Permanently\r\n",
                304: b"HTTP/1.1 304 Not Modified\r\n", 400: b"HTTP/1.1 400 Bad Request\r\n",
                403: b"HTTP/1.1 403 Forbidden\r\n", 404: b"HTTP/1.1 404 Not Found\r\n",
                405: b"HTTP/1.1 405 Method Not Allowed\r\n",
                412: b"HTTP/1.1 412 Precondition Failed\r\n",
                416: b"HTTP/1.1 416 Range Not Satisfiable\r\n"}
# The request fields a file response looks at (names lower-cased; repeats joined).
FIELDS = frozenset((b"if-match", b"if-none-match", b"if-modified-since",
                    b"if-unmodified-since", b"range", b"if-range", b"accept-encoding"))
_TEXTY = frozenset(("application/javascript", "application/json", "application/xml",
                    "application/manifest+json", "image/svg+xml"))
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json",
          ".map": "application/json", ".wasm": "application/wasm", ".webp": "image/webp",
          ".woff": "font/woff", ".woff2": "font/woff2", ".gz": "application/gzip",
          ".br": "application/octet-stream", ".webmanifest": "application/manifest+json"}
_type_cache: dict[str, bytes] = {}


def content_type(name: str) -> bytes:
    """Content-Type by the file name's extension (mimetypes, a few modern types
    pinned); text types say they are UTF-8."""
    ext = os.path.splitext(name)[1].lower()
    line = _type_cache.get(ext)
    if line is None:
        ctype = _TYPES.get(ext) or (ext and mimetypes.guess_type("x" + ext)[0])
        ctype = ctype or "application/octet-stream"
        if ctype.startswith("text/") or ctype in _TEXTY:
            ctype += "; charset=utf-8"
        line = b"content-type: %s\r\n" % ctype.encode("latin-1")
        if len(_type_cache) < 1000:
            _type_cache[ext] = line
    return line


def request_fields(req: Request) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    for name, value in req.headers:
        lname = name.lower()
        if lname in FIELDS:
            old = fields.get(lname)
            value = value.rstrip(b" \t")
            fields[lname] = value if old is None else old + b", " + value
    return fields


class Mount:
    """One [[static]] table, ready to serve: the prefix as bytes, the heads that
    never change, the root's real path (for the symlink check)."""

    def __init__(self, table: StaticTable) -> None:
        self.table = table
        self.prefix = table.prefix.encode("ascii")
        self.root = table.root.rstrip("/") or "/"
        self.root_prefix = root_prefix(self.root)
        self.index = table.index
        self.follow = table.follow_symlinks
        # (a root reached through a symlink, as a deploy's `current`, always opens
        # with a look at where it went: see static_path.open_under)
        self.symlink_free = not self.follow and symlink_free(os.path.abspath(self.root))
        self.fallthrough = table.fallthrough
        self.codings = CODINGS if table.precompressed else ()
        self.vary = b"vary: accept-encoding\r\n" if table.precompressed else b""
        cache = (b"cache-control: max-age=%d\r\n" % table.max_age
                 if table.max_age is not None else b"")
        self.common = cache + self.vary  # on 200, 206 and 304
        self.errors = {code: self.plain(code) for code in (400, 403, 404, 405, 412)}

    def plain(self, code: int, extra: bytes = b"") -> tuple[HeadParts, bytes]:
        """An answer with a short text body (kept alive: these are no errors of the
        connection)."""
        line = STATUS_LINES[code]
        if code == 405:
            extra += b"allow: GET, HEAD\r\n"
        head = line + b"content-type: text/plain; charset=utf-8\r\n" + self.vary + extra
        return HeadParts(head, -1, False, code), line[9:-2] + b"\n"

    # -- the file system ------------------------------------------------------------
    def open(self, path: str) -> tuple[int, os.stat_result] | int:
        found = open_under(path, self.root_prefix, self.follow, self.symlink_free)
        if found == -1:
            # Outside the root: or the root is a symlink that was switched (a deploy)
            # since we took its real path. Take it again; outside is outside.
            fresh = root_prefix(self.root)
            if fresh != self.root_prefix:
                self.root_prefix = fresh
                found = open_under(path, fresh, self.follow)
            if found == -1:
                return 404
        return found

    def find(self, names: list[str], slash: bool) -> tuple[int, os.stat_result, str] | int:
        """The file `names` ask for, opened: (fd, stat, path); a directory's index
        file; 301 for a directory with an index asked without its "/"; or a status."""
        path = self.root + "/" + "/".join(names) if names else self.root
        found = self.open(path)
        if type(found) is int:
            return found
        fd, st = found
        if not stat.S_ISDIR(st.st_mode):
            return fd, st, path
        os.close(fd)
        if not self.index:
            return 404  # no listing, ever
        path = path.rstrip("/") + "/" + self.index
        found = self.open(path)
        if type(found) is int:
            return found
        fd, st = found
        if stat.S_ISDIR(st.st_mode) or not slash:
            os.close(fd)
            return 404 if stat.S_ISDIR(st.st_mode) else 301
        return fd, st, path

    def representation(self, fd: int, st: os.stat_result, path: str,
                       accept: bytes | None) -> tuple[int, os.stat_result, str]:
        """The precompressed sibling the client takes best, if there is one: (fd,
        stat, coding); else the file itself, coding ""."""
        available = self.codings
        while available:
            coding = _choose(accept, available)
            if not coding:
                break
            found = self.open(path + SUFFIXES[coding])
            if type(found) is not int:
                if stat.S_ISREG(found[1].st_mode):
                    os.close(fd)
                    return found[0], found[1], coding
                os.close(found[0])
            available = tuple(c for c in available if c != coding)
        return fd, st, ""

    # -- answers --------------------------------------------------------------------
    def serve(self, driver: Any, req: Request) -> bool:
        """Answer a request under this mount; False: the app's after all (fallthrough:
        a file that is not there, and any method but GET and HEAD)."""
        if req.method not in GET_HEAD:
            if self.fallthrough:
                return False
            driver.send_whole(*self.errors[405])
            return True
        path = url_path(req.target)
        names = split_path(path[len(self.prefix):])
        if type(names) is int:
            if names == 404 and self.fallthrough:
                return False
            driver.send_whole(*self.errors[names])
            return True
        found = self.find(names, path[-1:] == b"/")
        if type(found) is int:
            if found == 404 and self.fallthrough:
                return False
            if found == 301:
                driver.send_whole(*self.redirect(names, req.target))
            else:
                driver.send_whole(*self.errors[found])
            return True
        self.send(driver, req, *found)
        return True

    def redirect(self, names: list[str], target: bytes) -> tuple[HeadParts, bytes]:
        """To the directory with its "/" (the location rebuilt from the checked names,
        so it can only point inside this mount)."""
        location = self.table.prefix + "".join(quote(n) + "/" for n in names)
        query = target.partition(b"?")[2]
        loc = location.encode("ascii") + (b"?" + query if query else b"")
        return self.plain(301, b"location: " + loc + b"\r\n")

    def send(self, driver: Any, req: Request, fd: int, st: os.stat_result,
             path: str) -> None:
        """The file (or its range, or a 304/412/416 instead), fd closed once sent."""
        try:
            fields = request_fields(req)
            fd, st, coding = self.representation(fd, st, path, fields.get(b"accept-encoding"))
            answer = self.file_head(req.method, fields, st, coding, path)
        except BaseException:
            os.close(fd)
            raise
        if len(answer) == 2:  # (head, body): no file after all
            os.close(fd)
            driver.send_whole(*answer)
            return
        parts, offset, count = answer
        driver.send_file(parts, fd, offset, count, partial(os.close, fd))

    def file_head(self, method: bytes, fields: dict[bytes, bytes], st: os.stat_result,
                  coding: str, name: str) -> tuple[HeadParts, int, int] | tuple[HeadParts, bytes]:
        """(head, offset, count) of what to send from the file, or a whole answer
        without it (304, 412, 416)."""
        size, last_modified = st.st_size, int(st.st_mtime)
        etag = etag_for(size, st.st_mtime_ns, st.st_ino, coding)
        validators = b"last-modified: %s\r\netag: %s\r\n" % (
            http_date(last_modified).encode(), etag.encode())
        status = precondition(method, fields.get(b"if-match"),
                              fields.get(b"if-unmodified-since"), fields.get(b"if-none-match"),
                              fields.get(b"if-modified-since"), etag, last_modified)
        if status == 304:
            return HeadParts(STATUS_LINES[304] + validators + self.common, -1, False, 304), b""
        if status:
            return self.errors[status]
        head = content_type(name) + validators + b"accept-ranges: bytes\r\n" + self.common
        if coding:
            head += b"content-encoding: %s\r\n" % coding.encode()
        asked = fields.get(b"range")
        if asked is not None and method == b"GET":
            if_range = fields.get(b"if-range")
            span = (parse_range(asked, size)
                    if if_range is None or if_range_holds(if_range, etag, last_modified)
                    else None)
            if span == UNSATISFIABLE:
                return self.plain(416, b"content-range: bytes */%d\r\n" % size)
            if span is not None:
                first, last = span
                head = (STATUS_LINES[206] + head
                        + b"content-range: bytes %d-%d/%d\r\n" % (first, last, size))
                return HeadParts(head, -1, False, 206), first, last - first + 1
        return HeadParts(STATUS_LINES[200] + head, -1, False, 200), 0, size


class StaticResponder:
    """Wraps the app's responder: mounts first, the app for everything else."""

    def __init__(self, app: Any, tables: tuple[StaticTable, ...]) -> None:
        self.app = app
        self.mounts = sorted((Mount(t) for t in tables), key=lambda m: -len(m.prefix))
        for m in self.mounts:
            if not os.path.isdir(m.root):
                log.warning("event=static-root-missing prefix=%s root=%s (404 until it "
                            "exists)", m.table.prefix, m.root)

    def exchange(self, driver: Any) -> StaticExchange:
        return StaticExchange(self.mounts, self.app.exchange(driver), driver)

    def match(self, path: bytes) -> Mount | None:
        for mount in self.mounts:
            if path.startswith(mount.prefix):
                return mount
        return None


class StaticExchange:
    __slots__ = ("mounts", "app", "driver")

    def __init__(self, mounts: list[Mount], app: Any, driver: Any) -> None:
        self.mounts = mounts
        self.app = app  # the app's exchange for this connection
        self.driver = driver

    def respond(self, req: Request) -> None:
        target = req.target
        if target[:1] != b"/":
            target = url_path(target)  # absolute-form: its path decides
        for mount in self.mounts:
            if target.startswith(mount.prefix):
                try:
                    if mount.serve(self.driver, req):
                        return
                except Exception as e:
                    self.driver.fail(e)
                    return
                break
        self.app.respond(req)

    def trim(self) -> None:
        self.app.trim()

    def close(self) -> None:
        self.app.close()
        self.driver = None


def missing_roots(config: Config) -> list[str]:
    """What `preforkd check` reports: [[static]] roots that are not directories."""
    return [f"static[{i}].root: {t.root}: no such directory"
            for i, t in enumerate(config.static) if not os.path.isdir(t.root)]


def with_mounts(responder: Any, config: Config) -> Any:
    """The responder a server uses: wrapped only when there is a mount."""
    return StaticResponder(responder, config.static) if config.static else responder
