"""Attention over the paged KV cache, in plain PyTorch (the CPU path and the GPU prefill path).

Cache layout per layer: keys and values [num_blocks, block_size, kv_heads, head_dim]. Token at
position p of a sequence lives in slot `block_table[p // block_size] * block_size + p % block_size`.
The cache may be FP8 (e4m3, see `ops.to_cache`): K/V arrive already converted, and every reader
converts what it gathers back to the query's dtype.

Every attention call first writes the step's new K/V into their slots (`store_kv`), then reads
the context back from the cache by gathering the sequence's blocks. A prefill batch therefore
sees K/V written by another sequence of the same batch (the prefix-sharing guarantee of
`block_manager`).

Not fast: the decode gather copies each sequence's whole context per layer; the GPU decode
path uses `paged_attention` (Triton) instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F


@dataclass
class PrefillMeta:
    """A batch of prefill chunks, flattened: sequence i owns query rows
    [query_starts[i], query_starts[i] + query_lens[i]) and attends to its first
    context_lens[i] positions (its chunk is the last query_lens[i] of them)."""

    slot_mapping: torch.Tensor  # [tokens] int64
    block_tables: list[torch.Tensor]  # per sequence, [num_blocks] int64
    query_starts: list[int]
    query_lens: list[int]
    context_lens: list[int]
    kernel_inputs: tuple | None = field(default=None, repr=False)  # the paged prefill kernel's, made once per step


@dataclass
class DecodeMeta:
    """One query token per row; row i attends to its first context_lens[i] positions."""

    slot_mapping: torch.Tensor  # [rows] int64
    block_tables: torch.Tensor  # [rows, max_blocks] int32, padded with 0 (the scratch block)
    context_lens: torch.Tensor  # [rows] int32
    # [1] int32: leading positions whose blocks every real row shares (a multiple of the block
    # size, below every real row's length); a hint for the paged kernel, None: no sharing used.
    shared_len: torch.Tensor | None = None


def num_splits_for(rows: int, num_kv_heads: int, device: torch.device, programs_per_sm: int = 2) -> int:
    """Enough programs to fill the GPU `programs_per_sm` times over, at most 16 splits (on the
    CPU, in Triton's interpreter, as if there were 8 multiprocessors, so that tests cross split
    boundaries)."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8
    return max(1, min(16, -(-programs_per_sm * sms // (rows * num_kv_heads))))


@dataclass(frozen=True)
class DecodeKernel:
    """Settings of the paged decode kernel (`paged_attention`): per-row programs' positions per
    loop step, warps, pipeline stages, programs per multiprocessor (sets the splits), float16
    products for an FP8 cache and block-table prefetch; and, for the positions all rows share,
    the splits, query vectors and positions per loop step of their programs."""

    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2
    programs_per_sm: int = 4
    fp8_in_fp16: bool = True
    prefetch: bool = False  # each loop step loads the next one's block-table entries
    shared_splits: int = 8  # splits of the shared positions (0: enough to fill the GPU twice)
    shared_block_q: int = 64
    shared_block_n: int = 64

    def splits(self, rows: int, num_heads: int, num_kv_heads: int, device: torch.device, shared: bool) -> tuple[int, int]:
        """(splits of the shared positions, of each row's own): the parts of every (row, head)
        that the kernel leaves to merge; no shared splits without `shared`."""
        own = num_splits_for(rows, num_kv_heads, device, self.programs_per_sm)
        if not shared:
            return 0, own
        tiles = self.shared_tiles(rows, num_heads // num_kv_heads)
        return self.shared_splits or num_splits_for(tiles, num_kv_heads, device), own

    def shared_tiles(self, rows: int, group: int) -> int:
        """Tiles of `shared_block_q` (row, query head) pairs of one KV head's `group` heads."""
        return -(-rows * group // self.shared_block_q)


class Splits(NamedTuple):
    """Decode attention left in parts (the paged kernel's context splits), merged by the op that
    consumes it (`ops.attention_output`): partial outputs [rows, heads, splits, head_dim] float32,
    each normalised over its own part, and their log-sum-exp [rows, heads, splits]."""

    partial: torch.Tensor
    lse: torch.Tensor


def store_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """k, v [tokens, kv_heads, head_dim], in the cache's dtype, into their slots."""
    for cache, x in ((k_cache, k), (v_cache, v)):
        if cache.element_size() == 1:  # FP8: copied as bytes (index_copy has no FP8 kernel on CPU)
            cache, x = cache.view(torch.uint8), x.view(torch.uint8)
        cache.view(-1, *x.shape[1:]).index_copy_(0, slot_mapping, x)


def _blocks(cache: torch.Tensor, index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """cache[index] converted to `dtype` (an FP8 cache is gathered as bytes: indexing kernels
    do not cover FP8 everywhere)."""
    if cache.element_size() == 1:
        return cache.view(torch.uint8)[index].view(cache.dtype).to(dtype)
    return cache[index].to(dtype)


def _context(cache: torch.Tensor, block_table: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """The first `length` cached positions of one sequence: [length, kv_heads, head_dim]."""
    return _blocks(cache, block_table, dtype).flatten(0, 1)[:length]


def prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: PrefillMeta, scale: float) -> torch.Tensor:
    """q [tokens, heads, head_dim] -> [tokens, heads, head_dim], causal within each sequence."""
    out = torch.empty_like(q)
    group = q.shape[1] // k_cache.shape[2]
    for start, n, ctx, table in zip(meta.query_starts, meta.query_lens, meta.context_lens, meta.block_tables):
        k = _context(k_cache, table, ctx, q.dtype).repeat_interleave(group, dim=1).transpose(0, 1)
        v = _context(v_cache, table, ctx, q.dtype).repeat_interleave(group, dim=1).transpose(0, 1)
        qs = q[start : start + n].transpose(0, 1)
        if n == ctx:
            o = F.scaled_dot_product_attention(qs, k, v, is_causal=True, scale=scale)
        else:
            q_pos = torch.arange(ctx - n, ctx, device=q.device)
            mask = torch.arange(ctx, device=q.device).unsqueeze(0) <= q_pos.unsqueeze(1)
            o = F.scaled_dot_product_attention(qs, k, v, attn_mask=mask, scale=scale)
        out[start : start + n] = o.transpose(0, 1)
    return out


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: DecodeMeta, scale: float) -> torch.Tensor:
    """q [rows, heads, head_dim] -> [rows, heads, head_dim]; gathers every row's padded table."""
    rows, heads, _ = q.shape
    group = heads // k_cache.shape[2]
    tables = meta.block_tables.long()
    k = _blocks(k_cache, tables, q.dtype).flatten(1, 2).repeat_interleave(group, dim=2).transpose(1, 2)  # [rows, heads, L, D]
    v = _blocks(v_cache, tables, q.dtype).flatten(1, 2).repeat_interleave(group, dim=2).transpose(1, 2)
    positions = torch.arange(k.shape[2], device=q.device)
    mask = (positions.unsqueeze(0) < meta.context_lens.unsqueeze(1)).view(rows, 1, 1, -1)
    o = F.scaled_dot_product_attention(q.unsqueeze(2), k, v, attn_mask=mask, scale=scale)
    return o.squeeze(2)
