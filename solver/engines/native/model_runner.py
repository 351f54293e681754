"""Owns the device: the model, the KV cache, input tensors, and (on CUDA) the decode graphs.

`prefill(chunks)` runs a batch of prefill chunks and returns logits for the chunks that end
their sequence; `decode(seqs)` runs one token per sequence and returns [rows, vocab] logits;
`verify(seqs, drafts)` feeds each sequence's last token and its drafts at once and returns
logits for every fed position. Block tables come from the sequences; this module never decides
what to run.

A verify step is a decode step over more rows: fed token j of a sequence becomes its own row
with the sequence's block table and a context ending at that token. Every row writes its K/V
before any row of the layer attends, so row j sees tokens 0..j of its sequence's feed (causal)
and nothing later. The decode kernel and the decode CUDA graphs therefore serve verification
unchanged (rows = sequences x (L + 1)); each row reads its sequence's KV again, which costs
KV bandwidth (largely absorbed by the L2 cache: the rows of a sequence run side by side).

With `with_hidden` (a drafter is attached) prefill, decode rows and verify also return the
final-norm hidden states of the same rows: the drafter's context. Without it, `decode` given the
rows' sampling inputs also returns the sampled tokens, computed on the device (inside the
decode graph on CUDA) by `sampling.sample_candidates`.

Decode steps can overlap (see `engine`): a sequence with `num_inflight` tokens still being
sampled by earlier queued steps is fed at position `num_tokens - 1 + num_inflight`, and a row
whose `feed` entry is j >= 0 takes its input token from row j of the previous decode's sampled
tokens (`last_tokens`, on the device) instead of from the host. So the host can queue step N+1
before it has read step N's tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from solver.engines.sampling import sample_candidates

from .attention import DecodeMeta, PrefillMeta
from .config import EngineConfig, ModelShape
from .layers import rms_norm
from .model import CausalLM, KVCache
from .ops import FP8
from .sequence import Sequence


@dataclass(frozen=True)
class Chunk:
    """Prefill tokens [start, end) of one sequence in this step."""

    seq: Sequence
    start: int
    end: int

    @property
    def is_last(self) -> bool:
        return self.end == self.seq.num_tokens


def num_kv_blocks(config: EngineConfig, shape: ModelShape, max_model_len: int, device: torch.device, element_size: int) -> int:
    """The cache size in blocks: configured, from free GPU memory, or on CPU enough for
    `max_num_seqs` sequences of `max_model_len` (plus the scratch block). On the GPU, a cache
    that cannot hold one sequence of `max_model_len` is refused with the memory figures (it
    usually means another engine in this process still holds the memory)."""
    if config.num_kv_blocks is not None:
        return config.num_kv_blocks
    block_bytes = config.block_size * shape.kv_bytes_per_token(element_size)
    if device.type != "cuda":
        return 1 + config.max_num_seqs * -(-max_model_len // config.block_size)
    free, total = torch.cuda.mem_get_info(device)
    budget = free - (1 - config.gpu_memory_fraction) * total
    blocks = int(max(budget, 0) // block_bytes)
    needed = 1 + -(-max_model_len // config.block_size)
    if blocks < needed:
        raise ValueError(
            f"the KV cache would hold {max(blocks - 1, 0) * config.block_size} tokens, fewer than one sequence of "
            f"max_model_len {max_model_len}: {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB after the weights, "
            f"gpu_memory_fraction {config.gpu_memory_fraction}. Close other engines in this process first, "
            "lower max_model_len, raise gpu_memory_fraction or set num_kv_blocks."
        )
    return blocks


def shared_prefix_len(tables: list[list[int]], context_lens: list[int], block_size: int) -> int:
    """Leading positions whose blocks are the same in every table (`DecodeMeta.shared_len`):
    whole blocks only, and below every row's length, so each row keeps its own last token."""
    first = tables[0]
    blocks = min(min(context_lens) - 1, len(first) * block_size) // block_size
    for table in tables[1:]:
        while blocks and table[:blocks] != first[:blocks]:
            blocks -= 1  # rare: rows of different prompts
    return blocks * block_size


