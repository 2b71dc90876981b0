"""Validators and the request fields that use them: conditional requests (RFC 9110
§13), ranges (§14) and content codings (§12.5.3).

Pure functions of header values (bytes, as received; None when absent) and of
the representation's validators, so each rule is tested value by value
(tests/unit/test_static_rules.py). The static file exchange (http/static.py)
is their only caller.
"""

from __future__ import annotations

import calendar
import re
import time

# -- validators ---------------------------------------------------------------------


def etag_for(size: int, mtime_ns: int, ino: int, coding: str = "") -> str:
    """A strong entity tag: any change of size, mtime or inode (a file replaced by
    rename) changes it; each content coding of a file gets its own."""
    return f'"{size:x}-{mtime_ns:x}-{ino:x}{"-" + coding if coding else ""}"'


def http_date(seconds: int) -> str:
    """IMF-fixdate (RFC 9110 §5.6.7), as Last-Modified is written."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(seconds))


_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_T = r"(\d\d):(\d\d):(\d\d)"
_M = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_IMF = re.compile(rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) {_M} (\d{{4}}) {_T} GMT\Z")
_RFC850 = re.compile(r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
                     rf"(\d\d)-{_M}-(\d\d) {_T} GMT\Z")
_ASCTIME = re.compile(rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) {_M} ([ \d]\d) {_T} (\d{{4}})\Z")


def parse_http_date(value: bytes | None) -> int | None:
    """Seconds since the epoch of an HTTP-date in any of its three forms (§5.6.7),
    or None when `value` is not one (the field is then ignored)."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if m := _IMF.match(text):
        day, mon, year, hh, mm, ss = m.groups()
    elif m := _RFC850.match(text):
        day, mon, yy, hh, mm, ss = m.groups()
        # two-digit years: the one in the past closest to now (§5.6.7: within 50 years)
        year = str(int(yy) + (1900 if int(yy) + 2000 > time.gmtime().tm_year + 50 else 2000))
    elif m := _ASCTIME.match(text):
        mon, day, hh, mm, ss, year = m.groups()
    else:
        return None
    try:
        fields = (int(year), _MONTHS[mon], int(day), int(hh), int(mm), int(ss))
        time.strptime(" ".join(map(str, fields)), "%Y %m %d %H %M %S")  # a real date?
    except ValueError:
        return None
    return calendar.timegm((*fields, 0, 0, 0))


# -- conditional requests (§13) -------------------------------------------------------

_ENTITY_TAG = re.compile(rb'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|\Z)')


def _tags(value: bytes) -> list[tuple[bool, str]] | None:
    """The entity tags of an If-Match / If-None-Match list as (weak, opaque-tag);
    None for `*`. Empty list elements are skipped; a malformed element ends the list."""
    if value.strip() == b"*":
        return None
    out, pos, n = [], 0, len(value)
    while pos < n:
        while pos < n and value[pos] in b" \t,":
            pos += 1
        m = _ENTITY_TAG.match(value, pos)
        if m is None:
            break
        out.append((m.group(1) is not None, m.group(2).decode("latin-1")))
        pos = m.end()
    return out


def _strong_match(tags: list[tuple[bool, str]] | None, etag: str) -> bool:
    return tags is None or any(not weak and tag == etag for weak, tag in tags)


def _weak_match(tags: list[tuple[bool, str]] | None, etag: str) -> bool:
    return tags is None or any(tag == etag for _, tag in tags)


def precondition(method: bytes, if_match: bytes | None, if_unmodified_since: bytes | None,
                 if_none_match: bytes | None, if_modified_since: bytes | None,
                 etag: str, last_modified: int) -> int:
    """RFC 9110 §13.2.2, in its order, for a representation that exists: 0 (go on),
    304 (not modified) or 412 (precondition failed). `last_modified` in seconds."""
    if if_match is not None:
        if not _strong_match(_tags(if_match), etag):  # §13.1.1: strong comparison
            return 412
    elif if_unmodified_since is not None:
        date = parse_http_date(if_unmodified_since)  # (not a date: ignored)
        if date is not None and last_modified > date:
            return 412
    safe = method in (b"GET", b"HEAD")
    if if_none_match is not None:
        if _weak_match(_tags(if_none_match), etag):  # §13.1.2: weak comparison
            return 304 if safe else 412
    elif if_modified_since is not None and safe:
        date = parse_http_date(if_modified_since)
        if date is not None and last_modified <= date:
            return 304
    return 0


