"""[[static]] mounts against a real preforkd: real files in a temporary directory,
real sockets (raw, so that every byte of a path goes out as written)."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import subprocess
import sys
import time

import pytest

from harness import env_for_server, wait_until

SECRET = b"TOP-SECRET-d41d8cd98f00b204"


@pytest.fixture
def site(tmp_path):
    """site/public (the root) and a secret right outside it."""
    base = tmp_path / "site"
    root = base / "public"
    (root / "css").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "empty-dir").mkdir()
    (root / "a.txt").write_bytes(b"hello, static\n")
    (root / "css" / "app.css").write_bytes(b"body { color: red }\n" * 50)
    (root / "css" / "app.css.gz").write_bytes(gzip.compress((root / "css" / "app.css")
                                                            .read_bytes()))
    (root / "css" / "app.css.br").write_bytes(b"pretend-brotli")
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>\n")
    (root / "index.html").write_bytes(b"<h1>home</h1>\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 4)
    (root / "empty.txt").write_bytes(b"")
    (root / "caf\u00e9.txt").write_bytes(b"coffee\n")
    (root / ".env").write_bytes(SECRET)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(SECRET)
    (base / "secret.txt").write_bytes(SECRET)
    (root / "escape").symlink_to(base / "secret.txt")
    (root / "escape-dir").symlink_to(base)
    (root / "inside").symlink_to(root / "a.txt")
    return root


def start(server, root, *tables: str, workers: int = 1, args: tuple[str, ...] = ()):
    mounts = tables or (f'prefix = "/static/"\nroot = "{root}"\nmax_age = 600\n',)
    config = "".join(f"[[static]]\n{t}\n" for t in mounts)
    srv = server("-w", str(workers), "--app", "wsgiapps:app", *args, config=config)
    srv.pids_ready = srv.wait_ready(workers)
    return srv


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def read_response(s: socket.socket, head_only: bool = False) -> Response:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"{name} twice"
        headers[name.lower()] = value.strip()
    n = 0 if head_only or status == 304 else int(headers.get("content-length", 0))
    while len(body) < n:
        chunk = s.recv(65536)
        assert chunk, body
        body += chunk
    assert len(body) == n, (status, headers, body)
    return Response(status, headers, body)


def get(srv, path: str, method: str = "GET", **fields: str) -> Response:
    lines = [f"{method} {path} HTTP/1.1", "Host: x"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in fields.items()]
    with socket.create_connection(srv.address, timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return read_response(s, method == "HEAD")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("VmRSS:")).split()[1])


# -- what a file response carries ------------------------------------------------------------

def test_a_file_with_its_validators_and_the_app_beside_it(server, site):
    srv = start(server, site)
    with socket.create_connection(srv.address, timeout=10) as s:  # one kept-alive connection
        for path in ("/static/a.txt", "/", "/static/a.txt", "/healthz", "/static/css/app.css"):
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            r = read_response(s)
            assert r.status == 200
            if path == "/":
                assert r.body == b"Hello, World!"
    r = get(srv, "/static/a.txt")
    st = os.stat(site / "a.txt")
    assert r.body == b"hello, static\n"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["content-length"] == "14"
    assert r.headers["etag"] == f'"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ino:x}"'
    assert r.headers["last-modified"] == time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                       time.gmtime(int(st.st_mtime)))
    assert r.headers["cache-control"] == "max-age=600"
    assert r.headers["accept-ranges"] == "bytes"
    assert "vary" not in r.headers and "content-encoding" not in r.headers
    head = get(srv, "/static/a.txt", "HEAD")
    assert head.body == b"" and head.headers == {**r.headers, "date": head.headers["date"]}
    assert get(srv, "/static/a.txt?v=3").body == b"hello, static\n"
    assert get(srv, "/static/caf%C3%A9.txt").body == b"coffee\n"
    assert get(srv, "/static/empty.txt").headers["content-length"] == "0"
    assert get(srv, "/static/data.bin").headers["content-type"] == "application/octet-stream"
    assert get(srv, "/static/inside").body == b"hello, static\n"  # a symlink inside the root
    assert get(srv, "http://x/static/a.txt").body == b"hello, static\n"  # absolute-form


def test_a_large_file_arrives_whole(server, site):
    data = os.urandom(5 * 1024 * 1024 + 17)
    (site / "big.bin").write_bytes(data)
    srv = start(server, site)
    r = get(srv, "/static/big.bin")
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(data).digest()
    r = get(srv, "/static/big.bin", range="bytes=1000000-3999999")
    assert r.status == 206 and r.body == data[1000000:4000000]


def test_files_around_the_read_or_sendfile_size_arrive_whole(server, site):
    # Up to bodies.SMALL_FILE a span is read and sent with its head; past it, sendfile.
    from preforkd.http.bodies import SMALL_FILE

    data = os.urandom(3 * SMALL_FILE)
    for size in (SMALL_FILE - 1, SMALL_FILE, SMALL_FILE + 1):
        (site / f"f{size}.bin").write_bytes(data[:size])
    srv = start(server, site)
    for size in (SMALL_FILE - 1, SMALL_FILE, SMALL_FILE + 1):
        r = get(srv, f"/static/f{size}.bin")
        assert r.status == 200 and r.body == data[:size], size
    (site / "big.bin").write_bytes(data)
    for first, last in ((5, 5), (SMALL_FILE + 3, 2 * SMALL_FILE + 2),
                        (SMALL_FILE + 3, 2 * SMALL_FILE + 3)):
        r = get(srv, "/static/big.bin", range=f"bytes={first}-{last}")
        assert r.status == 206 and r.body == data[first:last + 1], (first, last)


def test_a_directory_moved_out_and_replaced_by_a_symlink_is_not_served(server, site):
    # Every request looks again: a file served a moment ago under docs/ is refused
    # once docs/ is a symlink leading out of the root, or to a hidden name.
    srv = start(server, site)
    assert get(srv, "/static/docs/index.html").status == 200
    outside = site.parent / "moved-docs"
    os.rename(site / "docs", outside)
    (site / "docs").symlink_to(outside)
    r = get(srv, "/static/docs/index.html")
    assert r.status == 404 and b"docs" not in r.body
    (site / "docs").unlink()
    os.rename(outside, site / ".docs")
    (site / "docs").symlink_to(".docs")
    assert get(srv, "/static/docs/index.html").status == 404
    (site / "docs").unlink()
    os.rename(site / ".docs", site / "docs")
    assert get(srv, "/static/docs/index.html").status == 200


def test_methods_missing_files_directories(server, site):
    srv = start(server, site, f'prefix = "/static/"\nroot = "{site}"',
                f'prefix = "/bare/"\nroot = "{site}"\nindex = ""')
    r = get(srv, "/static/a.txt", "POST", content_length="0")
    assert r.status == 405 and r.headers["allow"] == "GET, HEAD"
    assert get(srv, "/static/nope.txt", "DELETE").status == 405
    assert get(srv, "/static/nope.txt").status == 404
    assert get(srv, "/static/nope.txt", "HEAD").status == 404
    assert get(srv, "/static/a.txt/x").status == 404
    assert get(srv, "/static/docs/").body == b"<h1>docs</h1>\n"
    assert get(srv, "/static/").body == b"<h1>home</h1>\n"
    r = get(srv, "/static/docs?x=1")
    assert r.status == 301 and r.headers["location"] == "/static/docs/?x=1"
    assert get(srv, "/static//docs").headers["location"] == "/static/docs/"
    assert get(srv, "/static/empty-dir/").status == 404  # no index: no listing
    assert get(srv, "/static/empty-dir").status == 404
    assert get(srv, "/bare/docs/").status == 404  # index = ""
    assert get(srv, "/bare/a.txt").status == 200
    assert get(srv, "/staticx/a.txt").body == b"Hello, World!"  # not under the prefix


def test_fallthrough_sends_what_is_not_a_file_to_the_app(server, site):
    srv = start(server, site, f'prefix = "/"\nroot = "{site}"\nfallthrough = true')
    assert get(srv, "/a.txt").body == b"hello, static\n"
    assert get(srv, "/").body == b"<h1>home</h1>\n"
    assert get(srv, "/where").body.startswith(b"127.0.0.1")  # the app's
    assert get(srv, "/.env").body == b"Hello, World!"  # hidden: not a file, the app's
    assert get(srv, "/empty-dir/").body == b"Hello, World!"
    with socket.create_connection(srv.address, timeout=10) as s:  # POST goes to the app
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        assert read_response(s).body == b"abc"
        s.sendall(b"POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert read_response(s).body == b"Hello, World!"
    assert get(srv, "/../x").status == 400  # a climb is refused, not handed on


# -- conditional requests and ranges ------------------------------------------------------

def test_conditional_requests(server, site):
    srv = start(server, site)
    r = get(srv, "/static/a.txt")
    etag, lm = r.headers["etag"], r.headers["last-modified"]
    for fields in ({"if_none_match": etag}, {"if_none_match": f'"x", W/{etag}'},
                   {"if_none_match": "*"}, {"if_modified_since": lm}):
        r304 = get(srv, "/static/a.txt", **fields)
        assert r304.status == 304 and r304.body == b"", fields
        assert r304.headers["etag"] == etag and r304.headers["last-modified"] == lm
        assert r304.headers["cache-control"] == "max-age=600"
        assert "content-length" not in r304.headers
    assert get(srv, "/static/a.txt", "HEAD", if_none_match=etag).status == 304
    assert get(srv, "/static/a.txt", if_none_match='"other"').status == 200
    assert get(srv, "/static/a.txt", if_modified_since="Sun, 06 Nov 1994 08:49:37 GMT"
               ).status == 200
    assert get(srv, "/static/a.txt", if_match=etag).status == 200
    r412 = get(srv, "/static/a.txt", if_match='"other"')
    assert r412.status == 412 and "etag" not in r412.headers
    assert get(srv, "/static/a.txt", if_unmodified_since="Sun, 06 Nov 1994 08:49:37 GMT"
               ).status == 412
    assert get(srv, "/static/a.txt", if_match='"other"', if_none_match=etag).status == 412
    os.utime(site / "a.txt", ns=(1, 1))  # changed: the old validators no longer match
    assert get(srv, "/static/a.txt", if_none_match=etag).status == 200


def test_ranges(server, site):
    srv = start(server, site)
    data = (site / "data.bin").read_bytes()
    etag = get(srv, "/static/data.bin").headers["etag"]
    for spec, first, last in (("bytes=0-0", 0, 0), ("bytes=10-19", 10, 19),
                              ("bytes=1000-", 1000, 1023), ("bytes=-24", 1000, 1023),
                              ("bytes=1000-5000", 1000, 1023)):
        r = get(srv, "/static/data.bin", range=spec)
        assert r.status == 206, spec
        assert r.headers["content-range"] == f"bytes {first}-{last}/1024"
        assert r.body == data[first:last + 1]
        assert r.headers["etag"] == etag
    r = get(srv, "/static/data.bin", range="bytes=1024-")
    assert r.status == 416 and r.headers["content-range"] == "bytes */1024"
    for spec in ("bytes=0-1,5-6", "bytes=5-2", "bytes=x", "lines=1-2"):
        r = get(srv, "/static/data.bin", range=spec)
        assert r.status == 200 and r.body == data, spec
    assert get(srv, "/static/data.bin", range="bytes=0-9", if_range=etag).status == 206
    assert get(srv, "/static/data.bin", range="bytes=0-9", if_range='"stale"').status == 200
    assert get(srv, "/static/data.bin", range="bytes=0-9", if_range="W/" + etag).status == 200
    lm = get(srv, "/static/data.bin").headers["last-modified"]
    assert get(srv, "/static/data.bin", range="bytes=0-9", if_range=lm).status == 206
    assert get(srv, "/static/data.bin", "HEAD", range="bytes=0-9").status == 200
    assert get(srv, "/static/empty.txt", range="bytes=0-").status == 416


def test_precompressed_siblings(server, site):
    srv = start(server, site, f'prefix = "/static/"\nroot = "{site}"\nprecompressed = true')
    plain = get(srv, "/static/css/app.css")
    assert plain.body == (site / "css" / "app.css").read_bytes()
    assert "content-encoding" not in plain.headers
    gz = get(srv, "/static/css/app.css", accept_encoding="gzip, deflate")
    assert gz.headers["content-encoding"] == "gzip"
    assert gzip.decompress(gz.body) == plain.body
    assert gz.headers["content-type"] == "text/css; charset=utf-8"
    br = get(srv, "/static/css/app.css", accept_encoding="gzip, deflate, br")
    assert br.headers["content-encoding"] == "br" and br.body == b"pretend-brotli"
    assert len({plain.headers["etag"], gz.headers["etag"], br.headers["etag"]}) == 3
    assert get(srv, "/static/css/app.css", accept_encoding="br;q=0, gzip"
               ).headers["content-encoding"] == "gzip"
    assert "content-encoding" not in get(srv, "/static/css/app.css",
                                         accept_encoding="br;q=0, gzip;q=0").headers
    assert "content-encoding" not in get(srv, "/static/a.txt", accept_encoding="br").headers
    r304 = get(srv, "/static/css/app.css", accept_encoding="gzip", if_none_match=gz.headers["etag"])
    assert r304.status == 304
    assert get(srv, "/static/css/app.css", accept_encoding="br",
               if_none_match=gz.headers["etag"]).status == 200  # another representation
    for r in (plain, gz, br, r304, get(srv, "/static/nope"), get(srv, "/static/a.txt", "POST"),
              get(srv, "/static/css/app.css", range="bytes=99999-")):
        assert r.headers["vary"] == "accept-encoding", r.status
    r = get(srv, "/static/css/app.css", accept_encoding="gzip", range="bytes=0-1")
    assert r.status == 206 and r.body == gz.body[:2]


# -- no way out of the root --------------------------------------------------------------------

TRAVERSALS = [
    "/static/../secret.txt", "/static/..%2fsecret.txt", "/static/..%2Fsecret.txt",
    "/static/%2e%2e/secret.txt", "/static/%2E%2E/secret.txt", "/static/%2e%2e%2fsecret.txt",
    "/static/.%2e/secret.txt", "/static/%2e./secret.txt", "/static/%252e%252e/secret.txt",
    "/static/%252e%252e%252fsecret.txt", "/static/..%252fsecret.txt",
    "/static/..%5csecret.txt", "/static/..\\secret.txt", "/static/%5c..%5csecret.txt",
    "/static/%c0%ae%c0%ae/secret.txt", "/static/%c0%ae%c0%ae%c0%afsecret.txt",
    "/static/%e0%80%ae%e0%80%ae/secret.txt", "/static/%c1%9c..%c1%9csecret.txt",
    "/static/..%c0%afsecret.txt", "/static/%uff0e%uff0e/secret.txt",
    "/static/css/../../secret.txt", "/static/css/%2e%2e/%2e%2e/secret.txt",
    "/static/css/..%2f..%2fsecret.txt", "/static/./../secret.txt",
    "/static/..;/secret.txt", "/static/..%00/secret.txt", "/static/secret.txt%00.txt",
    "/static/%00../secret.txt", "/static//../secret.txt", "/static///..//secret.txt",
    "/static/%2f..%2fsecret.txt", "/static/%2fetc%2fpasswd", "/static//etc/passwd",
    "/static/....//secret.txt", "/static/..../secret.txt", "/static/.../secret.txt",
    "/static/escape", "/static/escape-dir/secret.txt", "/static/escape-dir/public/.env",
    "/static/.env", "/static/.git/config", "/static/%2eenv", "/static/%2egit/config",
    "/static/css/../.env", "/static/a.txt/../../secret.txt", "/static/..",
    "/static/%2e%2e", "/static/..%2f", "/static/%2e%2e%5c%2e%2e%5csecret.txt",
    "/static/\u2025/secret.txt", "/static/%e2%80%a5/secret.txt",
    "/static/%ef%bc%8e%ef%bc%8e/secret.txt", "http://x/static/../secret.txt",
    "/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
]


@pytest.mark.parametrize("follow", [False, True])
def test_no_way_out_of_the_root(server, site, follow):
    """Every spelling is refused (400 or 404; the parser may refuse first), and the
    secret never appears."""
    assert len(TRAVERSALS) >= 40
    srv = start(server, site, f'prefix = "/static/"\nroot = "{site}"\n'
                f"follow_symlinks = {'true' if follow else 'false'}")
    for path in TRAVERSALS:
        with socket.create_connection(srv.address, timeout=10) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data:
                    head, _, body = data.partition(b"\r\n\r\n")
                    n = int(head.lower().split(b"content-length: ")[1].split(b"\r")[0])
                    if len(body) >= n:
                        break
        status = int(data.split()[1])
        if follow and path in ("/static/escape", "/static/escape-dir/secret.txt"):
            assert status == 200, path  # follow_symlinks: the link's target is served
            continue
        assert SECRET not in data, path
        assert status in (400, 404), (path, data[:200])
    # (through a symlink that leaves, a file that is inside after all is the root's)
    assert get(srv, "/static/escape-dir/public/a.txt").status == 200


# -- resources ------------------------------------------------------------------------------

def test_file_descriptors_are_closed_on_every_path(server, site):
    (site / "big.bin").write_bytes(b"\0" * (8 * 1024 * 1024))
    srv = start(server, site, f'prefix = "/static/"\nroot = "{site}"\nprecompressed = true')
    (worker,) = srv.pids_ready
    get(srv, "/static/a.txt")
    time.sleep(0.2)
    before = fds(worker)
    for i in range(30):
        assert get(srv, "/static/a.txt").status == 200
        assert get(srv, "/static/a.txt", "HEAD").status == 200
        assert get(srv, "/static/css/app.css", accept_encoding="gzip").status == 200
        assert get(srv, "/static/a.txt", if_none_match="*").status == 304
        assert get(srv, "/static/a.txt", if_match='"x"').status == 412
        assert get(srv, "/static/a.txt", range="bytes=99-").status == 416
        assert get(srv, "/static/docs").status == 301
        assert get(srv, "/static/empty-dir/").status == 404
        assert get(srv, "/static/escape").status == 404
        with socket.create_connection(srv.address, timeout=10) as s:  # gone mid-file
            s.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(1000)
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST
    wait_until(lambda: fds(worker) == before, timeout=10, what=f"{before} fds in the worker "
               f"(has {fds(worker)})")


@pytest.mark.slow
def test_a_100_mb_file_to_50_slow_readers_keeps_rss_flat(server, site):
    size = 100 * 1024 * 1024
    with open(site / "huge.bin", "wb") as f:
        f.truncate(size)  # sparse: fast to make, read from the page cache's zero pages
    srv = start(server, site)
    (worker,) = srv.pids_ready
    for _ in range(20):
        get(srv, "/static/a.txt")
    idle = rss_kib(worker)
    clients = []
    for _ in range(50):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.connect(srv.address)
        s.settimeout(10)
        s.sendall(b"GET /static/huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        clients.append(s)
    got = [0] * len(clients)
    peak = idle
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # each reads a little now and then
        for i, s in enumerate(clients):
            got[i] += len(s.recv(8192))
        peak = max(peak, rss_kib(worker))
        time.sleep(0.02)
    assert all(n > 0 for n in got) and all(n < size for n in got)
    with socket.create_connection(srv.address, timeout=30) as s:  # and one reads it all
        s.sendall(b"GET /static/huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        received = len(data.partition(b"\r\n\r\n")[2])
        while received < size:
            chunk = s.recv(1 << 20)
            assert chunk
            received += len(chunk)
            if received % (8 << 20) < (1 << 20):
                peak = max(peak, rss_kib(worker))
        assert received == size
    for s in clients:
        s.close()
    print(f"worker RSS idle {idle} KiB, peak {peak} KiB")
    assert peak - idle < 10 * 1024


def test_check_reports_a_missing_root(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('bind = "127.0.0.1:0"\n[[static]]\nprefix = "/s/"\nroot = "nowhere"\n')
    r = subprocess.run([sys.executable, "-m", "preforkd", "check", "-c", str(conf), "--pid",
                        str(tmp_path / "p.pid")], capture_output=True, text=True,
                       env=env_for_server(), cwd=tmp_path)
    assert r.returncode == 1
    assert f"static[0].root: {tmp_path / 'nowhere'}: no such directory" in r.stderr
    (tmp_path / "nowhere").mkdir()
    r = subprocess.run([sys.executable, "-m", "preforkd", "check", "-c", str(conf), "--pid",
                        str(tmp_path / "p.pid")], capture_output=True, text=True,
                       env=env_for_server(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
