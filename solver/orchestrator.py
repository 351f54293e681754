"""Solve one problem: N samples through an engine, tool calls in between, early stop, vote.

The loop reads like its description: add the samples, then until a stop rule fires: step the
engine (or wait for tool calls when nothing is generating), route each delta to its sample,
hand finished tool calls back to the engine; finally abort what is left, decode, and vote.

Guarantees:
- every request this module added is aborted in the engine when the problem ends (aborting a
  finished request frees what the engine kept for it), and every sandbox session it opened is
  closed; pending tool calls of aborted samples are cancelled;
- a sample waiting for its tool call never blocks the engine's other samples: code runs in the
  sandbox's worker processes while the engine keeps stepping;
- `max_new_tokens` bounds everything after the prompt, generated tokens and tool output alike,
  so a sample's sequence always fits `prompt + max_new_tokens`;
- the problem's allowance is checked between engine steps, so a problem overruns it by at
  most one engine step.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

from transformers import PreTrainedTokenizerBase

from . import answer as answers
from . import toolcall
from .config import SolverConfig
from .engines.base import Delta, Engine, Request, SamplingParams
from .problems import Problem
from .prompt import prompt_token_ids
from .sample import Sample, SampleStatus, ToolCall
from .stopping import stop_reason
from .tokenizer import TOOL_CALL_END, single_token_id, stop_token_ids
from .vote import ballot, majority, vote_counts

_TOOL_WAIT_S = 1.0  # longest wait for a tool call before the deadline is checked again


class ToolRunner(Protocol):
    """What the orchestrator needs of a sandbox (`sandbox.Sandbox` provides it)."""

    def submit(self, session_id: str, code: str, timeout_s: float) -> concurrent.futures.Future: ...

    def close_session(self, session_id: str) -> None: ...


@dataclass
class ProblemResult:
    problem: Problem
    answer: int
    answer_source: str  # "vote" | "fallback"
    votes: dict[int, int]
    stop_reason: str
    allowance_s: float | None
    wall_s: float
    started_at: str
    samples: list[Sample]
    error: str | None = None
    engine_counters: dict[str, float] = field(default_factory=dict)  # this problem's share

    @property
    def is_correct(self) -> bool | None:
        expected = self.problem.expected_answer
        return None if expected is None else self.answer == expected

    @property
    def num_generated_tokens(self) -> int:
        return sum(sample.num_generated_tokens for sample in self.samples)

    def record(self) -> dict:
        """The run-log form (see docs/runlog.md)."""
        return {
            "kind": "problem",
            "version": 1,
            "problem_id": self.problem.id,
            "problem_sha": self.problem.sha,
            "problem": self.problem.text,
            "expected_answer": self.problem.expected_answer,
            "answer": self.answer,
            "answer_source": self.answer_source,
            "votes": {str(key): value for key, value in self.votes.items()},
            "is_correct": self.is_correct,
            "stop_reason": self.stop_reason,
            "allowance_s": self.allowance_s,
            "wall_s": self.wall_s,
            "started_at": self.started_at,
            "error": self.error,
            "engine_counters": self.engine_counters,
            "samples": [sample.record() for sample in self.samples],
        }


@dataclass
class _ProblemState:
    problem: Problem
    samples: list[Sample]
    start_s: float
    deadline_s: float | None
    by_request: dict[str, Sample] = field(default_factory=dict)
    finish_order: list[Sample] = field(default_factory=list)
    pending: dict[concurrent.futures.Future, tuple[Sample, str, float]] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)
    stop_reason: str | None = None
    counters_at_start: dict[str, float] = field(default_factory=dict)


class Orchestrator:
    def __init__(
        self,
        engine: Engine,
        tokenizer: PreTrainedTokenizerBase,
        config: SolverConfig,
        tools: ToolRunner | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.config = config
        self.clock = clock
        self.eos_ids = stop_token_ids(tokenizer)
        self.tool_end_id = single_token_id(tokenizer, TOOL_CALL_END) if tools and config.tools.enabled else None
        self.tools = tools if self.tool_end_id is not None else None

    @property
    def tools_active(self) -> bool:
        return self.tools is not None

    # --- the loop ---------------------------------------------------------------------------

    def solve(self, problem: Problem, allowance_s: float | None = None) -> ProblemResult:
        state = self._start(problem, allowance_s)
        try:
            while state.stop_reason is None:
                self._advance(state)
                state.stop_reason = self._check_stop(state)
        finally:
            self._end(state)
        return self._result(state, allowance_s)

    def _start(self, problem: Problem, allowance_s: float | None) -> _ProblemState:
        start_s = self.clock()
        deadline_s = None if allowance_s is None else start_s + allowance_s
        samples = [self._new_sample(problem, index) for index in range(self.config.num_samples)]
        state = _ProblemState(problem, samples, start_s, deadline_s, by_request={s.request_id: s for s in samples}, counters_at_start=engine_counters(self.engine))
        prompt_ids = prompt_token_ids(self.tokenizer, problem.text)
        for sample in samples:
            self.engine.add(Request(sample.request_id, prompt_ids, self._params(sample, self.config.max_new_tokens)))
            sample.status = SampleStatus.RUNNING
        return state

    def _advance(self, state: _ProblemState) -> None:
        if self.engine.has_work():
            for delta in self.engine.step():
                self._on_delta(state, delta)
        elif state.pending:
            self._wait_for_tools(state)
        else:
            self._drop_lost_samples(state)
        self._collect_tool_results(state)

    def _check_stop(self, state: _ProblemState) -> str | None:
        if state.deadline_s is not None and self.clock() >= state.deadline_s:
            return "deadline"
        finished = [sample.answer for sample in state.finish_order]
        return stop_reason(finished, self.config.num_samples, self.config.stop_after, self.config.consensus)

    # --- engine deltas ----------------------------------------------------------------------

    def _on_delta(self, state: _ProblemState, delta: Delta) -> None:
        sample = state.by_request.get(delta.request_id)
        if sample is None or sample.status is not SampleStatus.RUNNING:
            return  # a late delta for a request already ended or paused
        if delta.token_ids:
            if sample.first_token_s is None:
                sample.first_token_s = self._since_start(state)
            sample.token_ids.extend(delta.token_ids)
            sample.num_generated_tokens += len(delta.token_ids)
        if delta.finish_reason is None:
            return
        if self._is_tool_stop(sample, delta):
            self._start_tool_call(state, sample)
        else:
            self._finish(state, sample, delta.finish_reason, delta.error)

    def _is_tool_stop(self, sample: Sample, delta: Delta) -> bool:
        return delta.finish_reason == "stop" and self.tool_end_id is not None and sample.token_ids[-1:] == [self.tool_end_id]

    def _finish(self, state: _ProblemState, sample: Sample, reason: str, error: str | None = None) -> None:
        sample.finish(reason, self._since_start(state), error)
        self._read_answer(sample)
        state.finish_order.append(sample)

    def _drop_lost_samples(self, state: _ProblemState) -> None:
        """The engine has no work but samples still run: it lost them. Never loop forever."""
        for sample in state.samples:
            if sample.status is SampleStatus.RUNNING:
                self._finish(state, sample, "error", "the engine stopped reporting this request")

    # --- tool calls -------------------------------------------------------------------------

    def _start_tool_call(self, state: _ProblemState, sample: Sample) -> None:
        tools = self.config.tools
        code = toolcall.extract_code(self._decode(sample))
        if sample.num_tool_calls_made >= tools.max_calls:
            self._resume(state, sample, ToolCall(code or "", "skipped", 0.0, toolcall.output_block(toolcall.NO_CALLS_LEFT_MESSAGE), 0))
        elif code is None:
            self._resume(state, sample, ToolCall("", "empty", 0.0, toolcall.output_block(toolcall.NO_CODE_MESSAGE), 0))
        else:
            assert self.tools is not None
            sample.status = SampleStatus.TOOL
            state.sessions.add(sample.request_id)
            future = self.tools.submit(sample.request_id, code, tools.timeout_s)
            state.pending[future] = (sample, code, time.perf_counter())

    def _wait_for_tools(self, state: _ProblemState) -> None:
        timeout_s = _TOOL_WAIT_S if state.deadline_s is None else max(0.0, min(_TOOL_WAIT_S, state.deadline_s - self.clock()))
        concurrent.futures.wait(list(state.pending), timeout=timeout_s, return_when=concurrent.futures.FIRST_COMPLETED)

    def _collect_tool_results(self, state: _ProblemState) -> None:
        for future in [f for f in state.pending if f.done()]:
            sample, code, started = state.pending.pop(future)
            wall_s = time.perf_counter() - started
            status, output, run_s = self._tool_output(future)
            self._resume(state, sample, ToolCall(code, status, wall_s, output, 0, run_s))

    def _tool_output(self, future: concurrent.futures.Future) -> tuple[str, str, float]:
        """Status, the text the model reads (streams already cut by the sandbox), run seconds."""
        if future.cancelled():
            return "crashed", toolcall.output_block("", "The code run was cancelled.\n"), 0.0
        result = future.result()
        stderr = result.stderr
        if result.status == "timeout":
            stderr += toolcall.timeout_text(self.config.tools.timeout_s)
        elif result.status in ("crashed", "output_limit") and result.note:
            stderr += result.note.rstrip() + "\n"
        if result.state_lost:
            stderr += toolcall.STATE_LOST_MESSAGE
        return result.status, toolcall.output_block(result.stdout, stderr), result.wall_s

    def _resume(self, state: _ProblemState, sample: Sample, call: ToolCall) -> None:
        """Append the tool's output to the sample and let the engine continue from there."""
        output_ids = tuple(self.tokenizer.encode(call.output, add_special_tokens=False))
        call.num_tokens = len(output_ids)
        sample.tool_calls.append(call)
        sample.token_ids.extend(output_ids)
        sample.num_tool_tokens += len(output_ids)
        sample.status = SampleStatus.RUNNING
        remaining = self.config.max_new_tokens - len(sample.token_ids)
        if remaining <= 0:
            self._finish(state, sample, "length")
            return
        self.engine.extend(sample.request_id, output_ids, self._params(sample, remaining))

    # --- the end ----------------------------------------------------------------------------

    def _end(self, state: _ProblemState) -> None:
        reason = "deadline" if state.stop_reason == "deadline" else "aborted"
        for sample in state.samples:
            self.engine.abort(sample.request_id)
            if not sample.is_done:
                sample.finish(reason, self._since_start(state))
                self._read_answer(sample)
        for future in state.pending:
            future.cancel()
        state.pending.clear()
        if self.tools is not None:
            for session_id in state.sessions:
                self.tools.close_session(session_id)

    def _result(self, state: _ProblemState, allowance_s: float | None) -> ProblemResult:
        voters = state.finish_order + [s for s in state.samples if s.finish_reason == "deadline"]
        ballots = [ballot(s.answer, s.finish_reason) for s in voters]
        voted = majority(ballots)
        return ProblemResult(
            problem=state.problem,
            answer=self.config.fallback_answer if voted is None else voted,
            answer_source="fallback" if voted is None else "vote",
            votes=dict(vote_counts(ballots)),
            stop_reason=state.stop_reason or "error",
            allowance_s=allowance_s,
            wall_s=self._since_start(state),
            started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            samples=state.samples,
            engine_counters=_difference(engine_counters(self.engine), state.counters_at_start),
        )

    # --- small helpers ----------------------------------------------------------------------

    def _new_sample(self, problem: Problem, index: int) -> Sample:
        return Sample(index=index, seed=sample_seed(self.config.seed, problem.id, index), request_id=f"{problem.id}#{index}")

    def _params(self, sample: Sample, max_tokens: int) -> SamplingParams:
        stop_ids = self.eos_ids + ((self.tool_end_id,) if self.tool_end_id is not None else ())
        return SamplingParams(max_tokens, self.config.temperature, self.config.top_p, sample.seed, stop_ids)

    def _decode(self, sample: Sample) -> str:
        return self.tokenizer.decode(sample.token_ids, skip_special_tokens=False)

    def _read_answer(self, sample: Sample) -> None:
        sample.text = self._decode(sample)
        sample.boxed = answers.extract_boxed(sample.text)
        sample.answer = answers.to_integer(sample.boxed, self.config.answer_modulus)

    def _since_start(self, state: _ProblemState) -> float:
        return self.clock() - state.start_s


def engine_counters(engine: Engine) -> dict[str, float]:
    """The engine's cumulative counters (prefill tokens, decode steps, draft tokens proposed and
    accepted, ...) where it keeps `stats`; ratios are left out, they do not add up."""
    stats = getattr(engine, "stats", None)
    if stats is None:
        return {}
    counters = {name: getattr(stats, name) for name in ("num_prefill_tokens", "num_cached_prompt_tokens", "num_decode_steps") if hasattr(stats, name)}
    counters.update(getattr(stats, "extra", {}) or {})
    return {k: float(v) for k, v in counters.items() if isinstance(v, (int, float)) and not k.endswith(("_rate", "_per_step"))}


def _difference(end: dict[str, float], start: dict[str, float]) -> dict[str, float]:
    return {name: value - start.get(name, 0.0) for name, value in end.items()}


def sample_seed(seed: int, problem_id: str, index: int) -> int:
    """A distinct, reproducible 31-bit seed per (run seed, problem, sample)."""
    digest = hashlib.sha256(f"{seed}:{problem_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
