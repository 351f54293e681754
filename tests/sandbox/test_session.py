"""A session keeps its state across calls, restores it by replay after losing its worker,
or says that it lost it.

Run: python -m pytest tests/sandbox/test_session.py -q
"""

from __future__ import annotations

from sandbox_testing import run_ok


def test_variables_imports_and_functions_persist_across_calls(sandbox, session_id):
    run_ok(sandbox, session_id, "import sympy as sp\nn = 2**64 + 1")
    run_ok(sandbox, session_id, "def largest_factor(k):\n    return max(sp.factorint(k))")
    result = run_ok(sandbox, session_id, "print(largest_factor(n))")
    assert result.stdout == "67280421310721\n"


def test_sessions_do_not_share_state(sandbox, session_id):
    run_ok(sandbox, session_id, "secret = 1")
    other = sandbox.execute(f"{session_id}-other", "print(secret)")
    assert other.status == "error" and "NameError" in other.stderr


def test_error_traceback_has_no_sandbox_frames(sandbox, session_id):
    result = sandbox.execute(session_id, "x = 1\n1/0")
    assert result.status == "error"
    assert result.stderr == (
        "Traceback (most recent call last):\n"
        '  File "<cell 1>", line 2, in <module>\n'
        "    1/0\n"
        "ZeroDivisionError: division by zero\n"
    )


def test_a_failed_cell_does_not_end_the_session(sandbox, session_id):
    run_ok(sandbox, session_id, "a = 1")
    assert sandbox.execute(session_id, "a = 2\nraise ValueError").status == "error"
    assert run_ok(sandbox, session_id, "print(a)").stdout == "2\n"


def test_state_is_restored_by_replay_after_a_timeout(sandbox, session_id):
    run_ok(sandbox, session_id, "import math\nx = 5")
    run_ok(sandbox, session_id, "def f():\n    return x * 2")
    result = sandbox.execute(session_id, "y = 1\nwhile True:\n    pass", timeout_s=0.5)
    assert result.status == "timeout" and not result.state_lost
    assert "restored by replaying its 2 successful cell(s)" in result.note
    after = run_ok(sandbox, session_id, "print(f(), math.pi > 3, 'y' in globals())")
    assert after.stdout == "10 True False\n"


def test_replayed_cells_output_is_not_shown_again(sandbox, session_id):
    run_ok(sandbox, session_id, "print('once')")
    result = sandbox.execute(session_id, "import os\nos._exit(1)")
    assert result.status == "crashed" and "exited with code 1" in result.note
    assert result.stdout == "" and result.stderr == ""


def test_state_lost_is_reported_when_replay_is_impossible(sandbox, session_id):
    # Succeeds once only: its marker file survives in the session directory.
    run_ok(sandbox, session_id, "import os\nassert not os.path.exists('marker')\n"
                                "open('marker', 'w').close()\nx = 1")
    result = sandbox.execute(session_id, "while True:\n    pass", timeout_s=0.5)
    assert result.status == "timeout"
    assert result.state_lost
    assert "variables were lost" in result.note
    after = sandbox.execute(session_id, "print(x)")
    assert after.status == "error" and "NameError" in after.stderr and not after.state_lost
    assert run_ok(sandbox, session_id, "x = 3\nprint(x)").stdout == "3\n"


def test_calls_of_one_session_run_in_submission_order(sandbox, session_id):
    futures = [sandbox.submit(session_id, f"import time\ntime.sleep(0.01 * ({i} % 3))\n"
                                          f"order = globals().get('order', []) + [{i}]")
               for i in range(8)]
    assert all(future.result().status == "ok" for future in futures)
    assert run_ok(sandbox, session_id, "print(order)").stdout == f"{list(range(8))}\n"


def test_close_session_removes_its_directory(sandbox, session_id):
    run_ok(sandbox, session_id, "open('data.txt', 'w').write('x')")
    directory = sandbox.session_dir(session_id)
    assert (directory / "data.txt").exists()
    sandbox.close_session(session_id)
    assert not directory.exists()
    assert sandbox.session_dir(session_id) is None


def test_a_closed_session_id_starts_afresh_when_used_again(sandbox, session_id):
    run_ok(sandbox, session_id, "x = 1")
    sandbox.close_session(session_id)
    result = sandbox.execute(session_id, "print(x)")
    assert result.status == "error" and "NameError" in result.stderr
