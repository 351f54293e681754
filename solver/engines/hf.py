"""The Hugging Face transformers backend: any HF directory or GGUF file, on CPU or one GPU.

`HFEngine` runs its own scheduling loop over the model's plain forward pass. Each `step()`:
1. drops rows of requests aborted since the last step;
2. decodes every running request together, one token each, in one batched forward over a
   left-padded `DynamicCache` (row i's KV is right-aligned; a per-row attention mask hides the
   padding and per-row position ids keep rotary positions exact);
3. admits queued work while fewer than `max_batch_size` requests run: a new prompt, or a paused
   request resumed by `extend`, is prefilled on its own (batch of one, no padding), gets its first
   token, and its KV rows are merged into the running batch.

Guaranteed:
- the interface of `solver.engines.base`: one delta per running request per step (one token),
  exactly one finishing delta per request (per continuation) unless aborted, the stop token
  included last, a failed forward reported as "error" deltas and never raised from `step()`;
- greedy (temperature 0) output equals `model.generate(do_sample=False)` on the same tokens, up to
  float rounding between a padded batch and a lone sequence (argmax ties can differ);
- a sampled request's draws come from its own CPU `torch.Generator` seeded with `params.seed`,
  one uniform number per token, so they do not depend on what else is in the batch or the device;
- a request that stopped keeps its own un-padded KV; `extend` prefills only the tokens not yet
  cached (the stop token plus the appended ones);
- requests queued back to back with the same prompt (the solver's N samples) share one prefill;
  their KV rows are copies of it;
- waiting work is admitted first in, first out; aborted rows are freed at the next `step()`, a
  paused or queued request at once.

Not guaranteed / not done:
- speed: this is the reference backend, not a paged-KV engine. Every decode step attends over
  the padded width of the batch and `DynamicCache` copies the whole cache as it grows by one
  token; merging or removing rows copies it again. Prefills are not batched with each other.
- sharing beyond identical prompts: rows of one prompt are copies (no copy-on-write blocks).
- models whose cache is not plain full attention (sliding-window, hybrid or linear-attention
  layers) are refused at construction.
- a forward that fails during a batched decode (for example out of memory) ends every request in
  that batch with "error"; a failed prefill ends only its own requests.
"""

from __future__ import annotations

import enum
import inspect
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DynamicCache, PreTrainedModel

from solver.engines.base import Delta, EngineStats, FinishReason, Request, SamplingParams, check_extension, check_new_request
from solver.engines.checkpoint import load_causal_lm, resolve_dtype
from solver.engines.sampling import generator_for, resume_sampling, sample_tokens

# One (keys, values) pair per layer, each [rows, kv_heads, tokens, head_dim].
KV = list[tuple[torch.Tensor, torch.Tensor]]


class _Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PAUSED = "paused"
    FREED = "freed"  # finished for good or aborted: nothing is kept


@dataclass(eq=False)
class _Sequence:
    """One request's state. `pending_token_ids` are tokens of the sequence not yet in the KV
    cache: the prompt before prefill, then the last sampled token (plus appended tokens after
    `extend`). `kv` is the request's own un-padded cache while it waits or is paused."""

    request_id: str
    params: SamplingParams
    generator: torch.Generator
    pending_token_ids: tuple[int, ...]
    status: _Status = _Status.WAITING
    num_cached_tokens: int = 0
    num_generated_tokens: int = 0
    kv: KV | None = None

    @property
    def num_tokens(self) -> int:
        return self.num_cached_tokens + len(self.pending_token_ids)

    @property
    def is_new(self) -> bool:
        return self.num_cached_tokens == 0


# ---------------------------------------------------------------------------------------------
# KV tensors: pure helpers over lists of per-layer (keys, values).


def _kv_of(cache: DynamicCache) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache_of(kv: KV | None) -> DynamicCache:
    cache = DynamicCache()
    for layer_idx, (keys, values) in enumerate(kv or ()):
        cache.update(keys, values, layer_idx)
    return cache


def _left_pad(kv: KV, width: int) -> KV:
    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, 0, width - t.shape[-2], 0))

    return [(pad(k), pad(v)) for k, v in kv]


