"""The static files' rules as pure functions: conditional requests (RFC 9110 §13),
ranges (§14), content codings (§12.5.3), and how a URL path becomes names under a
root (http/static_path.py)."""

from __future__ import annotations

import os

import pytest

from preforkd.http.conditional import (
    UNSATISFIABLE,
    choose_coding,
    etag_for,
    http_date,
    if_range_holds,
    parse_http_date,
    parse_range,
    precondition,
)
from preforkd.http.static_path import (
    open_under,
    plain_open,
    root_prefix,
    split_path,
    symlink_free,
    url_path,
)

T = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT
DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"
BEFORE = b"Sun, 06 Nov 1994 08:49:36 GMT"
AFTER = b"Sun, 06 Nov 1994 08:49:38 GMT"
ETAG = '"a-b-c"'


# -- dates and validators ---------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    (DATE, T),
    (b"Sunday, 06-Nov-94 08:49:37 GMT", T),  # rfc850, obsolete but accepted
    (b"Sun Nov  6 08:49:37 1994", T),  # asctime
    (b"  Sun, 06 Nov 1994 08:49:37 GMT ", T),
    (b"Sun, 06 Nov 1994 08:49:37 +0000", None),
    (b"06 Nov 1994 08:49:37 GMT", None),
    (b"Sun, 06 Nov 1994 08:49 GMT", None),
    (b"Sun, 31 Feb 1994 08:49:37 GMT", None),
    (b"Sun, 06 Nov 1994 25:49:37 GMT", None),
    (b"yesterday", None),
    (b"", None),
    (None, None),
])
def test_http_dates(value, expected):
    assert parse_http_date(value) == expected


def test_http_date_and_etag_formats():
    assert http_date(T) == DATE.decode()
    assert etag_for(10, 11, 12) == '"a-b-c"'
    assert etag_for(10, 11, 12, "br") == '"a-b-c-br"' != etag_for(10, 11, 12, "gzip")


# -- preconditions (§13.2.2) --------------------------------------------------------------

def pre(method=b"GET", im=None, ius=None, inm=None, ims=None, etag=ETAG, lm=T):
    return precondition(method, im, ius, inm, ims, etag, lm)


@pytest.mark.parametrize("kwargs,expected", [
    ({}, 0),
    # If-None-Match: weak comparison, lists, *
    ({"inm": b'"a-b-c"'}, 304),
    ({"inm": b'W/"a-b-c"'}, 304),
    ({"inm": b'"x", W/"a-b-c"'}, 304),
    ({"inm": b'"x" ,, "y",  "a-b-c"'}, 304),
    ({"inm": b'"x", "y"'}, 0),
    ({"inm": b"*"}, 304),
    ({"inm": b'"a-b-c"', "method": b"POST"}, 412),
    ({"inm": b"a-b-c"}, 0),  # not an entity-tag
    ({"inm": b'"a,b", "a-b-c"'}, 304),  # a comma inside a tag
    # If-Modified-Since
    ({"ims": DATE}, 304),
    ({"ims": AFTER}, 304),
    ({"ims": BEFORE}, 0),
    ({"ims": b"garbage"}, 0),
    ({"ims": DATE, "method": b"POST"}, 0),  # GET and HEAD only
    ({"ims": DATE, "method": b"HEAD"}, 304),
    ({"ims": DATE, "inm": b'"other"'}, 0),  # If-None-Match present: IMS ignored
    ({"ims": BEFORE, "inm": b'"a-b-c"'}, 304),
    # If-Match: strong comparison
    ({"im": b'"a-b-c"'}, 0),
    ({"im": b'W/"a-b-c"'}, 412),
    ({"im": b'"x"'}, 412),
    ({"im": b"*"}, 0),
    ({"im": b'"x", "a-b-c"'}, 0),
    # If-Unmodified-Since
    ({"ius": DATE}, 0),
    ({"ius": AFTER}, 0),
    ({"ius": BEFORE}, 412),
    ({"ius": b"nonsense"}, 0),
    ({"ius": BEFORE, "im": b'"a-b-c"'}, 0),  # If-Match present: IUS ignored
    # precedence: 412 from If-Match before 304 from If-None-Match
    ({"im": b'"x"', "inm": b'"a-b-c"'}, 412),
    ({"ius": BEFORE, "ims": DATE}, 412),
    ({"im": b'"a-b-c"', "inm": b'"a-b-c"'}, 304),
])
def test_preconditions(kwargs, expected):
    assert pre(**kwargs) == expected


