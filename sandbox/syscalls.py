"""The Linux calls the sandbox needs that Python 3.11's `os` lacks, through ctypes.

Each wrapper raises OSError with the C errno on failure, as `os` functions do. Linux only; on
another system `available()` is False and the callers skip what needs these.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x0002_0000
CLONE_NEWNET = 0x4000_0000

MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

_MOUNT_ATTR_RDONLY = 0x1
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (added in Linux 5.12)

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def available() -> bool:
    return _libc is not None


def unshare(flags: int) -> None:
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(flags)
        return
    _check(_lib().unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    result = _lib().mount(
        _c_path(source), _c_path(target), _c_path(fstype), ctypes.c_ulong(flags), _c_path(data)
    )
    _check(result, f"mount {target}")


def umount(target: str, flags: int = 0) -> None:
    _check(_lib().umount2(_c_path(target), ctypes.c_int(flags)), f"umount {target}")


def set_read_only(path: str, read_only: bool, recursive: bool) -> None:
    """Make the mount at `path` (and with `recursive`, every mount below it) read-only or not."""
    bits = ctypes.c_uint64(_MOUNT_ATTR_RDONLY)
    attr = _MountAttr(attr_set=bits if read_only else 0, attr_clr=0 if read_only else bits)
    flags = _AT_RECURSIVE if recursive else 0
    result = _lib().syscall(
        ctypes.c_long(_SYS_MOUNT_SETATTR),
        ctypes.c_int(_AT_FDCWD),
        _c_path(path),
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(result, f"mount_setattr {path}")


def prctl(option: int, value: int) -> None:
    _check(_lib().prctl(ctypes.c_int(option), ctypes.c_ulong(value), 0, 0, 0), f"prctl {option}")


def _lib() -> ctypes.CDLL:
    if _libc is None:
        raise OSError(0, "not Linux")
    return _libc


def _c_path(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
