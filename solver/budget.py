"""Time budget for a whole run: a per-problem allowance, a shared buffer, a safety margin.

The run has `time_limit_s` from its start (model loading included) and keeps `margin_s` in
reserve for voting and writing files. Each problem gets a base allowance, `base_s`: given, or
else the time left divided evenly among the problems left when solving starts. Time a problem
does not use goes into a shared buffer; the next problem may draw at most `max_extra_s` from it
(the AIMO-2 winners: 350 s base plus at most 210 s). No allowance ever exceeds the time left
before the margin, so the run ends inside its limit whatever the problems cost.

Pure arithmetic over a clock that is passed in, so it is tested without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetPolicy:
    time_limit_s: float | None = None  # None: no limit for the run
    margin_s: float | None = None  # None: 3% of the limit, between 1 s and 60 s
    base_s: float | None = None  # None: an even share of what is left
    max_extra_s: float | None = None  # None: 60% of the base

    def __post_init__(self) -> None:
        for name in ("time_limit_s", "margin_s", "base_s", "max_extra_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.time_limit_s is not None and self.effective_margin_s >= self.time_limit_s:
            raise ValueError(f"the safety margin ({self.effective_margin_s:g} s) leaves nothing of the time limit ({self.time_limit_s:g} s)")

    @property
    def effective_margin_s(self) -> float:
        if self.margin_s is not None:
            return self.margin_s
        if self.time_limit_s is None:
            return 0.0
        return min(60.0, max(1.0, 0.03 * self.time_limit_s))


class TimeBudget:
    """Allowances for the problems of one run. `start_s` is the run's start on the same clock."""

    def __init__(self, policy: BudgetPolicy, num_problems: int, start_s: float, now_s: float) -> None:
        self.policy = policy
        self.deadline_s = None if policy.time_limit_s is None else start_s + policy.time_limit_s - policy.effective_margin_s
        self.base_s = policy.base_s
        if self.base_s is None and self.deadline_s is not None:
            self.base_s = max(0.0, self.deadline_s - now_s) / max(1, num_problems)
        self.max_extra_s = policy.max_extra_s if policy.max_extra_s is not None else (0.6 * self.base_s if self.base_s is not None else None)
        self.buffer_s = 0.0

    def allowance_s(self, now_s: float) -> float | None:
        """Seconds the next problem may take; None when there is no limit at all."""
        allowance = None
        if self.base_s is not None:
            allowance = self.base_s + min(self.buffer_s, self.max_extra_s)
        if self.deadline_s is not None:
            left = max(0.0, self.deadline_s - now_s)
            allowance = left if allowance is None else min(allowance, left)
        return allowance

    def record(self, used_s: float) -> None:
        """A problem took `used_s`: what it left of the base fills the buffer, what it drew empties it."""
        if self.base_s is not None:
            self.buffer_s = max(0.0, self.buffer_s + self.base_s - used_s)

    def is_exhausted(self, now_s: float) -> bool:
        return self.deadline_s is not None and now_s >= self.deadline_s
