"""`NativeEngine`: our own PyTorch engine behind the solver's add / extend / step / abort loop.

Each `step()` is three verbs: the scheduler picks a prefill batch or a decode batch, the model
runner computes logits, and the engine samples one token per sequence and applies the finish
rules (`stop` pauses and keeps the KV for `extend`; `length` and `error` free everything).

Guaranteed (besides `solver.engines.base`):
- greedy output equals transformers' `generate` on the same tokens (CPU float32), alone, batched,
  with shared prefixes, across `extend` and after aborts of other requests;
- a request's draws come from its own CPU generator seeded with `params.seed` (via
  `solver.engines.hf.sample_tokens`), so they do not depend on the rest of the batch;
- requests with a common prompt share its full KV blocks (see `block_manager`); `extend`
  prefills only the tokens not yet cached;
- `abort` frees a request's blocks at once; when memory runs out the scheduler evicts or
  preempts (see `scheduler`) and never corrupts another request's cache.
Not done: ReDrafter drafts; tensor parallelism; sliding-window models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from solver.engines.base import Delta, EngineStats, FinishReason, Request, SamplingParams
from solver.engines.hf import sample_tokens

from .block_manager import BlockManager
from .config import EngineConfig, ModelShape
from .model import CausalLM, from_hf
from .model_runner import ModelRunner, num_kv_blocks
from .scheduler import Scheduler
from .sequence import Sequence, SequenceStatus, generator_for

CPU_KV_CACHE_BYTES = 4 << 30  # default cap of the cache on CPU


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
        if config.fp8:
            from .fp8 import quantize_where_faster

            self.fp8_choice = quantize_where_faster(native, batch_size=min(config.max_num_seqs, 16))
        blocks = num_kv_blocks(config, shape, self.max_model_len, self.device, native.embed.element_size())
        if self.device.type == "cpu" and config.num_kv_blocks is None:
            blocks = min(blocks, 1 + CPU_KV_CACHE_BYTES // (config.block_size * shape.kv_bytes_per_token(native.embed.element_size())))
        self.runner = ModelRunner(native, config, self.max_model_len, blocks)
        self.attention_backend = _choose_attention(config, native, self.device)
        if self.device.type == "cuda" and config.cuda_graph_batch_sizes:
            self.runner.enable_graphs(tuple(b for b in config.cuda_graph_batch_sizes if b <= config.max_num_seqs))
        self.block_manager = BlockManager(blocks, config.block_size)
        self.scheduler = Scheduler(config, self.block_manager)
        self.vocab_size = shape.vocab_size
        self.stats = EngineStats()
        self._seqs: dict[str, Sequence] = {}
        self._pending: list[Delta] = []  # deltas decided outside step() (refusals at add/extend)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        config: EngineConfig = EngineConfig(),
    ) -> NativeEngine:
        """Load an HF directory or a `.gguf` file through transformers' own loaders (GGUF is
        dequantized), then build the engine: bfloat16 on CUDA when available, else float32."""
        from transformers import AutoModelForCausalLM

        from solver.engines.hf import _torch_dtype

        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = _torch_dtype(dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        path = Path(path)
        print(f"native engine: loading {path} ...", file=sys.stderr)
        if path.is_file() and path.suffix == ".gguf":
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        return cls(model, config=config, device=device, dtype=dtype, consume_weights=True)

    # -- the Engine interface ------------------------------------------------------------------

    def add(self, request: Request) -> None:
        if request.request_id in self._seqs:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        if not request.prompt_token_ids:
            raise ValueError(f"request {request.request_id!r} has an empty prompt")
        self._check_token_ids(request.request_id, request.prompt_token_ids)
        seq = Sequence(request.request_id, request.params, generator_for(request.params.seed), list(request.prompt_token_ids))
        self._seqs[seq.request_id] = seq
        if seq.num_tokens > self.max_model_len:
            message = f"prompt of {seq.num_tokens} tokens leaves no room in a context of {self.max_model_len}"
            self._pending.append(self._end(seq, "error", message))
            return
        self.scheduler.add(seq)

    def extend(self, request_id: str, token_ids: tuple[int, ...], params: SamplingParams) -> None:
        seq = self._seqs.get(request_id)
        if seq is None or seq.status is not SequenceStatus.PAUSED:
            raise ValueError(f"request {request_id!r} is not paused after a stop; only such a request can be extended")
        self._check_token_ids(request_id, token_ids)
        if params.seed != seq.params.seed:
            seq.generator = generator_for(params.seed)
        seq.params = params
        seq.token_ids += token_ids
        seq.num_generated_tokens = 0
        if seq.num_tokens > self.max_model_len:
            self._pending.append(self._end(seq, "length"))
            return
        self.scheduler.resume(seq)

    def step(self) -> list[Delta]:
        deltas, self._pending = self._pending, []
        chunks, decode, failed = self.scheduler.schedule()
        for seq in failed:
            deltas.append(self._end(seq, "error", f"needs {seq.num_tokens} tokens of KV cache; the cache holds fewer"))
        if chunks:
            deltas += self._run(self._prefill, chunks, [c.seq for c in chunks], [c.seq for c in chunks if c.is_last])
        elif decode:
            deltas += self._run(self._decode, decode, decode, decode)
        return deltas

    def abort(self, request_id: str) -> None:
        seq = self._seqs.pop(request_id, None)
        if seq is not None and seq.status is not SequenceStatus.FINISHED:
            self.scheduler.finish(seq)

    def has_work(self) -> bool:
        return self.scheduler.has_work() or bool(self._pending)

    def close(self) -> None:
        for request_id in list(self._seqs):
            self.abort(request_id)
        self.runner = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- introspection -------------------------------------------------------------------------

    def num_used_blocks(self) -> int:
        """KV blocks held by any request (the scratch block not counted)."""
        return self.block_manager.num_blocks - 1 - self.block_manager.num_free_blocks

    # -- one step ------------------------------------------------------------------------------

    def _run(self, forward, batch, seqs: list[Sequence], sampled: list[Sequence]) -> list[Delta]:
        """Run `forward(batch)` and sample for `sampled`; if it fails (e.g. out of memory) every
        sequence of the batch ends with "error" and the engine goes on."""
        try:
            with torch.inference_mode():
                logits = forward(batch)
        except RuntimeError as exc:
            message = f"{type(exc).__name__}: {exc}"
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return [self._end(s, "error", message) for s in seqs]
        return self._accept(sampled, logits)

    def _prefill(self, chunks) -> torch.Tensor:
        logits = self.runner.prefill(chunks)
        for chunk in chunks:
            self.stats.num_prefill_tokens += chunk.end - chunk.start
            chunk.seq.num_cached_tokens = chunk.end
        return logits

    def _decode(self, seqs: list[Sequence]) -> torch.Tensor:
        logits = self.runner.decode(seqs)
        self.stats.num_decode_steps += 1
        for seq in seqs:
            seq.num_cached_tokens += 1
        return logits

    def _accept(self, seqs: list[Sequence], logits: torch.Tensor) -> list[Delta]:
        if not seqs:
            return []
        tokens = sample_tokens(logits, [s.params for s in seqs], [s.generator for s in seqs])
        deltas = []
        for seq, token in zip(seqs, tokens):
            seq.token_ids.append(token)
            seq.num_generated_tokens += 1
            reason = self._finish_reason(seq, token)
            if reason is None:
                if seq.status is not SequenceStatus.RUNNING:
                    self.scheduler.start_running(seq)
            elif reason == "stop":
                self.scheduler.pause(seq)
            else:
                self.scheduler.finish(seq)
                self._seqs.pop(seq.request_id, None)
            deltas.append(Delta(seq.request_id, (token,), reason))
        return deltas

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

    def _check_token_ids(self, request_id: str, token_ids) -> None:
        bad = [t for t in token_ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"request {request_id!r} has token ids outside a vocabulary of {self.vocab_size}: {bad[:5]}")


def _choose_attention(config: EngineConfig, model, device: torch.device) -> str:
    """Install the decode attention: the Triton paged kernel on CUDA (unless "torch"), else the
    gather-based one."""
    if device.type != "cuda" or config.attention_backend == "torch":
        return "torch"
    try:
        from .paged_attention import paged_decode_attention
    except ImportError:
        if config.attention_backend == "triton":
            raise
        return "torch"
    from .ops import fused

    model.decode_attn = paged_decode_attention
    model.ops = fused()
    return "triton"
