"""Majority vote and its tie-break. Run: python -m pytest tests/solver/test_vote.py -q"""

from solver.vote import majority, vote_counts


def test_majority_picks_the_most_votes():
    assert majority([3, 5, 5, None, 3, 5]) == 5


def test_tie_goes_to_the_answer_voted_first():
    assert majority([7, 2, 2, 7]) == 7
    assert majority([2, 7, 7, 2]) == 2


def test_none_answers_do_not_vote():
    assert majority([None, None, 4]) == 4


def test_nobody_answered_gives_none():
    assert majority([None, None]) is None
    assert majority([]) is None


def test_vote_counts_keep_first_vote_order():
    assert list(vote_counts([9, 1, 9, None]).items()) == [(9, 2), (1, 1)]
