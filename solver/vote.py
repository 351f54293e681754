"""Majority vote over integer answers.

`majority(answers)` takes answers in the order the samples finished (None for a sample without
an answer) and returns the most frequent integer. Tie-break, deterministic and documented: among
answers with equal votes, the one whose first vote came earliest wins; shorter solutions finish
first and are, for reasoning models, the more often correct ones. None when nobody answered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

# Samples that ended on their own, or were cut by the deadline with a box already written, vote;
# samples aborted by an early stop, or ended by an engine error, do not.
VOTING_FINISH_REASONS = ("stop", "length", "deadline")


def ballot(answer: int | None, finish_reason: str | None) -> int | None:
    """What one sample puts in the ballot box."""
    return answer if finish_reason in VOTING_FINISH_REASONS else None


def vote_counts(answers: Iterable[int | None]) -> Counter[int]:
    """Votes per answer, in order of first appearance (Counter keeps insertion order)."""
    return Counter(answer for answer in answers if answer is not None)


def majority(answers: Iterable[int | None]) -> int | None:
    counts = vote_counts(answers)
    if not counts:
        return None
    # max() returns the first maximal item; insertion order is first-vote order.
    return max(counts, key=lambda answer: counts[answer])