def _concat_rows(first: KV, second: KV) -> KV:
    width = max(first[0][0].shape[-2], second[0][0].shape[-2])
    padded = zip(_left_pad(first, width), _left_pad(second, width))
    return [(torch.cat([k1, k2]), torch.cat([v1, v2])) for (k1, v1), (k2, v2) in padded]


def _replicate(kv: KV, num_rows: int) -> KV:
    return [(k.expand(num_rows, -1, -1, -1), v.expand(num_rows, -1, -1, -1)) for k, v in kv]


def _slice(kv: KV, rows: torch.Tensor | slice, first_token: int) -> KV:
    return [(k[rows, :, first_token:], v[rows, :, first_token:]) for k, v in kv]


# ---------------------------------------------------------------------------------------------
# The running batch.


class _Batch:
    """The running sequences and their left-padded shared cache. Row i holds `seqs[i]`'s
    `num_cached_tokens` KV entries right-aligned in a cache `width` tokens wide."""

    def __init__(self) -> None:
        self.seqs: list[_Sequence] = []
        self.cache: DynamicCache | None = None

    @property
    def width(self) -> int:
        return self.cache.get_seq_length() if self.cache is not None else 0

    def attention_mask(self, num_new_tokens: int, device: torch.device) -> torch.Tensor:
        """[rows, width + num_new_tokens]: 1 on real tokens, 0 on left padding."""
        lengths = torch.tensor([s.num_cached_tokens + num_new_tokens for s in self.seqs], device=device)
        columns = torch.arange(self.width + num_new_tokens, device=device)
        return (columns >= self.width + num_new_tokens - lengths.unsqueeze(-1)).long()

    def row_kv(self, row: int) -> KV:
        """A copy of one row's KV without padding, so the batch tensors can be freed."""
        first_token = self.width - self.seqs[row].num_cached_tokens
        return [(k.clone(), v.clone()) for k, v in _slice(_kv_of(self.cache), slice(row, row + 1), first_token)]

    def merge(self, seqs: list[_Sequence], kv: KV) -> None:
        """Append rows; `kv` holds one row per sequence, all of equal length."""
        if not seqs:
            return
        merged = kv if self.cache is None else _concat_rows(_kv_of(self.cache), kv)
        self.cache = _cache_of(merged)
        self.seqs.extend(seqs)

    def keep(self, keep: list[bool]) -> None:
        """Drop the rows whose flag is False and the padding columns no kept row needs."""
        if all(keep):
            return
        self.seqs = [s for s, k in zip(self.seqs, keep) if k]
        if not self.seqs:
            self.cache = None
            return
        rows = torch.tensor([i for i, k in enumerate(keep) if k], device=self.cache.layers[0].keys.device)
        first_token = self.width - max(s.num_cached_tokens for s in self.seqs)
        self.cache = _cache_of(_slice(_kv_of(self.cache), rows, first_token))

    def num_kv_tokens(self) -> int:
        return len(self.seqs) * self.width


# ---------------------------------------------------------------------------------------------
# The engine.


