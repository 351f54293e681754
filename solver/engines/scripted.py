"""Test equipment: an engine that streams given completions as a model would.

`ScriptedEngine(tokenizer, script)` asks `script(request)` for each request's completion text
and streams its tokens, `tokens_per_step` per step for every running request, sleeping
`step_delay_s` per step to model a memory-bound decode step (its cost does not grow with the
batch). It honours the interface exactly: stop token ids end a request with "stop" (the stop
token included), `max_tokens` gives "length", `extend` resumes a stopped request, `abort` ends
one at once. A completion that holds tool calls is cut after each `</tool_call>`; when the
solver extends the request with the real tool output, the output block the script itself
recorded right after the tag is skipped, so what follows comes from the script and the output
from the sandbox. Every abort, extend and prefilled token is counted for tests.

Never a default and never behind `submission.py` without an explicit flag.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from ..tokenizer import TOOL_CALL_END
from .base import Delta, EngineStats, Request, SamplingParams

_RECORDED_OUTPUT = re.compile(r"^\s*```output\n.*?```[ \t]*\n?", re.DOTALL)


def split_at_tool_calls(completion: str) -> list[str]:
    """`a</tool_call>b</tool_call>c` -> ["a</tool_call>", "b</tool_call>", "c"] (empty tail dropped)."""
    parts = completion.split(TOOL_CALL_END)
    segments = [part + TOOL_CALL_END for part in parts[:-1]]
    return segments + ([parts[-1]] if parts[-1] else [])


@dataclass
class _Stream:
    params: SamplingParams
    pending: list[int]  # script tokens not yet emitted
    later: list[str]  # script segments after the current one
    num_generated: int = 0
    is_running: bool = True


@dataclass
class ScriptedEngine:
    tokenizer: PreTrainedTokenizerBase
    script: Callable[[Request], str]
    tokens_per_step: int = 1
    step_delay_s: float = 0.0
    aborted: list[str] = field(default_factory=list)
    extended: list[str] = field(default_factory=list)
    num_prefill_tokens: int = 0
    _streams: dict[str, _Stream] = field(default_factory=dict)
    _errors: list[Delta] = field(default_factory=list)

    def add(self, request: Request) -> None:
        assert request.request_id not in self._streams, f"request id {request.request_id} in use"
        self.num_prefill_tokens += len(request.prompt_token_ids)
        try:
            segments = split_at_tool_calls(self.script(request))
        except LookupError as exc:
            self._errors.append(Delta(request.request_id, finish_reason="error", error=str(exc)))
            return
        self._streams[request.request_id] = _Stream(request.params, [], segments)
        self._load_next_segment(self._streams[request.request_id], skip_recorded_output=False)

    def extend(self, request_id: str, token_ids: tuple[int, ...], params: SamplingParams) -> None:
        stream = self._streams[request_id]
        assert not stream.is_running, f"extend of {request_id}, which is still running"
        self.extended.append(request_id)
        self.num_prefill_tokens += len(token_ids)
        stream.params, stream.num_generated, stream.is_running = params, 0, True
        if not stream.pending:
            self._load_next_segment(stream, skip_recorded_output=True)

    def step(self) -> list[Delta]:
        deltas, self._errors = self._errors, []
        running = [(rid, s) for rid, s in self._streams.items() if s.is_running]
        if running and self.step_delay_s:
            time.sleep(self.step_delay_s)
        deltas.extend(self._advance(rid, stream) for rid, stream in running)
        return deltas

    def abort(self, request_id: str) -> None:
        if self._streams.pop(request_id, None) is not None:
            self.aborted.append(request_id)

    def has_work(self) -> bool:
        return bool(self._errors) or any(stream.is_running for stream in self._streams.values())

    def close(self) -> None:
        self._streams.clear()

    @property
    def stats(self) -> EngineStats:
        return EngineStats(num_prefill_tokens=self.num_prefill_tokens)

    # --- internals ----------------------------------------------------------------------------

    def _advance(self, request_id: str, stream: _Stream) -> Delta:
        emitted: list[int] = []
        for _ in range(self.tokens_per_step):
            if not stream.pending and not self._load_next_segment(stream, skip_recorded_output=False):
                stream.pending.append(self._eos_id())
            token = stream.pending.pop(0)
            emitted.append(token)
            stream.num_generated += 1
            if token in stream.params.stop_token_ids:
                return self._pause(request_id, stream, emitted, "stop")
            if stream.num_generated >= stream.params.max_tokens:
                return self._pause(request_id, stream, emitted, "length")
        return Delta(request_id, tuple(emitted))

    def _pause(self, request_id: str, stream: _Stream, emitted: list[int], reason: str) -> Delta:
        stream.is_running = False
        return Delta(request_id, tuple(emitted), finish_reason=reason)  # type: ignore[arg-type]

    def _load_next_segment(self, stream: _Stream, skip_recorded_output: bool) -> bool:
        if not stream.later:
            return False
        text = stream.later.pop(0)
        if skip_recorded_output:
            text = _RECORDED_OUTPUT.sub("", text, count=1)
        stream.pending.extend(self.tokenizer.encode(text, add_special_tokens=False))
        return True

    def _eos_id(self) -> int:
        assert self.tokenizer.eos_token_id is not None, "the scripted engine needs a tokenizer with an EOS token"
        return self.tokenizer.eos_token_id
