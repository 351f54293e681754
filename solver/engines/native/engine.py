"""`NativeEngine`: our own PyTorch engine behind the solver's add / extend / step / abort loop.

Each `step()` is three verbs: the scheduler picks a prefill batch or a decode batch, the model
runner computes logits, and the engine samples one token per sequence and applies the finish
rules (`stop` pauses and keeps the KV for `extend`; `length` and `error` free everything).

Guaranteed (besides `solver.engines.base`):
- greedy output equals transformers' `generate` on the same tokens (CPU float32), alone, batched,
  with shared prefixes, across `extend` and after aborts of other requests;
- a request's draws come from its own CPU generator seeded with `params.seed` (via
  `solver.engines.sampling.sample_tokens`), so they do not depend on the rest of the batch;
- requests with a common prompt share its full KV blocks (see `block_manager`); `extend`
  prefills only the tokens not yet cached;
- `abort` frees a request's blocks at once; when memory runs out the scheduler evicts or
  preempts (see `scheduler`) and never corrupts another request's cache.
With a drafter (ReDrafter, beam width 1) a decode step becomes a verify step: the drafter
proposes up to L tokens per sequence, the model scores the last token and all drafts in one
forward, `speculative.accept` keeps a prefix and adds one token; the finish rules run token by
token over what was kept (a stop token inside the run ends it there, `max_tokens` is never
exceeded), and blocks reserved for rejected drafts are freed. Greedy output equals plain
greedy decoding; sampled output has the model's own distribution (not the same tokens as
without a drafter for a given seed: the draws are used differently). Counters in
`stats.extra`: spec_verify_rows, spec_draft_tokens, spec_accepted_tokens, spec_emitted_tokens,
spec_acceptance_rate and spec_tokens_per_step (tokens emitted per sequence per verify step);
`sampling_fallback_rows` counts decode rows whose nucleus the host finished with a full sort.
On CUDA, decode steps sample inside their graph (`sampling.sample_candidates`) and the draft
loop runs as graphs too (`drafter_runtime.DraftGraphs`).

Overlapped decode (`config.overlap_decode`, without a drafter): `step()` queues decode step N+1
on the device before it reads step N's tokens, so the host's work (reading tokens, finish rules,
scheduling, building the next inputs, launching the graph) runs while the GPU computes instead
of between steps. A sequence's token from step N reaches step N+1 on the device (the runner's
`feed`); `step()` returns step N's deltas, one step behind the device. A row of step N+1 is void
when its sequence stopped or finished at step N, or when step N's sampler left the row to the
host's full sort (the device then fed a placeholder): its result is discarded, its KV slot is
written again by the next step, and its uniform draw is taken back (the generator is rewound),
so every request's tokens are exactly those of plain decoding. Before a prefill step or a step
that could preempt, the queued step is landed first.
Not done: tensor parallelism; sliding-window models; draft beams wider than 1.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch

from solver.engines.base import Delta, EngineStats, FinishReason, Request, SamplingParams, check_extension, check_new_request
from solver.engines.sampling import complete, generator_for, resume_sampling, sample_tokens, sampling_inputs

from .block_manager import BlockManager
from .config import EngineConfig, ModelShape
from .model import CausalLM, from_hf
from .drafter_runtime import DraftProposer, check_compatible
from .model_runner import ModelRunner, kv_dtype, num_kv_blocks
from .scheduler import Scheduler
from .sequence import Sequence, SequenceStatus
from .speculative import accept

CPU_KV_CACHE_BYTES = 4 << 30  # default cap of the cache on CPU
DEFAULT_DRAFT_TOKENS = 3  # when neither the config nor the drafter's export says


class NativeEngine:
    """See the module docstring. `model` is a transformers Llama or Qwen2 causal LM, whose
    weights are copied into our layout (moved to `device` as `dtype`; with `consume_weights` the
    HF model is emptied as they are copied), or an already built `model.CausalLM` (used as is)."""

    def __init__(
        self,
        model,
        *,
        config: EngineConfig = EngineConfig(),
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        consume_weights: bool = False,
        drafter=None,
    ) -> None:
        self.config = config
        if isinstance(model, CausalLM):
            native, shape = model, model.shape
            self.device = model.embed.device
            self.max_model_len = min(config.max_model_len or model.cos.shape[0], model.cos.shape[0])
        else:
            shape = ModelShape.from_hf_config(model.config)
            self.device = torch.device(device) if device is not None else next(model.parameters()).device
            self.max_model_len = min(config.max_model_len or shape.max_position_embeddings, shape.max_position_embeddings)
            native = from_hf(model, self.max_model_len, self.device, dtype, consume=consume_weights)
        timing_rows = min(config.max_num_seqs, 16)  # the decode batch the kernel choices are timed at
        if config.fp8:  # a built model whose linears are already FP8 is used as it is
            from .fp8 import is_quantized, quantize_where_faster

            self.fp8_choice = {} if is_quantized(native) else quantize_where_faster(native, batch_size=timing_rows)
        self.proposer = None
        if drafter is not None:  # on the device before the KV cache takes what is left
            check_compatible(drafter, shape)
            num_draft_tokens = config.num_draft_tokens or drafter.config.num_draft_tokens or DEFAULT_DRAFT_TOKENS
            self.proposer = DraftProposer(drafter.to(self.device, native.embed.dtype), native.embed, num_draft_tokens)
            if config.fp8:  # its vocabulary head reads as many bytes per draft as a 14B model's lm_head
                from .fp8 import quantize_drafter_head_where_faster

                self.fp8_choice["drafter_head"] = quantize_drafter_head_where_faster(self.proposer.drafter, timing_rows)
        kv_element_size = kv_dtype(config, native.embed.dtype).itemsize
        blocks = num_kv_blocks(config, shape, self.max_model_len, self.device, kv_element_size)
        if self.device.type == "cpu" and config.num_kv_blocks is None:
            blocks = min(blocks, 1 + CPU_KV_CACHE_BYTES // (config.block_size * shape.kv_bytes_per_token(kv_element_size)))
        lookahead = self.proposer.num_draft_tokens if self.proposer else 0
        self.runner = ModelRunner(native, config, self.max_model_len, blocks, with_hidden=self.proposer is not None)
        pdl = False
        if self.device.type == "cuda":  # the FP8 linears, quantised here or before (by another engine too)
            from .fp8 import fuse_silu, launch_programmatically
            from .launch import supported

            pdl = config.programmatic_launch and supported(self.device)
            launch_programmatically(native, pdl)
            fuse_silu(native, None)  # until the row kernels' choice (another engine's may be on the model)
        self.attention_backend = _choose_attention(config, native, self.device, pdl)
        self.row_kernel_choice = {}
        if config.row_kernels and self.attention_backend == "triton":  # before the graphs capture the ops
            from .row_kernels import choose_row_kernels

            self.row_kernel_choice = choose_row_kernels(native, self.runner.kv_cache[0], batch_size=timing_rows, pdl=pdl,
                                                        decode_kernel=config.plain_decode_kernel())
        if self.device.type == "cuda" and config.cuda_graph_batch_sizes:
            max_rows = config.max_num_seqs * (1 + lookahead)
            shared_attention = None
            if self.attention_backend == "triton":  # long shared prompts: their own kernel settings
                from .paged_attention import paged_decode_splits

                shared_attention = partial(paged_decode_splits, pdl=pdl, kernel=config.shared_decode_kernel)
            self.runner.enable_graphs(tuple(b for b in config.cuda_graph_batch_sizes if b <= max_rows), shared_attention)
            if self.proposer is not None:
                self.proposer.enable_graphs(tuple(b for b in config.cuda_graph_batch_sizes if b <= config.max_num_seqs))
        self.block_manager = BlockManager(blocks, config.block_size)
        self.scheduler = Scheduler(config, self.block_manager, num_lookahead=lookahead, max_model_len=self.max_model_len)
        self.vocab_size = shape.vocab_size
        self.stats = EngineStats()
        self._seqs: dict[str, Sequence] = {}
        self._pending: list[Delta] = []  # deltas decided outside step() (refusals at add/extend)
        self._queued: _Queued | None = None  # overlapped decode: the step whose tokens are not read yet

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        config: EngineConfig = EngineConfig(),
        drafter_dir: str | Path | None = None,
    ) -> NativeEngine:
        """Load an HF directory or a `.gguf` file through transformers' own loaders (GGUF is
        dequantized), then build the engine: bfloat16 on CUDA when available, else float32.
        `drafter_dir`: an exported ReDrafter drafter (`build.drafter.export`) for speculation."""
        from solver.engines.checkpoint import load_causal_lm

        print(f"native engine: loading {path} ...", file=sys.stderr)
        model, device, dtype = load_causal_lm(path, device, dtype)
        drafter = None
        if drafter_dir is not None:
            from build.drafter.export import load_drafter

            drafter = load_drafter(Path(drafter_dir), device=device, dtype=dtype)
        return cls(model, config=config, device=device, dtype=dtype, consume_weights=True, drafter=drafter)

    # -- the Engine interface ------------------------------------------------------------------

    def add(self, request: Request) -> None:
        check_new_request(request, self._seqs, self.vocab_size)
        seq = Sequence(request.request_id, request.params, generator_for(request.params.seed), list(request.prompt_token_ids))
        self._seqs[seq.request_id] = seq
        if seq.num_tokens > self.max_model_len:
            message = f"prompt of {seq.num_tokens} tokens leaves no room in a context of {self.max_model_len}"
            self._pending.append(self._end(seq, "error", message))
            return
        self.scheduler.add(seq)

    def extend(self, request_id: str, token_ids: tuple[int, ...], params: SamplingParams) -> None:
        seq = self._seqs.get(request_id)
        check_extension(request_id, seq is not None and seq.status is SequenceStatus.PAUSED, token_ids, self.vocab_size)
        resume_sampling(seq, params)
        seq.token_ids += token_ids
        if seq.num_tokens > self.max_model_len:
            self._pending.append(self._end(seq, "length"))
            return
        self.scheduler.resume(seq)

    def step(self) -> list[Delta]:
        deltas, self._pending = self._pending, []
        if self._queued is not None and (self.scheduler.waiting or self.block_manager.num_free_blocks < len(self.scheduler.running)):
            deltas += self._land()  # a prefill, or a decode that might preempt: settle every sequence first
        chunks, decode, failed = self.scheduler.schedule()
        for seq in failed:
            deltas.append(self._end(seq, "error", f"needs {seq.num_tokens} tokens of KV cache; the cache holds fewer"))
        if chunks:
            deltas += self._run(self._prefill, chunks, [c.seq for c in chunks], [c.seq for c in chunks if c.is_last])
        elif decode and self.proposer is not None:
            deltas += self._speculate(decode)
        elif self.config.overlap_decode and (decode or self._queued is not None):
            deltas += self._decode_overlapped(decode)
        elif decode:
            deltas += self._run(self._decode, decode, decode, decode)
        return deltas

    def abort(self, request_id: str) -> None:
        seq = self._seqs.pop(request_id, None)
        if seq is not None and seq.status is not SequenceStatus.FINISHED:
            self.scheduler.finish(seq)

    def has_work(self) -> bool:
        return self.scheduler.has_work() or bool(self._pending) or self._queued is not None

    def close(self) -> None:
        for request_id in list(self._seqs):
            self.abort(request_id)
        self._queued = None
        self.runner = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- introspection -------------------------------------------------------------------------

    def num_used_blocks(self) -> int:
        """KV blocks held by any request (the scratch block not counted)."""
        return self.block_manager.num_blocks - 1 - self.block_manager.num_free_blocks

    # -- one step ------------------------------------------------------------------------------

    def _run(self, forward, batch, seqs: list[Sequence], sampled: list[Sequence]) -> list[Delta]:
        """Run `forward(batch)`, which returns one token for each of `sampled`; if it fails (e.g.
        out of memory) every sequence of the batch ends with "error" and the engine goes on."""
        try:
            with torch.inference_mode():
                tokens = forward(batch)
        except RuntimeError as exc:
            message = f"{type(exc).__name__}: {exc}"
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return [self._end(s, "error", message) for s in seqs]
        return [self._emit(seq, [token]) for seq, token in zip(sampled, tokens)]

    def _prefill(self, chunks) -> list[int]:
        logits = self.runner.prefill(chunks)
        if self.proposer is not None:
            logits, hidden = logits
            for seq, h in zip([c.seq for c in chunks if c.is_last], hidden):
                seq.draft_context = h
        for chunk in chunks:
            self.stats.num_prefill_tokens += chunk.end - chunk.start
            chunk.seq.num_cached_tokens = chunk.end
        last = [c.seq for c in chunks if c.is_last]
        return sample_tokens(logits, [s.params for s in last], [s.generator for s in last]) if last else []

    def _decode(self, seqs: list[Sequence]) -> list[int]:
        temperature, top_p, uniform = sampling_inputs([s.params for s in seqs], [s.generator for s in seqs])
        logits, tokens = self.runner.decode(seqs, (temperature, top_p, uniform))
        self.stats.num_decode_steps += 1
        for seq in seqs:
            seq.num_cached_tokens += 1
        return self._complete(logits, tokens.tolist(), (temperature, top_p, uniform))

    def _complete(self, logits: torch.Tensor, drawn: list[int], sampling: tuple[list[float], list[float], list[float]]) -> list[int]:
        """The drawn tokens with the rows the device sampler left to the host (-1) finished by
        `sampling.complete`; counted in `stats.extra["sampling_fallback_rows"]`."""
        fallback = sum(t < 0 for t in drawn)
        if not fallback:
            return drawn
        self.stats.extra["sampling_fallback_rows"] = self.stats.extra.get("sampling_fallback_rows", 0) + fallback
        with torch.inference_mode():
            return complete(logits, drawn, *sampling)

    # -- overlapped decode -----------------------------------------------------------------------

    def _decode_overlapped(self, seqs: list[Sequence]) -> list[Delta]:
        """Queue a decode step for `seqs`, then land the step queued before it."""
        previous, self._queued = self._queued, None
        # A sequence whose queued token will be its last (max_tokens, context limit) is not fed again.
        rows = [
            s for s in seqs
            if s.num_generated_tokens + s.num_inflight < s.params.max_tokens and s.num_tokens + s.num_inflight <= self.max_model_len
        ]  # fmt: skip
        if rows:
            try:
                self._queued = self._queue(rows, previous)
            except RuntimeError as exc:
                return self._launch_failed(rows, previous, f"{type(exc).__name__}: {exc}")
        return self._land_step(previous, self._queued) if previous is not None else []

    def _queue(self, rows: list[Sequence], previous: _Queued | None) -> _Queued:
        """Draw each row's uniform and queue its decode on the device; a row whose last token is
        still in `previous` takes it from there. On failure nothing has changed (draws rewound)."""
        feed = [previous.index[s] if s.num_inflight else -1 for s in rows]
        draw_states = [s.generator.get_state() if s.params.temperature > 0 else None for s in rows]
        sampling = sampling_inputs([s.params for s in rows], [s.generator for s in rows])
        try:
            with torch.inference_mode():
                logits, tokens = self.runner.decode(rows, sampling, feed)
                ready = None
                if self.device.type == "cuda":  # the next replay reuses the graph's output buffers
                    logits = logits.clone()
                    tokens = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True).copy_(tokens, non_blocking=True)
                    ready = torch.cuda.Event()
                    ready.record()
        except RuntimeError:
            for seq, state in zip(rows, draw_states):
                if state is not None:
                    seq.generator.set_state(state)
            raise
        for seq in rows:
            seq.num_inflight += 1
            seq.num_cached_tokens += 1
        self.stats.num_decode_steps += 1
        return _Queued(rows, {s: i for i, s in enumerate(rows)}, logits, tokens, ready, sampling, draw_states)

    def _launch_failed(self, rows: list[Sequence], previous: _Queued | None, message: str) -> list[Delta]:
        """Land the step before, then end the rows still running with the error; a request that
        landed tokens in this step gets them and the error in one delta."""
        landed = self._land_step(previous, None) if previous is not None else []
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        failing = {s.request_id: s for s in rows if s.status is SequenceStatus.RUNNING}
        deltas = [d for d in landed if d.request_id not in failing]
        tokens = {d.request_id: d.token_ids for d in landed}
        for request_id, seq in failing.items():
            deltas.append(replace(self._end(seq, "error", message), token_ids=tokens.get(request_id, ())))
        return deltas

    def _land(self) -> list[Delta]:
        """Land the queued step (nothing queued after it)."""
        queued, self._queued = self._queued, None
        return self._land_step(queued, None)

    def _land_step(self, step: _Queued, following: _Queued | None) -> list[Delta]:
        """Read a queued step's tokens and apply them; void the rows of `following` (queued
        after it) whose input was not the token the host now appends."""
        try:
            if step.ready is not None:
                step.ready.synchronize()
            drawn = step.tokens.tolist()
            tokens = self._complete(step.logits, drawn, step.sampling)
        except RuntimeError as exc:
            message = f"{type(exc).__name__}: {exc}"
            for seq in step.seqs:
                if seq not in step.void:
                    seq.num_inflight -= 1
                if following is not None and seq in following.index:
                    self._void(following, seq)
            return [self._end(s, "error", message) for s in step.seqs if s.status is SequenceStatus.RUNNING]
        deltas = []
        for i, (seq, token) in enumerate(zip(step.seqs, tokens)):
            if seq in step.void:
                continue
            seq.num_inflight -= 1
            if seq.status is not SequenceStatus.RUNNING:  # aborted while queued
                continue
            delta = self._emit(seq, [token])
            stopped = delta.finish_reason is not None and seq.status is not SequenceStatus.FINISHED  # paused
            if following is not None and seq in following.index and (stopped or drawn[i] < 0):  # -1: fed a placeholder
                self._void(following, seq)
            deltas.append(delta)
        return deltas

    @staticmethod
    def _void(step: _Queued, seq: Sequence) -> None:
        """Discard `seq`'s row of a queued step: it is fed again, with its draw, next step."""
        step.void.add(seq)
        seq.num_inflight -= 1
        seq.num_cached_tokens -= 1
        state = step.draw_states[step.index[seq]]
        if state is not None:
            seq.generator.set_state(state)

    def _emit(self, seq: Sequence, tokens: list[int]) -> Delta:
        """Append `tokens` one by one until a finish rule fires; apply the transition."""
        kept, reason = [], None
        for token in tokens:
            seq.token_ids.append(token)
            seq.num_generated_tokens += 1
            kept.append(token)
            reason = self._finish_reason(seq, token)
            if reason is not None:
                break
        if reason is None:
            if seq.status is not SequenceStatus.RUNNING:
                self.scheduler.start_running(seq)
        elif reason == "stop":
            self.scheduler.pause(seq)
        else:
            self.scheduler.finish(seq)
            self._seqs.pop(seq.request_id, None)
        return Delta(seq.request_id, tuple(kept), reason)

    # -- speculation ---------------------------------------------------------------------------

    def _speculate(self, seqs: list[Sequence]) -> list[Delta]:
        """One verify step for running sequences: draft, score in one forward, keep, roll back."""
        try:
            with torch.inference_mode():
                accepted, next_tokens, drafts = self._verify(seqs)
        except RuntimeError as exc:
            message = f"{type(exc).__name__}: {exc}"
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return [self._end(s, "error", message) for s in seqs]
        deltas = []
        extra = self.stats.extra
        for seq, draft, k, token in zip(seqs, drafts, accepted, next_tokens):
            fed_until = seq.num_tokens + k  # KV now valid for positions < this
            delta = self._emit(seq, draft[:k] + [token])
            extra["spec_verify_rows"] = extra.get("spec_verify_rows", 0) + 1
            extra["spec_draft_tokens"] = extra.get("spec_draft_tokens", 0) + len(draft)
            extra["spec_accepted_tokens"] = extra.get("spec_accepted_tokens", 0) + k
            extra["spec_emitted_tokens"] = extra.get("spec_emitted_tokens", 0) + len(delta.token_ids)
            if seq.status is not SequenceStatus.FINISHED:
                seq.num_cached_tokens = min(fed_until, seq.num_tokens - 1)
                self.block_manager.trim(seq)
            deltas.append(delta)
        extra["spec_acceptance_rate"] = extra["spec_accepted_tokens"] / max(extra["spec_draft_tokens"], 1)
        extra["spec_tokens_per_step"] = extra["spec_emitted_tokens"] / extra["spec_verify_rows"]
        return deltas

    def _verify(self, seqs: list[Sequence]) -> tuple[list[int], list[int], list[list[int]]]:
        """(accepted drafts, next token, drafts) per sequence. Drafts stop short of `max_tokens`
        and of the context limit, so the kept run never needs truncating for length.

        Every host-built tensor goes to the device before the drafter runs: a copy from host
        memory waits for the queued GPU work, so none may come after the verify forward. The
        host waits on the GPU only for the drafts (the runner takes them as lists), for the
        nucleus decision in `accept` when some row is sampled, and for the results."""
        device, width = self.device, self.proposer.num_draft_tokens
        num_drafts = [
            max(0, min(s.num_lookahead_slots, s.params.max_tokens - s.num_generated_tokens - 1, self.max_model_len - s.num_tokens))
            for s in seqs
        ]
        # Rows of the flattened verify output into a [seqs, L + 1] grid (short rows repeat their last).
        starts = [0]
        for n in num_drafts[:-1]:
            starts.append(starts[-1] + n + 1)
        grid = torch.tensor([[start + min(j, n) for j in range(width + 1)] for start, n in zip(starts, num_drafts)], device=device)
        temperature = torch.tensor([s.params.temperature for s in seqs], device=device)
        top_p = torch.tensor([s.params.top_p for s in seqs], device=device)
        # Each sampled request draws 2L + 1 uniforms a step from its own generator, in a fixed
        # order (L for drafts, L acceptance tests, 1 final draw): independent of the batch.
        any_sampled = any(s.params.temperature > 0 for s in seqs)
        uniforms = None
        if any_sampled:
            draws = [torch.rand(2 * width + 1, generator=s.generator) if s.params.temperature > 0 else torch.zeros(2 * width + 1) for s in seqs]
            uniforms = torch.stack(draws).to(device)
        context = torch.stack([s.draft_context for s in seqs])
        last = torch.tensor([s.last_token_id for s in seqs], device=device)
        num_drafts_t = torch.tensor(num_drafts, device=device)
        drafts, draft_probs = self.proposer.propose(context, last, temperature, top_p, None if uniforms is None else uniforms[:, :width])
        draft_lists = [d[:n] for d, n in zip(drafts.tolist(), num_drafts)]
        logits, hidden = self.runner.verify(seqs, draft_lists)
        self.stats.num_decode_steps += 1
        accepted, next_tokens = accept(
            logits[grid], drafts, draft_probs, num_drafts_t, temperature, top_p, None if uniforms is None else uniforms[:, width:],
        )
        context_rows = grid.gather(1, accepted.unsqueeze(1)).squeeze(1)
        for seq, h in zip(seqs, hidden[context_rows]):
            seq.draft_context = h
        accepted_list, next_list = torch.stack([accepted, next_tokens]).tolist()
        return accepted_list, next_list, draft_lists

    def _finish_reason(self, seq: Sequence, token: int) -> FinishReason | None:
        if token in seq.params.stop_token_ids:
            return "stop"
        if seq.num_generated_tokens >= seq.params.max_tokens or seq.num_tokens > self.max_model_len:
            return "length"
        return None

    def _end(self, seq: Sequence, reason: FinishReason, error: str | None = None) -> Delta:
        self.scheduler.finish(seq)
        self._seqs.pop(seq.request_id, None)
        return Delta(seq.request_id, (), reason, error)