@pytest.mark.parametrize("value,expected", [
    (b'"a-b-c"', True),
    (b' "a-b-c" ', True),
    (b'W/"a-b-c"', False),  # a weak tag never matches
    (b'"x"', False),
    (DATE, True),
    (AFTER, False),  # a date must be exact
    (BEFORE, False),
    (b"garbage", False),
])
def test_if_range(value, expected):
    assert if_range_holds(value, ETAG, T) is expected


# -- ranges (§14) ----------------------------------------------------------------------------

@pytest.mark.parametrize("value,size,expected", [
    (b"bytes=0-0", 10, (0, 0)),
    (b"bytes=2-5", 10, (2, 5)),
    (b"bytes=2-", 10, (2, 9)),
    (b"bytes=2-100", 10, (2, 9)),
    (b"bytes=-3", 10, (7, 9)),
    (b"bytes=-30", 10, (0, 9)),
    (b"bytes=9-9", 10, (9, 9)),
    (b"BYTES = 1-2", 10, (1, 2)),
    (b"bytes=1-2,", 10, (1, 2)),  # an empty element is no range
    (b"bytes=10-", 10, UNSATISFIABLE),
    (b"bytes=10-20", 10, UNSATISFIABLE),
    (b"bytes=-0", 10, UNSATISFIABLE),
    (b"bytes=0-", 0, UNSATISFIABLE),
    (b"bytes=-5", 0, UNSATISFIABLE),
    (b"bytes=5-2", 10, None),  # invalid: ignored
    (b"bytes=0-1,3-4", 10, None),  # several: the whole file
    (b"bytes=-", 10, None),
    (b"bytes=a-b", 10, None),
    (b"bytes=1-2-3", 10, None),
    (b"bytes=+1-2", 10, None),
    (b"bytes= 1 - 2", 10, None),
    (b"items=0-1", 10, None),
    (b"bytes", 10, None),
    (b"", 10, None),
    (b"bytes=" + b"9" * 5000 + b"-", 10, None),  # more digits than int() takes
    (b"bytes=99999999999999999999-", 10, UNSATISFIABLE),
])
def test_ranges(value, size, expected):
    assert parse_range(value, size) == expected


# -- Accept-Encoding --------------------------------------------------------------------------

BOTH = ("br", "gzip")


@pytest.mark.parametrize("value,available,expected", [
    (None, BOTH, ""),  # no header: identity
    (b"", BOTH, ""),
    (b"gzip, deflate, br", BOTH, "br"),
    (b"gzip", BOTH, "gzip"),
    (b"x-gzip", BOTH, "gzip"),
    (b"GZIP", BOTH, "gzip"),
    (b"br;q=0.5, gzip;q=0.8", BOTH, "gzip"),
    (b"br;q=0, gzip", BOTH, "gzip"),  # q=0 excludes
    (b"br;q=0, gzip;q=0", BOTH, ""),
    (b"*", BOTH, "br"),
    (b"*;q=0.5, br;q=0", BOTH, "gzip"),
    (b"identity;q=1, gzip;q=0.5", BOTH, ""),
    (b"identity, gzip", BOTH, "gzip"),  # a tie goes to the coding
    (b"br", ("gzip",), ""),  # not available
    (b"gzip;q=1.5", BOTH, ""),  # a bad q: the member is skipped
    (b"gzip;q=abc", BOTH, ""),
    (b"gzip ; q=0.001", BOTH, "gzip"),
    (b"*;q=0", BOTH, ""),  # identity refused too, and nothing fits: identity anyway
])
def test_choose_coding(value, available, expected):
    assert choose_coding(value, available) == expected


# -- paths -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("target,path", [
    (b"/static/a.css", b"/static/a.css"),
    (b"/static/a.css?v=1", b"/static/a.css"),
    (b"http://example.com/static/a.css?x", b"/static/a.css"),
    (b"http://example.com", b"/"),
    (b"*", b"/"),
])
def test_url_path(target, path):
    assert url_path(target) == path


