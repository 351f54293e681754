"""Offline policy replay: what other stopping rules, sample counts and time budgets would have
scored and cost on a logged run, without generating again.

A replayed problem record has the run-log shape (docs/runlog.md), so the report computes the same
columns for logged and replayed runs. The rules are the solver's own: `solver.stopping.stop_reason`
in finish order, `solver.vote.majority` over the orchestrator's voting finish reasons.

The model of one problem (exact on a step clock, see tests/solver/test_policy_replay.py):
- samples run concurrently and each finishes at its logged `finished_s`, whatever the policy;
  `n` keeps the first n samples by index (a run with N=n draws the same seeds), with the same
  timings, although a smaller batch would step faster on a real engine;
- samples finishing at the same `finished_s` finish in one engine step, in index order; the stop
  rules are checked after each step, as the orchestrator does;
- a budget `B` cuts the problem at B: samples with `finished_s <= B` finish, the others end with
  "deadline"; the orchestrator checks its clock between engine steps, so on a real engine the cut
  lands up to one step later;
- samples still running at the stop are cut: "aborted" by a stop rule, "deadline" by the budget.
  Their tokens and tool calls are estimated by linear progress between the first token and the
  logged end. Approximation: cut samples never vote (the log cannot tell whether a sample had
  already written its box when cut; the real orchestrator lets a deadline-cut box vote);
- a sample the log itself cut ("aborted"/"deadline") has no known finish: if the policy would
  wait for it, the replay stops where the log ends, with stop reason "log_end", and keeps those
  samples as logged. Replays are exact only for policies at least as strict as the logged one,
  so log with generous limits (all N samples finished, no budget).
- a problem's time is the stop time plus the logged tail after the last sample ended (abort,
  decode, vote).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .stopping import Consensus, stop_reason
from .vote import ballot, majority, vote_counts

CUT_FINISH_REASONS = ("aborted", "deadline")  # a logged cut: the sample's own finish is unknown
_OFF = ("off", "none", "all", "")


@dataclass(frozen=True)
class ReplayPolicy:
    num_samples: int | None = None  # the first n samples by index; None: every logged sample
    stop_after: int | None = None  # first K finished; None: off
    consensus: Consensus | None = None
    budget_s: float | None = None  # seconds per problem; None: no cut

    def __post_init__(self) -> None:
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError(f"replay n must be >= 1, got {self.num_samples}")
        if self.stop_after is not None and not 1 <= self.stop_after <= (self.num_samples or self.stop_after):
            raise ValueError(f"replay K must be between 1 and n ({self.num_samples}), got {self.stop_after}")
        if self.budget_s is not None and self.budget_s < 0:
            raise ValueError(f"replay budget must be >= 0 seconds, got {self.budget_s}")

    @classmethod
    def parse(cls, text: str) -> ReplayPolicy:
        """"n=8 K=6 consensus=4/5 budget=60" (any subset; off/none/all for no limit)."""
        fields: dict[str, object] = {}
        for item in text.replace(",", " ").split():
            key, sep, value = item.partition("=")
            if not sep or key not in _PARSERS:
                raise ValueError(f"replay policy items look like n=8 K=6 consensus=4/5 budget=60, got {item!r} in {text!r}")
            name, parse = _PARSERS[key]
            fields[name] = None if value.lower() in _OFF else parse(value)
        return cls(**fields)

    @classmethod
    def of_run(cls, config: dict) -> ReplayPolicy:
        """The stop rules a logged run used (its `run` record's config), without its budget."""
        solver = config.get("solver", {})
        consensus = solver.get("consensus")
        if isinstance(consensus, dict):
            consensus = Consensus(consensus["votes"], consensus["window"])
        elif isinstance(consensus, str):
            consensus = Consensus.parse(consensus)
        return cls(None, solver.get("stop_after"), consensus)

    def label(self) -> str:
        budget = "none" if self.budget_s is None else f"{self.budget_s:g}s"
        return f"n={self.num_samples or 'all'} K={self.stop_after or 'off'} consensus={self.consensus or 'off'} budget={budget}"


_PARSERS = {
    "n": ("num_samples", int),
    "K": ("stop_after", int),
    "consensus": ("consensus", Consensus.parse),
    "budget": ("budget_s", lambda value: float(value.removesuffix("s"))),
}


def replay_records(records: list[dict], policy: ReplayPolicy, fallback_answer: int = 0) -> list[dict]:
    return [replay_problem(record, policy, fallback_answer) for record in records]


def replay_problem(record: dict, policy: ReplayPolicy, fallback_answer: int = 0) -> dict:
    """The problem record a run with `policy` would have written, from a logged one."""
    if record.get("error") is not None:
        return record  # nothing ran: a failure stays a failure
    if policy.num_samples is not None and policy.num_samples > len(record["samples"]):
        raise ValueError(f"problem {record['problem_id']!r} has {len(record['samples'])} logged samples; a replay cannot use n={policy.num_samples}")
    samples = [s for s in record["samples"] if policy.num_samples is None or s["index"] < policy.num_samples]
    stop_s, reason, finished = simulate(samples, policy)
    done = {s["index"] for s in finished}
    ended = [s if s["index"] in done or reason == "log_end" else cut_sample(s, stop_s, reason) for s in samples]
    voters = finished + [s for s in ended if s["finish_reason"] == "deadline"]  # as Orchestrator._result
    ballots = [ballot(s["answer"], s["finish_reason"]) for s in voters]
    return _replayed_record(record, policy, ballots, fallback_answer, reason, stop_s, ended)


def simulate(samples: list[dict], policy: ReplayPolicy) -> tuple[float, str, list[dict]]:
    """When the problem stops, why, and the samples that finished before, in finish order."""
    known = sorted((s for s in samples if s["finish_reason"] not in CUT_FINISH_REASONS), key=lambda s: (s["finished_s"], s["index"]))
    budget_s = policy.budget_s
    finished: list[dict] = []
    for at_s, step in itertools.groupby(known, key=lambda s: s["finished_s"]):
        if budget_s is not None and at_s > budget_s:
            return budget_s, "deadline", finished
        finished.extend(step)
        if budget_s is not None and at_s >= budget_s:
            return at_s, "deadline", finished  # the orchestrator checks its deadline first
        reason = stop_reason([s["answer"] for s in finished], len(samples), policy.stop_after, policy.consensus)
        if reason is not None:
            return at_s, reason, finished
    log_end_s = max((s["finished_s"] or 0.0 for s in samples), default=0.0)
    if budget_s is not None and budget_s < log_end_s:
        return budget_s, "deadline", finished
    return log_end_s, "log_end", finished


def cut_sample(sample: dict, at_s: float, stop: str) -> dict:
    """The sample as it was at `at_s`, ended by the problem's stop (no vote: see the module doc)."""
    num_tokens = tokens_at(sample, at_s)
    full = max(1, sample["num_generated_tokens"])
    calls = sample["tool_calls"][: len(sample["tool_calls"]) * num_tokens // full]
    reached_first_token = sample["first_token_s"] is not None and sample["first_token_s"] <= at_s
    return {
        **sample,
        "text": None,  # not reconstructed
        "finish_reason": "deadline" if stop == "deadline" else "aborted",
        "boxed": None,
        "answer": None,
        "num_generated_tokens": num_tokens,
        "num_tool_tokens": sum(call["num_tokens"] for call in calls),
        "tool_calls": calls,
        "first_token_s": sample["first_token_s"] if reached_first_token else None,
        "finished_s": at_s,
    }


def tokens_at(sample: dict, at_s: float) -> int:
    """Generated tokens at `at_s` (seconds since the problem started): one at the first token,
    all at the logged end, linear in between (exact when tokens come at a steady step rate)."""
    total, first_s, end_s = sample["num_generated_tokens"], sample["first_token_s"], sample["finished_s"]
    if total == 0 or first_s is None or at_s < first_s:
        return 0
    if end_s is None or at_s >= end_s or end_s <= first_s:
        return total
    return min(total, 1 + round((total - 1) * (at_s - first_s) / (end_s - first_s)))


def _replayed_record(record: dict, policy: ReplayPolicy, ballots: list, fallback: int, reason: str, stop_s: float, samples: list[dict]) -> dict:
    voted = majority(ballots)
    answer = fallback if voted is None else voted
    expected = record.get("expected_answer")
    return {
        **record,
        "answer": answer,
        "answer_source": "fallback" if voted is None else "vote",
        "votes": {str(key): value for key, value in vote_counts(ballots).items()},
        "is_correct": None if expected is None else answer == expected,
        "stop_reason": reason,
        "allowance_s": policy.budget_s,
        "wall_s": record["wall_s"] if reason == "log_end" else stop_s + _tail_s(record),
        "samples": samples,
        "replay_policy": policy.label(),
    }


def _tail_s(record: dict) -> float:
    """Logged seconds between the last sample's end and the problem's end (abort, decode, vote)."""
    last_s = max((s["finished_s"] or 0.0 for s in record["samples"]), default=0.0)
    return max(0.0, record["wall_s"] - last_s)
