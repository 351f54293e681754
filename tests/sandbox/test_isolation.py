"""The code cannot write outside its session directory, reach the network or read the solver's secrets.

Run: python -m pytest tests/sandbox/test_isolation.py -q
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest
from sandbox_testing import SECRET_NAME, SECRET_VALUE, needs_root, run_ok

REPO = Path(__file__).resolve().parents[2]


def _needs(pool, protection: str) -> None:
    if not getattr(pool.isolation, protection):
        pytest.skip(f"{protection} isolation unavailable here: {pool.isolation.notes}")


@pytest.mark.parametrize(
    ("directory", "lands_inside"),
    [("/etc", False), ("/root", False), (str(REPO), False), ("/usr/lib", False),
     ("/run/lock", False), ("/tmp", True), ("/var/tmp", True), ("/dev/shm", True)],
)
def test_writing_outside_the_session_directory_fails_or_lands_inside(
        sandbox, session_id, directory, lands_inside):
    _needs(sandbox, "filesystem")
    name = f"sandbox-escape-{uuid.uuid4().hex}"
    host_path = Path(directory) / name
    code = f"open({str(host_path)!r}, 'w').write('x')\nprint('written')"
    try:
        result = sandbox.execute(session_id, code)
        assert not host_path.exists()
    finally:
        host_path.unlink(missing_ok=True)
    landed = (sandbox.session_dir(session_id) / name).exists()
    if lands_inside:
        assert result.status == "ok" and landed
    else:
        assert result.status == "error" and not landed
        # A checkout under /tmp is hidden behind the session's private /tmp: the path does not exist.
        refusals = ("Read-only file system", "Permission denied", "No such file or directory")
        assert any(refusal in result.stderr for refusal in refusals)


def test_working_directory_and_home_are_the_session_directory(sandbox, session_id):
    run_ok(sandbox, session_id, "import os\nopen('here.txt', 'w').write('x')\n"
                                "open(os.path.expanduser('~/home.txt'), 'w').write('y')")
    directory = sandbox.session_dir(session_id)
    assert (directory / "here.txt").read_text() == "x"
    assert (directory / "home.txt").read_text() == "y"


def test_a_loopback_server_of_the_host_is_unreachable(sandbox, session_id):
    _needs(sandbox, "network")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                "print('connected')")
        result = sandbox.execute(session_id, code)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody knocked
    assert result.status == "error" and "connected" not in result.stdout
    assert sandbox.network_isolated


def test_a_secret_in_the_solvers_environment_is_not_visible(sandbox, session_id):
    assert os.environ[SECRET_NAME] == SECRET_VALUE
    result = run_ok(sandbox, session_id, "import os\nprint(sorted(os.environ))")
    assert SECRET_NAME not in result.stdout
    env_names = eval(result.stdout)  # a list of str printed by the code
    assert set(env_names) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE",
                              "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                              "NUMEXPR_NUM_THREADS"}


@needs_root
def test_the_code_runs_unprivileged_and_cannot_read_the_solvers_memory_or_environ(sandbox, session_id):
    code = (f"import os\nprint(os.getuid() != 0, os.geteuid() != 0)\n"
            f"open('/proc/{os.getpid()}/environ', 'rb').read()")
    result = sandbox.execute(session_id, code)
    assert result.stdout == "True True\n"
    assert result.status == "error" and "PermissionError" in result.stderr
    assert SECRET_VALUE not in result.stderr


@needs_root
def test_sessions_cannot_read_each_others_files(sandbox, session_id):
    run_ok(sandbox, session_id, "open('mine.txt', 'w').write('private')")
    victim = sandbox.session_dir(session_id) / "mine.txt"
    result = sandbox.execute(f"{session_id}-other", f"print(open({str(victim)!r}).read())")
    assert result.status == "error" and "private" not in result.stdout
