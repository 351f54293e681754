"""Spare workers: a new session's first call takes a ready worker, forked in the background for an
identity of its own, and a spare is isolated, replaced, never reused, and killed at shutdown.

Run: python -m pytest tests/sandbox/test_spares.py -q
"""

from __future__ import annotations

import os
import signal
import stat
from concurrent.futures import wait

import pytest
from sandbox_testing import (TEST_LIMITS, is_alive, needs_root, pids_of_uid, processes_of,
                             run_ok, session_uid_and_worker_pid, uid_of, wait_until)

from sandbox import Sandbox

_SPARES_READY_S = 30.0  # the fork server's imports (about 1 s) and the forks, on a busy machine


def spares_ready(pool: Sandbox, count: int) -> bool:
    return wait_until(lambda: pool.stats().spares_ready == count, timeout_s=_SPARES_READY_S)


def test_first_calls_after_the_spares_are_ready_fork_nothing_on_the_callers_path():
    with Sandbox(max_workers=8, limits=TEST_LIMITS) as pool:
        assert spares_ready(pool, 8)
        assert len(processes_of(pool)) == 1 + 8  # the fork server and max_workers spares
        futures = [pool.submit(f"s{index}", "print('hi')") for index in range(8)]
        wait(futures)
        assert [future.result().stdout for future in futures] == ["hi\n"] * 8
        stats = pool.stats()
        assert stats.call_forks == 0
        assert stats.spares_taken == 8 and stats.workers_live == 8


def test_a_taken_spare_is_replaced_in_the_background():
    with Sandbox(max_workers=4, limits=TEST_LIMITS, spare_workers=2) as pool:
        assert spares_ready(pool, 2)
        run_ok(pool, "a", "pass")
        run_ok(pool, "b", "pass")
        assert spares_ready(pool, 2)  # 2 sessions and 2 spares fill the 4 slots
        run_ok(pool, "c", "pass")
        stats = pool.stats()
        assert stats.spares_taken == 3 and stats.call_forks == 0
        assert wait_until(lambda: pool.stats().spares_ready == 1)  # only one slot is left
        assert len(processes_of(pool)) <= 1 + 4


def test_closing_sessions_frees_their_slots_for_new_spares():
    with Sandbox(max_workers=2, limits=TEST_LIMITS) as pool:
        assert spares_ready(pool, 2)
        run_ok(pool, "a", "pass")
        run_ok(pool, "b", "pass")
        assert pool.stats().spares_ready == 0  # every slot holds a session's worker
        pool.close_session("a")
        pool.close_session("b")
        assert spares_ready(pool, 2)


@needs_root
def test_each_session_gets_its_own_uid_and_private_directory():
    with Sandbox(max_workers=4, limits=TEST_LIMITS) as pool:
        assert spares_ready(pool, 4)
        seen_uids, seen_dirs = set(), set()
        for round_number in range(2):  # the second round runs on spares forked after the first
            names = [f"round{round_number}-{index}" for index in range(4)]
            for name in names:
                uid, _ = session_uid_and_worker_pid(pool, name)
                run_ok(pool, name, "open('/tmp/mine.txt', 'w').write('x')")
                directory = pool.session_dir(name)
                info = directory.stat()
                assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid, 0o700)
                assert (directory / "mine.txt").exists()
                assert uid not in seen_uids and directory not in seen_dirs
                seen_uids.add(uid)
                seen_dirs.add(directory)
            for name in names:
                pool.close_session(name)
            assert spares_ready(pool, 4)
        assert pool.stats().call_forks == 0


def test_a_closed_sessions_worker_is_never_given_to_another_session():
    with Sandbox(max_workers=2, limits=TEST_LIMITS) as pool:
        assert spares_ready(pool, 2)
        uid_a, pid_a = session_uid_and_worker_pid(pool, "a")
        run_ok(pool, "a", "secret = 42")
        pool.close_session("a")
        assert not is_alive(pid_a)
        for name in ("b", "c"):  # the spare left over, then one forked after the close
            uid, pid = session_uid_and_worker_pid(pool, name)
            assert pid != pid_a and (uid != uid_a or os.geteuid() != 0)
            names = run_ok(pool, name, "print(sorted(k for k in globals() if k[:2] != '__'))")
            assert names.stdout == "['os']\n"  # only what its own first call imported


@needs_root  # to kill the spares, which run as other uids
def test_a_spare_that_died_while_waiting_is_not_handed_out():
    with Sandbox(max_workers=2, limits=TEST_LIMITS) as pool:
        assert spares_ready(pool, 2)
        spares = processes_of(pool) - {pool._server.pid}
        for pid in spares:
            os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not any(is_alive(pid) for pid in spares))
        result = pool.execute("a", "print('ran')")
        assert (result.status, result.stdout, result.note) == ("ok", "ran\n", "")
        assert pool.stats().spares_taken == 0


@needs_root
def test_close_kills_the_spares_too():
    pool = Sandbox(max_workers=4, limits=TEST_LIMITS)
    assert spares_ready(pool, 4)
    tree = processes_of(pool)
    spare_uids = {uid_of(pid) for pid in tree - {pool._server.pid}}
    assert len(spare_uids) == 4
    pool.close()
    assert not any(is_alive(pid) for pid in tree)
    assert all(pids_of_uid(uid) == set() for uid in spare_uids)


def test_prepare_gives_ready_spares_to_sessions_before_their_first_call():
    with Sandbox(max_workers=4, limits=TEST_LIMITS) as pool:
        assert spares_ready(pool, 4)
        assert pool.prepare(["p1", "p2", "p3"]) == 3
        assert pool.session_dir("p1").is_dir()
        stats = pool.stats()
        assert (stats.workers_live, stats.spares_ready) == (3, 1)
        assert pool.prepare(["p1", "p4", "p5"]) == 1  # p1 has its worker; one spare was left
        assert run_ok(pool, "p1", "print(1)").stdout == "1\n"
        assert pool.stats().call_forks == 0


def test_a_session_without_a_ready_spare_still_runs():
    with Sandbox(max_workers=2, limits=TEST_LIMITS, spare_workers=0) as pool:
        assert run_ok(pool, "a", "print(2)").stdout == "2\n"
        stats = pool.stats()
        assert (stats.spares_forked, stats.call_forks) == (0, 1)
        assert pool.session_dir("a").is_dir()


@pytest.mark.parametrize("spare_workers", [-1, 3])
def test_spare_workers_outside_zero_to_max_workers_is_an_error(spare_workers):
    with pytest.raises(ValueError, match="spare_workers"):
        Sandbox(max_workers=2, spare_workers=spare_workers)