def if_range_holds(value: bytes, etag: str, last_modified: int) -> bool:
    """§13.1.5: an entity tag must match strongly (a weak one never does); a date
    must equal Last-Modified exactly."""
    value = value.strip()
    if value[:1] == b'"' or value[:2] == b"W/":
        return value[:1] == b'"' and value.decode("latin-1") == etag
    return parse_http_date(value) == last_modified


# -- ranges (§14) ------------------------------------------------------------------------

UNSATISFIABLE = (-1, -1)


def parse_range(value: bytes, size: int) -> tuple[int, int] | None:
    """The one byte range a Range field asks for, as (first, last) inclusive and
    clamped to the representation; UNSATISFIABLE (answer 416); or None: serve the
    whole representation (no valid `bytes=` range set, or several ranges: the RFC
    lets a server ignore Range, and a 200 serves any client)."""
    unit, eq, spec = value.partition(b"=")
    if not eq or unit.strip().lower() != b"bytes":
        return None
    specs = [s.strip() for s in spec.split(b",")]
    specs = [s for s in specs if s]
    if len(specs) != 1:
        return None
    first_b, dash, last_b = specs[0].partition(b"-")
    if not dash or not (first_b.isdigit() or last_b.isdigit()) \
            or (first_b and not first_b.isdigit()) or (last_b and not last_b.isdigit()):
        return None
    try:
        if not first_b:  # suffix-range: the last n bytes
            n = int(last_b)
            return (max(0, size - n), size - 1) if n > 0 and size > 0 else UNSATISFIABLE
        first = int(first_b)
        last = int(last_b) if last_b else -1
    except ValueError:  # (more digits than int() takes)
        return None
    if last_b and last < first:
        return None  # invalid: ignored
    if first >= size:
        return UNSATISFIABLE
    return first, size - 1 if not last_b or last >= size else last


# -- content codings (§12.5.3) -------------------------------------------------------------

_ALIASES = {"x-gzip": "gzip"}


def accepted_codings(value: bytes | None) -> dict[str, float]:
    """Accept-Encoding as {coding: q}; bad members are skipped."""
    out: dict[str, float] = {}
    if value is None:
        return out
    for member in value.decode("latin-1").split(","):
        coding, *params = (p.strip() for p in member.split(";"))
        if not coding:
            continue
        q = 1.0
        for p in params:
            name, _, v = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(v.strip())
                except ValueError:
                    q = -1.0
                if not 0.0 <= q <= 1.0 or len(v.strip()) > 5:
                    q = -1.0
        if q >= 0:
            coding = coding.lower()
            out[_ALIASES.get(coding, coding)] = q
    return out


def choose_coding(value: bytes | None, available: tuple[str, ...]) -> str:
    """The content coding to send from `available` (in the server's order of
    preference, e.g. ("br", "gzip")), or "" for identity. A coding is acceptable
    with q > 0, named or through "*"; the highest q wins, ties go to the earlier in
    `available` and to a coding over identity (it is smaller). Identity not named
    (nor through "*") is acceptable but least preferred. No Accept-Encoding at all:
    identity (RFC 9110 would allow any coding; clients that decode say so). When
    even identity is refused and nothing else fits, identity still (a 406 would
    help no one: nginx does the same)."""
    if value is None:
        return ""
    accepted = accepted_codings(value)
    star = accepted.get("*")
    best, best_q = "", accepted.get("identity", 0.001 if star is None else star)
    for coding in available:
        q = accepted.get(coding, 0.0 if star is None else star)
        if q > 0 and (q > best_q or (q == best_q and best == "")):
            best, best_q = coding, q
    return best