class HFEngine:
    """In-flight batching over a transformers causal LM. See the module docstring."""

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        max_batch_size: int = 64,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        _check_full_attention(model)
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=resolve_dtype(dtype))
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.max_position_embeddings = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        self.vocab_size = model.get_input_embeddings().num_embeddings
        self.stats = EngineStats()
        self._cache_arg, self._extra_forward_args = _forward_args(model)
        self._seqs: dict[str, _Sequence] = {}
        self._waiting: deque[_Sequence] = deque()
        self._batch = _Batch()

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        max_batch_size: int = 64,
    ) -> HFEngine:
        """Load an HF model directory or a `.gguf` file: by default bfloat16 on CUDA when
        available, else float32 on CPU (GGUF weights are dequantized on load). `dtype` may be a
        torch dtype or its name ("bfloat16")."""
        model, device, _ = load_causal_lm(path, device, dtype)
        return cls(model, device=device, max_batch_size=max_batch_size)

    # -- the Engine interface ------------------------------------------------------------------

    def add(self, request: Request) -> None:
        check_new_request(request, self._seqs, self.vocab_size)
        seq = _Sequence(
            request_id=request.request_id,
            params=request.params,
            generator=generator_for(request.params.seed),
            pending_token_ids=tuple(request.prompt_token_ids),
        )
        self._seqs[seq.request_id] = seq
        self._waiting.append(seq)

    def extend(self, request_id: str, token_ids: tuple[int, ...], params: SamplingParams) -> None:
        seq = self._seqs.get(request_id)
        check_extension(request_id, seq is not None and seq.status is _Status.PAUSED, token_ids, self.vocab_size)
        resume_sampling(seq, params)
        seq.pending_token_ids += tuple(token_ids)
        seq.status = _Status.WAITING
        self._waiting.append(seq)

    def step(self) -> list[Delta]:
        with torch.inference_mode():
            self._drop_aborted_rows()
            deltas = self._decode() if self._batch.seqs else []
            return deltas + self._admit()

    def abort(self, request_id: str) -> None:
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            return
        if seq.status is _Status.WAITING:
            self._waiting.remove(seq)
        seq.status = _Status.FREED
        seq.kv = None

    def has_work(self) -> bool:
        return bool(self._waiting) or any(s.status is _Status.RUNNING for s in self._batch.seqs)

    def close(self) -> None:
        self._seqs.clear()
        self._waiting.clear()
        self._batch = _Batch()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- introspection -------------------------------------------------------------------------

    def num_kv_tokens(self) -> int:
        """KV entries held, padding included: the running batch plus paused and queued requests."""
        own = sum(s.kv[0][0].shape[-2] for s in self._seqs.values() if s.kv)
        return self._batch.num_kv_tokens() + own

    # -- scheduling ----------------------------------------------------------------------------

    def _drop_aborted_rows(self) -> None:
        self._batch.keep([s.status is not _Status.FREED for s in self._batch.seqs])

    def _decode(self) -> list[Delta]:
        seqs = self._batch.seqs
        input_ids = torch.tensor([s.pending_token_ids for s in seqs], device=self.device)
        position_ids = torch.tensor([[s.num_cached_tokens] for s in seqs], device=self.device)
        attention_mask = self._batch.attention_mask(1, self.device)
        try:
            logits = self._forward(input_ids, position_ids, attention_mask, self._batch.cache)
        except RuntimeError as exc:
            return self._fail(list(seqs), exc)
        finally:
            self.stats.num_decode_steps += 1
        for seq in seqs:
            seq.num_cached_tokens += 1
        deltas = self._accept(seqs, logits)
        for row, seq in enumerate(seqs):
            if seq.status is _Status.PAUSED:
                seq.kv = self._batch.row_kv(row)
        self._batch.keep([s.status is _Status.RUNNING for s in seqs])
        return deltas

    def _admit(self) -> list[Delta]:
        deltas: list[Delta] = []
        while self._waiting and len(self._batch.seqs) < self.max_batch_size:
            deltas += self._prefill(self._next_group(self.max_batch_size - len(self._batch.seqs)))
        return deltas

    def _next_group(self, max_size: int) -> list[_Sequence]:
        """The head of the queue, with the new requests right behind it that have its prompt."""
        group = [self._waiting.popleft()]
        head = group[0]
        while (
            head.is_new
            and self._waiting
            and len(group) < max_size
            and self._waiting[0].is_new
            and self._waiting[0].pending_token_ids == head.pending_token_ids
        ):
            group.append(self._waiting.popleft())
        return group

    def _prefill(self, group: list[_Sequence]) -> list[Delta]:
        """Prefill the group's shared pending tokens once, sample each member's first token and
        merge the members still running into the batch."""
        head = group[0]
        if self._exceeds_context(head.num_tokens):
            return self._refuse(group)
        cache = _cache_of(head.kv)
        input_ids = torch.tensor([head.pending_token_ids], device=self.device)
        position_ids = torch.arange(head.num_cached_tokens, head.num_tokens, device=self.device).unsqueeze(0)
        try:
            logits = self._forward(input_ids, position_ids, None, cache)
        except RuntimeError as exc:
            return self._fail(group, exc)
        self._count_prefill(group)
        num_tokens = head.num_tokens
        for seq in group:
            seq.num_cached_tokens, seq.kv = num_tokens, None
        deltas = self._accept(group, logits.expand(len(group), -1))
        kv = _kv_of(cache)
        for seq in group:
            if seq.status is _Status.PAUSED:
                seq.kv = kv
        running = [s for s in group if s.status is _Status.RUNNING]
        self._batch.merge(running, _replicate(kv, len(running)))
        return deltas

    def _count_prefill(self, group: list[_Sequence]) -> None:
        head = group[0]
        self.stats.num_prefill_tokens += len(head.pending_token_ids)
        self.stats.num_cached_prompt_tokens += head.num_cached_tokens + (len(group) - 1) * head.num_tokens

    def _forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache: DynamicCache,
    ) -> torch.Tensor:
        """Run the model, growing `cache` in place; the last position's logits [rows, vocab]."""
        kwargs = {self._cache_arg: cache, **self._extra_forward_args}
        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **kwargs,
        )
        return output.logits[:, -1, :]

    # -- finishing -----------------------------------------------------------------------------

    def _accept(self, seqs: list[_Sequence], logits: torch.Tensor) -> list[Delta]:
        """Sample one token per sequence, record it as pending, and emit its delta."""
        tokens = sample_tokens(logits, [s.params for s in seqs], [s.generator for s in seqs])
        deltas = []
        for seq, token in zip(seqs, tokens):
            seq.pending_token_ids = (token,)
            seq.num_generated_tokens += 1
            reason = self._finish_reason(seq, token)
            self._finish(seq, reason)
            deltas.append(Delta(seq.request_id, (token,), reason))
        return deltas

    def _finish_reason(self, seq: _Sequence, token: int) -> FinishReason | None:
        if token in seq.params.stop_token_ids:
            return "stop"
        if seq.num_generated_tokens >= seq.params.max_tokens or self._exceeds_context(seq.num_tokens):
            return "length"
        return None

    def _exceeds_context(self, num_tokens: int) -> bool:
        """True when a sequence of `num_tokens` tokens cannot all be fed to the model: its last
        token would sit beyond the model's position embeddings."""
        return self.max_position_embeddings is not None and num_tokens > self.max_position_embeddings

    def _finish(self, seq: _Sequence, reason: FinishReason | None) -> None:
        if reason is None:
            seq.status = _Status.RUNNING
        elif reason == "stop":
            seq.status = _Status.PAUSED
        else:
            seq.status = _Status.FREED
            seq.kv = None
            self._seqs.pop(seq.request_id, None)

    def _refuse(self, group: list[_Sequence]) -> list[Delta]:
        """A sequence too long for the model: a new prompt is an error, a continuation ran out of room."""
        head = group[0]
        if not head.is_new:
            self._finish(head, "length")
            return [Delta(head.request_id, (), "length")]
        message = f"prompt of {head.num_tokens} tokens leaves no room in a context of {self.max_position_embeddings}"
        for seq in group:
            self._finish(seq, "error")
        return [Delta(s.request_id, (), "error", message) for s in group]

    def _fail(self, seqs: list[_Sequence], exc: RuntimeError) -> list[Delta]:
        message = f"{type(exc).__name__}: {exc}"
        for seq in seqs:
            self._finish(seq, "error")
        if any(s in self._batch.seqs for s in seqs):
            self._batch.keep([s not in seqs for s in self._batch.seqs])
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return [Delta(s.request_id, (), "error", message) for s in seqs]


def _check_full_attention(model: PreTrainedModel) -> None:
    layer_types = getattr(model.config.get_text_config(), "layer_types", None) or ()
    others = sorted(set(layer_types) - {"full_attention"})
    if others:
        raise ValueError(f"HFEngine supports full-attention models only; this one has {', '.join(others)} layers")


def _forward_args(model: PreTrainedModel) -> tuple[str, dict[str, int]]:
    """The cache argument's name (`cache` in recent transformers, `past_key_values` before) and
    `logits_to_keep=1` where supported, so a prefill computes logits for its last token only."""
    parameters = inspect.signature(model.forward).parameters
    extra = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    return ("cache" if "cache" in parameters else "past_key_values"), extra
