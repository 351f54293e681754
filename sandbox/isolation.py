"""What a fresh worker does to itself before it runs any untrusted code.

In order: a new network namespace (no interfaces, loopback down), a new mount namespace in which
every mount is read-only except the session directory, which also appears as /tmp, /var/tmp and
/dev/shm (and /root is hidden behind an empty tmpfs, except the Python installation when it lives
there); the session directory as working directory and HOME; a scrubbed environment; rlimits on
memory, file size, core dumps and processes; and last, when running as root, a switch to the
session's own unprivileged uid with no way back (no supplementary groups, no_new_privs).

Guarantees: each step either succeeds or is reported as missing in `Isolation` (never silently
skipped); privileges are dropped after every step that needs them, so the code never runs as root.
Not covered: CPU share, total disk use of the session directory, the host's process list (visible
in /proc), kernel exploits. Steps need root (CAP_SYS_ADMIN for namespaces, CAP_SETUID for the uid);
in a container that forbids unshare(2), network and filesystem isolation are missing.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass

from sandbox import syscalls
from sandbox.limits import SandboxLimits

_SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # world-writable by convention
_HIDDEN_HOMES = ("/root",)
_MB = 1 << 20


@dataclass(frozen=True)
class Isolation:
    """Which protections a worker has. `notes` says why one is missing."""

    user: bool  # runs as the session's own uid, not root: NPROC binds, leftovers can be killed
    network: bool  # own network namespace: nothing reachable, not even the host's loopback
    filesystem: bool  # read-only view of the machine except the session directory
    notes: tuple[str, ...] = ()

    def covers(self, other: Isolation) -> bool:
        """True when this isolation is at least as strong as `other` in every respect."""
        return (
            (self.user or not other.user)
            and (self.network or not other.network)
            and (self.filesystem or not other.filesystem)
        )

    def to_json(self) -> dict:
        return {"user": self.user, "network": self.network, "filesystem": self.filesystem,
                "notes": list(self.notes)}

    @classmethod
    def from_json(cls, data: dict) -> Isolation:
        return cls(bool(data["user"]), bool(data["network"]), bool(data["filesystem"]),
                   tuple(str(note) for note in data.get("notes", ())))


def base_environment() -> dict[str, str]:
    """The whole environment untrusted code sees, before HOME and TMPDIR are added."""
    python_bin = os.path.dirname(sys.executable)
    single_thread = {name: "1" for name in (
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")}
    return {
        "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        **single_thread,
    }


def apply(session_dir: str, uid: int, limits: SandboxLimits) -> Isolation:
    """Isolate the calling process (a fresh worker, still root if the sandbox is). Irreversible."""
    notes: list[str] = []
    network = _try(notes, "network namespace", lambda: syscalls.unshare(syscalls.CLONE_NEWNET))
    filesystem = _try(notes, "mount namespace", lambda: _isolate_filesystem(session_dir))
    workdir = _SCRATCH_DIRS[0] if filesystem else session_dir
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(base_environment(), HOME=workdir, TMPDIR=workdir)
    is_root = os.geteuid() == 0
    _set_limits(limits, with_nproc=is_root)
    user = is_root and _try(notes, "unprivileged uid", lambda: _become(uid))
    if not is_root:
        notes.append("unprivileged uid: the sandbox does not run as root")
    _try(notes, "no_new_privs", lambda: syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1))
    return Isolation(user=user, network=network, filesystem=filesystem, notes=tuple(notes))


def probe() -> Isolation:
    """What `apply` can achieve here. Run it in a throwaway child: it changes the process."""
    notes: list[str] = []
    network = _try(notes, "network namespace", lambda: syscalls.unshare(syscalls.CLONE_NEWNET))
    filesystem = _try(notes, "mount namespace", _probe_filesystem)
    is_root = os.geteuid() == 0
    user = is_root and _try(notes, "unprivileged uid", lambda: _become(65534))
    if not is_root:
        notes.append("unprivileged uid: the sandbox does not run as root")
    return Isolation(user=user, network=network, filesystem=filesystem, notes=tuple(notes))


def _try(notes: list[str], what: str, step) -> bool:
    try:
        step()
    except OSError as error:
        notes.append(f"{what}: {error}")
        return False
    return True


def _isolate_filesystem(session_dir: str) -> None:
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE, None)
    _hide_homes()
    scratch = [path for path in _SCRATCH_DIRS if os.path.isdir(path)]
    _bind_all(session_dir, scratch)
    syscalls.set_read_only("/", True, recursive=True)
    for path in scratch:
        syscalls.set_read_only(path, False, recursive=False)


def _probe_filesystem() -> None:
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE, None)
    syscalls.set_read_only("/", True, recursive=True)


def _hide_homes() -> None:
    """Cover root's home with an empty tmpfs, then bind back the Python installation inside it."""
    for home in _HIDDEN_HOMES:
        if not os.path.isdir(home):
            continue
        keep = _outermost([path for path in _interpreter_paths() if _is_below(path, home)])
        _bind_all_over(home, keep)


def _bind_all_over(home: str, keep: list[str]) -> None:
    # Open what must stay visible before the tmpfs hides it; bind from the open descriptors.
    fds = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in keep}
    try:
        syscalls.mount("tmpfs", home, "tmpfs", 0, "mode=755,size=1m")
        for path, fd in fds.items():
            os.makedirs(path, exist_ok=True)
            syscalls.mount(f"/proc/self/fd/{fd}", path, None, syscalls.MS_BIND | syscalls.MS_REC, None)
    finally:
        for fd in fds.values():
            os.close(fd)


def _bind_all(source_dir: str, targets: list[str]) -> None:
    # Bind from a descriptor: once /tmp is covered, a session directory under /tmp has no path.
    fd = os.open(source_dir, os.O_PATH | os.O_DIRECTORY)
    try:
        for target in targets:
            syscalls.mount(f"/proc/self/fd/{fd}", target, None, syscalls.MS_BIND, None)
    finally:
        os.close(fd)


def _interpreter_paths() -> list[str]:
    paths = {sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(entry for entry in sys.path if entry)
    return sorted(os.path.realpath(path) for path in paths if os.path.isdir(path))


def _is_below(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _outermost(paths: list[str]) -> list[str]:
    """The paths that are not below another path of the list."""
    return [path for path in paths
            if not any(other != path and _is_below(path, other) for other in paths)]


def _set_limits(limits: SandboxLimits, with_nproc: bool) -> None:
    def hard_and_soft(value: int) -> tuple[int, int]:
        return (value, value)

    resource.setrlimit(resource.RLIMIT_AS, hard_and_soft(limits.memory_mb * _MB))
    resource.setrlimit(resource.RLIMIT_FSIZE, hard_and_soft(limits.file_size_mb * _MB))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if with_nproc:  # RLIMIT_NPROC counts every process of the uid: only meaningful with our own uid
        resource.setrlimit(resource.RLIMIT_NPROC, hard_and_soft(limits.max_processes))


def _become(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)  # as root this sets real, effective and saved ids: no way back
