"""From a request path to an open file under a static mount's root, and no further.

Two steps, each closed to a way out:

1. `split_path` (pure): the path after the mount's prefix is percent-decoded
   exactly once (so `%252e` stays the name `%2e`, never a dot), then must be
   strict UTF-8 (overlong forms such as `%c0%ae` are invalid UTF-8: 400), free of
   control bytes and NUL (400) and of backslashes (400: no second separator).
   It is split on "/" (an encoded `%2f` splits too, as nginx does); empty and
   "." segments drop out, a ".." segment is a 400 (nothing is resolved
   lexically, so nothing can climb), and a segment starting with "." (dotfiles,
   .git, .env) is hidden: 404. What comes out is a list of plain names: joined
   under the root, they can only name something inside it, but for symlinks.

2. `open_under` (the file system): the file is opened (O_NONBLOCK, so a FIFO
   cannot block the worker; O_NOCTTY), fstat'ed, and unless the mount
   follows symlinks, the path the kernel actually opened (readlink of
   /proc/self/fd/N, one syscall, and about what was opened, not a path checked
   before: no race) must lie under the root's real path. Where the kernel has
   openat2(2) (Linux 5.6) and the root's path has no symlink, the file is first
   opened with RESOLVE_NO_SYMLINKS: that open fails if any component on the way
   is a symlink, so one that succeeds went exactly where the plain names say,
   inside the root, and needs no readlink; a path with a symlink in it falls
   back to open and look. Anything but a regular file (directory handled by the
   caller, device, FIFO, socket) is not served.

These are blocking syscalls on a local file system: open, fstat and readlink
of a cached inode take a few microseconds, like nginx's own (which also opens
and stats on its event loop unless told to use threads). A root on a network
file system would stall the worker on each of them; keep roots local.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
from urllib.parse import unquote_to_bytes

OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_BAD_BYTES = frozenset(range(0x20)) | {0x7F, 0x5C}  # control bytes, DEL, backslash
_PROC_FD = "/proc/self/fd/"
_HAVE_PROC = os.path.isdir(_PROC_FD)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class PlainOpen:
    """openat2(path, RESOLVE_NO_SYMLINKS): the fd, or -1 when a symlink is on the way
    (or the kernel, or a sandbox, refuses openat2: then it is not asked again). Other
    failures raise OSError as os.open does."""

    SYS_OPENAT2 = 437  # (one number on every Linux architecture)
    AT_FDCWD = -100
    RESOLVE_NO_SYMLINKS = 0x04
    UNUSABLE = frozenset((errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG))

    def __init__(self) -> None:
        self.usable = sys.platform.startswith("linux")
        if self.usable:
            self._syscall = ctypes.CDLL(None, use_errno=True).syscall
            self._syscall.restype = ctypes.c_long
            self._how = _OpenHow(OPEN_FLAGS, 0, self.RESOLVE_NO_SYMLINKS)
            self._args = (ctypes.byref(self._how), ctypes.sizeof(self._how))

    def __call__(self, path: str) -> int:
        fd = self._syscall(self.SYS_OPENAT2, self.AT_FDCWD, os.fsencode(path), *self._args)
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err == errno.ELOOP:
            return -1
        if err in self.UNUSABLE:
            self.usable = False
            return -1
        raise OSError(err, os.strerror(err), path)


plain_open = PlainOpen()


def symlink_free(path: str) -> bool:
    """Whether no component of `path` (absolute) is a symlink: then plain_open can
    open the files under it."""
    return plain_open.usable and os.path.realpath(path) == os.path.normpath(path)


def url_path(target: bytes) -> bytes:
    """The path of a request target: without its query, and out of absolute form."""
    path = target.split(b"?", 1)[0] if 63 in target else target
    if path[:1] != b"/":  # absolute-form (http://host/path), or "*"
        start = path.find(b"//")
        slash = path.find(b"/", start + 2) if start >= 0 else -1
        path = path[slash:] if slash >= 0 else b"/"
    return path


def split_path(raw: bytes) -> list[str] | int:
    """The names a path (after the mount's prefix) asks for, or an HTTP status:
    400 for a path no file could have (see the module's doc), 404 for a hidden one."""
    data = unquote_to_bytes(raw) if 37 in raw else raw
    if not _BAD_BYTES.isdisjoint(data):
        return 400
    try:
        text = data.decode("utf-8")  # strict: overlong forms and surrogates fail
    except UnicodeDecodeError:
        return 400
    parts = []
    for seg in text.split("/"):
        if not seg or seg == ".":
            continue
        if seg[0] == ".":
            return 400 if seg == ".." else 404
        parts.append(seg)
    return parts


def root_prefix(root: str) -> str:
    """The root's real path with a trailing "/": what every file served under it
    starts with (taken again when a symlinked root may have been switched)."""
    real = os.path.realpath(root)
    return real if real.endswith("/") else real + "/"


def open_under(path: str, prefix: str, follow_symlinks: bool, plain: bool = False
               ) -> tuple[int, os.stat_result] | int:
    """Open `path` (the root joined with names from split_path) for sending:
    (fd, stat) of a regular file or a directory, the fd open (the caller closes
    it), or a status: 404 (missing, not a file), 403 (permission), or -1 when the
    file is outside `prefix` (the root's real path, see root_prefix). `plain`: the
    root's path has no symlink (symlink_free), so try plain_open first."""
    try:
        fd = plain_open(path) if plain and plain_open.usable else -1
        plain = fd >= 0  # (no symlink on the way: inside the root by its names)
        if fd < 0:
            fd = os.open(path, OPEN_FLAGS)
    except OSError as e:
        if e.errno == errno.EACCES:
            return 403
        if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
            raise  # the server's trouble, not the file's: a 500
        return 404  # ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG, ENXIO (a socket), ...
    try:
        st = os.fstat(fd)
        if not follow_symlinks and not plain:
            real = os.readlink(_PROC_FD + str(fd)) if _HAVE_PROC else os.path.realpath(path)
            # (inside the root, and no hidden name reached through a symlink)
            if not (real + "/").startswith(prefix) or "/." in real[len(prefix) - 1:]:
                os.close(fd)
                return -1
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            return fd, st
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return 404