@dataclass(eq=False)
class _Queued:
    """A decode step queued on the device whose tokens the host has not read yet."""

    seqs: list[Sequence]
    index: dict[Sequence, int]  # row of each sequence
    logits: torch.Tensor  # kept for rows the host must finish (`sampling.complete`)
    tokens: torch.Tensor  # sampled ids [rows] in host memory, valid once `ready` has passed (CUDA)
    ready: torch.cuda.Event | None
    sampling: tuple[list[float], list[float], list[float]]  # temperature, top_p, uniform per row
    draw_states: list[torch.Tensor | None]  # each sampled row's generator state before its draw
    void: set[Sequence] = field(default_factory=set)  # rows whose result is discarded


def _choose_attention(config: EngineConfig, model, device: torch.device, pdl: bool) -> str:
    """Install the decode attention: the Triton paged kernel on CUDA (unless "torch"), else the
    gather-based one; with it, the paged prefill kernel where `prefill_attention_backend` asks."""
    if device.type != "cuda" or config.attention_backend == "torch":
        return "torch"
    try:
        from .paged_attention import paged_decode_splits
    except ImportError:
        if config.attention_backend == "triton":
            raise
        return "torch"
    from .ops import fused

    model.decode_attn = partial(paged_decode_splits, pdl=pdl, kernel=config.plain_decode_kernel())
    model.ops = fused()
    if config.prefill_attention_backend == "triton":
        from .paged_prefill import paged_prefill_attention

        model.prefill_attn = partial(paged_prefill_attention, pdl=pdl)
    return "triton"
