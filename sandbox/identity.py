"""Who a session's processes run as, and where its files are.

Every worker is forked for one `Identity`: a uid that no account on the machine and no other live
session uses, and a private directory owned by that uid (mode 0700) under the sandbox's temporary
directory. `Identities` hands them out in sequence, from a random block of 65536 unused uids.

Guarantees: a session's identity is fixed once it is given, and never given to another session
while fewer than 65535 identities have been handed out since (uids then wrap around; directory
names never repeat). The directory exists, with its owner and mode, once `create_directory` ran.
Not covered: uids are checked against the accounts in the password database only, once, when the
sandbox starts.
"""

from __future__ import annotations

import os
import pwd
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

_UID_BLOCK = 1 << 16  # one session uid per session in a block of otherwise unused uids


@dataclass(frozen=True)
class Identity:
    uid: int
    directory: Path

    def create_directory(self) -> None:
        """Make the directory, private to the uid (owned by it when the sandbox runs as root)."""
        self.directory.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.directory, self.uid, self.uid)


class Identities:
    """A thread-safe source of fresh identities, each with a directory under `root`."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._uid_base = _unused_uid_block()
        self._lock = threading.Lock()
        self._handed_out = 0

    def next(self) -> Identity:
        with self._lock:
            self._handed_out += 1
            number = self._handed_out
        uid = self._uid_base + 1 + (number - 1) % (_UID_BLOCK - 1)
        return Identity(uid, self._root / f"{number:06d}")


def _unused_uid_block() -> int:
    """The first uid of a random block of 65536 uids that no account on this machine uses.

    Session uids are private: a kill(-1) as one of them must reach only that session's processes.
    """
    taken = [entry.pw_uid for entry in pwd.getpwall()]
    while True:
        base = (16 + secrets.randbelow(1 << 14)) * _UID_BLOCK  # between 2**20 and about 2**30
        if not any(base <= uid < base + _UID_BLOCK for uid in taken) and base != os.getuid():
            return base
