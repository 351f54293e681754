"""Early-stop rules as pure functions. Run: python -m pytest tests/solver/test_stopping.py -q"""

import pytest

from solver.stopping import Consensus, consensus_reached, stop_reason


def test_all_done():
    assert stop_reason([1, 2, 3], num_samples=3, stop_after=None, consensus=None) == "all_done"


def test_first_k_counts_unanswered_samples_too():
    assert stop_reason([None, 4], num_samples=8, stop_after=2, consensus=None) == "first_k"
    assert stop_reason([None], num_samples=8, stop_after=2, consensus=None) is None


def test_consensus_of_the_first_answers():
    rule = Consensus(4, 5)
    assert consensus_reached([7, 7, None, 3, 7, 7], rule)
    assert not consensus_reached([7, 7, 3, 7], rule)


def test_consensus_stays_silent_once_the_window_passed_without_agreement():
    rule = Consensus(3, 3)
    assert not consensus_reached([1, 2, 3, 1, 1, 1], rule)


def test_consensus_fires_before_first_k():
    assert stop_reason([5, 5], num_samples=8, stop_after=2, consensus=Consensus(2, 2)) == "consensus"


@pytest.mark.parametrize("text, expected", [("4/5", Consensus(4, 5)), ("4", Consensus(4, 4)), ("off", None)])
def test_consensus_parse(text, expected):
    assert Consensus.parse(text) == expected


@pytest.mark.parametrize("text", ["5/4", "x", "0/3", "-1"])
def test_bad_consensus_is_refused(text):
    with pytest.raises(ValueError):
        Consensus.parse(text)