def kv_dtype(config: EngineConfig, model_dtype: torch.dtype) -> torch.dtype:
    return FP8 if config.kv_cache_dtype == "fp8" else model_dtype


class ModelRunner:
    def __init__(self, model: CausalLM, config: EngineConfig, max_model_len: int, num_blocks: int, with_hidden: bool = False) -> None:
        self.model = model
        self.with_hidden = with_hidden
        self.config = config
        self.max_model_len = max_model_len
        self.device = model.embed.device
        self.max_blocks_per_seq = -(-max_model_len // config.block_size)
        shape, dtype = model.shape, kv_dtype(config, model.embed.dtype)
        cache_shape = (num_blocks, config.block_size, shape.num_kv_heads, shape.head_dim)
        self.kv_cache: KVCache = [
            (torch.zeros(cache_shape, dtype=dtype, device=self.device), torch.zeros(cache_shape, dtype=dtype, device=self.device))
            for _ in range(shape.num_layers)
        ]
        self.graphs = None
        self.last_tokens = torch.zeros(max(config.max_num_seqs, *config.cuda_graph_batch_sizes, 1), dtype=torch.int64, device=self.device)

    def enable_graphs(self, batch_sizes: tuple[int, ...], shared_attention: Callable | None = None) -> None:
        """Decode graphs per batch size; with `shared_attention` (the decode attention for steps
        whose rows share a prompt of `shared_prefix_min_tokens` or more), a second graph each."""
        from .graphs import DecodeGraphs

        shared_decode = None
        if shared_attention is not None and self.config.shared_prefix_attention:

            def shared_decode(*args):
                plain, self.model.decode_attn = self.model.decode_attn, shared_attention
                try:
                    return self._decode_logits(*args)
                finally:
                    self.model.decode_attn = plain

        self.graphs = DecodeGraphs(self._decode_logits, sorted(batch_sizes), self.max_blocks_per_seq, self.device, shared_decode)

    def _slots(self, seq: Sequence, start: int, end: int) -> list[int]:
        bs, table = self.config.block_size, seq.block_table
        return [table[p // bs] * bs + p % bs for p in range(start, end)]

    def _tensor(self, values, dtype=torch.int64) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, pin_memory=self.device.type == "cuda").to(self.device, non_blocking=True)

    @torch.inference_mode()
    def prefill(self, chunks: list[Chunk]):
        """Logits [len(last chunks), vocab] for the chunks with `is_last`, in order (with
        `with_hidden`: (logits, hidden [len(last chunks), H]))."""
        input_ids, positions, slots, starts, tables = [], [], [], [], []
        for c in chunks:
            starts.append(len(input_ids))
            input_ids += c.seq.token_ids[c.start : c.end]
            positions += range(c.start, c.end)
            slots += self._slots(c.seq, c.start, c.end)
            tables.append(self._tensor(c.seq.block_table[: -(-c.end // self.config.block_size)]))
        meta = PrefillMeta(
            slot_mapping=self._tensor(slots),
            block_tables=tables,
            query_starts=starts,
            query_lens=[c.end - c.start for c in chunks],
            context_lens=[c.end for c in chunks],
        )
        hidden = self.model(self._tensor(input_ids), self._tensor(positions), meta, self.kv_cache)
        last_rows = [s + c.end - c.start - 1 for s, c in zip(starts, chunks) if c.is_last]
        return self._head(hidden[self._tensor(last_rows)])

    @torch.inference_mode()
    def decode(self, seqs: list[Sequence], sampling: tuple[list[float], list[float], list[float]] | None = None, feed: list[int] | None = None):
        """Logits [rows, vocab] for one new token of each sequence (its last, not yet cached, or
        with `feed[i]` >= 0 the token row `feed[i]` of the previous decode sampled); with `sampling`
        (temperature, top_p, uniform per row) and no drafter: (logits, tokens [rows], -1 where
        `sampling.complete` must finish the row), the tokens also kept in `last_tokens`."""
        return self.verify(seqs, [[] for _ in seqs], sampling, feed)

    @torch.inference_mode()
    def verify(
        self,
        seqs: list[Sequence],
        drafts: list[list[int]],
        sampling: tuple[list[float], list[float], list[float]] | None = None,
        feed: list[int] | None = None,
    ):
        """Feed each sequence's last token followed by its drafts; logits [sum(len(d) + 1), vocab]
        for every fed token, sequence by sequence (with `with_hidden`: (logits, hidden)). The
        block tables must cover `num_tokens + num_inflight + len(draft)` tokens. `feed`: see
        `decode` (plain decode only)."""
        bs = self.config.block_size
        input_ids, positions, slots, tables, context_lens = [], [], [], [], []
        sources = feed if feed is not None else [-1] * len(seqs)
        for seq, draft, source in zip(seqs, drafts, sources):
            first = seq.num_tokens - 1 + seq.num_inflight
            for j, token in enumerate([0 if source >= 0 else seq.last_token_id, *draft]):
                p = first + j
                input_ids.append(token)
                positions.append(p)
                slots.append(seq.block_table[p // bs] * bs + p % bs)
                tables.append(seq.block_table)
                context_lens.append(p + 1)
        if feed is not None:
            assert not any(drafts) and len(seqs) <= self.last_tokens.shape[0], "fed rows are plain decode rows"
        # Leading positions read once for all rows: none below the threshold (each row reads its
        # own), and no scan of the tables where no row is long enough to reach it (the common case).
        shared, least = 0, self.config.shared_prefix_min_tokens
        if self.config.shared_prefix_attention and min(context_lens) - 1 >= least:
            shared = shared_prefix_len(tables, context_lens, bs)
            shared = shared if shared >= least else 0
        if self.graphs is not None and self.graphs.fits(len(input_ids)):
            out = self.graphs.run(input_ids, positions, slots, tables, context_lens, sampling, feed, shared)
            return out if sampling is not None or self.with_hidden else out[0]
        width = max(len(t) for t in tables)
        tables = [t + [0] * (width - len(t)) for t in tables]
        shared_len = self._tensor([shared], torch.int32) if shared else None
        meta = DecodeMeta(self._tensor(slots), self._tensor(tables, torch.int32), self._tensor(context_lens, torch.int32), shared_len)
        inputs = None if sampling is None else tuple(self._tensor(column, torch.float32) for column in sampling)
        return self._decode_logits(self._tensor(input_ids), self._tensor(positions), meta, inputs, None if feed is None else self._tensor(feed))

    def _decode_logits(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: DecodeMeta, sampling=None, feed=None):
        """The decode forward (what a decode graph holds). `feed` [rows]: take row feed[i] of
        `last_tokens` where >= 0 (a -1 there, a row the host must finish, feeds token 0: the
        engine discards that row's result)."""
        if feed is not None:
            previous = self.last_tokens.index_select(0, feed.clamp(min=0)).clamp(min=0)
            input_ids = torch.where(feed >= 0, previous, input_ids)
        out = self._head(self.model(input_ids, positions, meta, self.kv_cache))
        if self.with_hidden or sampling is None:
            return out
        tokens = sample_candidates(out, *sampling)
        self.last_tokens[: tokens.shape[0]].copy_(tokens)
        return out, tokens

    def _head(self, hidden: torch.Tensor):
        if not self.with_hidden:
            return self.model.logits(hidden)
        normed = rms_norm(hidden, self.model.final_norm, self.model.shape.rms_norm_eps)
        return self.model.head(normed), normed
