"""Shared fixtures for the sandbox tests: one warm Sandbox per test module, fresh session ids.

Run: . .venv/bin/activate && python -m pytest tests/sandbox -q
(30-40 s on a 2-core VM; isolation properties need root and are skipped without it)
"""

from __future__ import annotations

import itertools
import os

import pytest
from sandbox_testing import SECRET_NAME, SECRET_VALUE, TEST_LIMITS

from sandbox import Sandbox

_session_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def sandbox():
    os.environ[SECRET_NAME] = SECRET_VALUE  # set before the fork server starts
    with Sandbox(max_workers=8, limits=TEST_LIMITS) as pool:
        yield pool


@pytest.fixture
def session_id(request) -> str:
    """A session id no other test uses."""
    return f"{request.node.name}-{next(_session_numbers)}"