@pytest.mark.parametrize("raw,expected", [
    (b"a.css", ["a.css"]),
    (b"css/a.css", ["css", "a.css"]),
    (b"css//a.css", ["css", "a.css"]),
    (b"./css/./a.css", ["css", "a.css"]),
    (b"", []),
    (b"caf%C3%A9.txt", ["caf\u00e9.txt"]),
    (b"a%20b.txt", ["a b.txt"]),
    (b"%252e%252e/x", ["%2e%2e", "x"]),  # decoded once: a name, not a dot
    (b"100%", ["100%"]),
    (b"../x", 400),
    (b"css/../../x", 400),
    (b"%2e%2e/x", 400),
    (b"%2E%2E%2Fx", 400),
    (b"..%2fx", 400),
    (b"x/..", 400),
    (b"a\\b", 400),
    (b"a%5c..%5cb", 400),
    (b"a%00.txt", 400),
    (b"a%0d%0a.txt", 400),
    (b"%c0%ae%c0%ae/x", 400),  # overlong UTF-8 for "."
    (b"%e0%80%ae/x", 400),
    (b"%ff.txt", 400),
    (b"%ed%a0%80", 400),  # a surrogate
    (b".env", 404),
    (b".git/config", 404),
    (b"a/.hidden/b", 404),
    (b"%2egit/config", 404),
    (b"...", 404),
])
def test_split_path(raw, expected):
    assert split_path(raw) == expected


def test_open_under_refuses_what_leaves_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (tmp_path / "secret").write_text("s")
    (root / "out").symlink_to(tmp_path / "secret")
    (root / "in").symlink_to(root / "a.txt")
    (root / ".hid").write_text("h")
    (root / "tohidden").symlink_to(root / ".hid")
    os.mkfifo(root / "fifo")
    prefix = root_prefix(str(root))
    assert prefix == str(root) + "/"

    def opened(name, follow=False):
        # Both ways: the open that refuses symlinks on the way (openat2) first, and
        # the open-and-look alone (a root behind a symlink, or no openat2).
        results = set()
        for plain in (symlink_free(str(root)), False):
            found = open_under(str(root / name), prefix, follow, plain)
            if type(found) is not int:
                os.close(found[0])
                found = "ok"
            results.add(found)
        assert len(results) == 1, (name, results)
        return results.pop()

    assert opened("a.txt") == "ok"
    assert opened("d") == "ok"  # (a directory: the caller looks for its index)
    assert opened("in") == "ok"  # a symlink that stays inside
    assert opened("out") == -1  # one that leaves
    assert opened("out", follow=True) == "ok"
    assert opened("tohidden") == -1  # a hidden name reached through a symlink
    assert opened("fifo") == 404  # and it did not block
    assert opened("missing") == 404
    assert opened("a.txt/x") == 404


@pytest.mark.skipif(not plain_open.usable, reason="no openat2 on this kernel")
def test_plain_open_refuses_any_symlink_on_the_way(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("f")
    (tmp_path / "link-d").symlink_to(tmp_path / "d")
    (tmp_path / "link-f").symlink_to(tmp_path / "d" / "f")
    fd = plain_open(str(tmp_path / "d" / "f"))
    assert fd >= 0
    os.close(fd)
    assert plain_open(str(tmp_path / "link-d" / "f")) == -1  # a directory on the way
    assert plain_open(str(tmp_path / "link-f")) == -1  # the last name
    with pytest.raises(FileNotFoundError):
        plain_open(str(tmp_path / "d" / "missing"))
    assert symlink_free(str(tmp_path / "d")) and not symlink_free(str(tmp_path / "link-d"))


def test_a_kernel_or_sandbox_without_openat2_falls_back_for_good(tmp_path, monkeypatch):
    import ctypes
    import errno

    from preforkd.http.static_path import PlainOpen

    (tmp_path / "f").write_text("f")
    opener = PlainOpen()

    def refused(*args):
        ctypes.set_errno(errno.ENOSYS)
        return -1

    monkeypatch.setattr(opener, "_syscall", refused, raising=False)
    monkeypatch.setattr(opener, "usable", True)
    assert opener(str(tmp_path / "f")) == -1 and not opener.usable
