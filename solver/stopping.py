"""Early-stop rules for one problem, as pure functions of the samples' finish order.

A problem ends at the first of:
- `all_done`: every sample finished;
- `first_k`: `stop_after` samples finished (answered or not), as in the AIMO-2 demo (10 of 12);
- `consensus`: an answer reached `votes` votes among the first `window` samples that answered
  ("4/5": 4 of the first 5 answers agree; "4": the first 4 answers agree), as the AIMO-2
  winners did; once more than `window` answers exist without agreement the rule stays silent;
- `deadline`: the problem's allowance ran out (checked by the solver's clock, not here).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Consensus:
    votes: int
    window: int

    def __post_init__(self) -> None:
        if self.votes < 1 or self.window < self.votes:
            raise ValueError(f"consensus needs 1 <= votes <= window, got {self.votes}/{self.window}")

    @classmethod
    def parse(cls, text: str) -> "Consensus | None":
        """"4/5" -> 4 of the first 5 answers; "4" -> the first 4 answers; "off" -> None."""
        if text.strip().lower() in ("off", "none", "0"):
            return None
        votes, _, window = text.partition("/")
        try:
            return cls(int(votes), int(window or votes))
        except ValueError as exc:
            raise ValueError(f"consensus must look like 4/5, 4 or off, got {text!r}") from exc

    def __str__(self) -> str:
        return f"{self.votes}/{self.window}"


def consensus_reached(answers_in_finish_order: list[int | None], rule: Consensus) -> bool:
    answered = [answer for answer in answers_in_finish_order if answer is not None]
    window = answered[: rule.window]
    if not window:
        return False
    _, top_votes = Counter(window).most_common(1)[0]
    return top_votes >= rule.votes


def stop_reason(
    answers_in_finish_order: list[int | None],
    num_samples: int,
    stop_after: int | None,
    consensus: Consensus | None,
) -> str | None:
    """Why the problem should stop now, or None to go on. One entry per finished sample."""
    num_done = len(answers_in_finish_order)
    if num_done >= num_samples:
        return "all_done"
    if consensus is not None and consensus_reached(answers_in_finish_order, consensus):
        return "consensus"
    if stop_after is not None and num_done >= stop_after:
        return "first_k"
    return None
