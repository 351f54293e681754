"""Decode attention over the paged KV cache as a Triton kernel (CUDA only).

One program per (row, KV head, context split): it loads the row's group of query heads
([group, head_dim], padded to 16 rows for the tensor cores), walks its share of the context
BLOCK_N positions at a time through the block table, and keeps an online softmax. Splits are
merged in PyTorch by their log-sum-exp. Each row's KV is read once, only up to its own context
length, so a padded CUDA-graph batch pays only for real tokens and the block table may be as
wide as the longest allowed sequence.

Guaranteed: the same function as `attention.decode_attention` up to bf16/f32 rounding, for
caches in the query's dtype or FP8 (converted to the query's dtype as they are loaded).
Not done: sharing reads of a common prefix between rows (each row reads its own blocks).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .attention import DecodeMeta
from .ops import merge_splits


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, out_ptr, lse_ptr,
    scale, table_stride,
    NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    length = tl.load(lens_ptr + row)
    per_split = tl.cdiv(tl.cdiv(length, NUM_SPLITS), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, length)

    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, HEAD_DIM)
    heads = kv_head * GROUP + g
    q = tl.load(q_ptr + (row * NUM_HEADS + heads)[:, None] * HEAD_DIM + d[None, :], mask=(g < GROUP)[:, None], other=0.0)

    m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        t = n0 + tl.arange(0, BLOCK_N)
        valid = t < end
        page = tl.load(tables_ptr + row * table_stride + t // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        slot = page * BLOCK_SIZE + t % BLOCK_SIZE
        offsets = (slot * NUM_KV_HEADS + kv_head)[:, None] * HEAD_DIM + d[None, :]
        k = tl.load(k_ptr + offsets, mask=valid[:, None], other=0.0).to(q.dtype)  # FP8 caches too
        s = tl.dot(q, tl.trans(k)) * scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m - m_new)
        l = l * alpha + tl.sum(p, 1)
        v = tl.load(v_ptr + offsets, mask=valid[:, None], other=0.0).to(q.dtype)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new

    safe_l = tl.where(l > 0, l, 1.0)
    out_offsets = ((row * NUM_HEADS + heads) * NUM_SPLITS + split)[:, None] * HEAD_DIM + d[None, :]
    tl.store(out_ptr + out_offsets, acc / safe_l[:, None], mask=(g < GROUP)[:, None])
    lse = tl.where(l > 0, m + tl.log(safe_l), float("-inf"))
    tl.store(lse_ptr + (row * NUM_HEADS + heads) * NUM_SPLITS + split, lse, mask=g < GROUP)


def num_splits_for(rows: int, num_kv_heads: int, device: torch.device) -> int:
    """Enough programs to fill the GPU about twice over, at most 16 splits."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(16, -(-2 * sms // (rows * num_kv_heads))))


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: DecodeMeta, scale: float) -> torch.Tensor:
    """q [rows, heads, head_dim] -> [rows, heads, head_dim]."""
    rows, heads, head_dim = q.shape
    _, block_size, kv_heads, _ = k_cache.shape
    group = heads // kv_heads
    splits = num_splits_for(rows, kv_heads, q.device)
    partial = torch.empty(rows, heads, splits, head_dim, dtype=torch.float32, device=q.device)
    lse = torch.empty(rows, heads, splits, dtype=torch.float32, device=q.device)
    _decode_kernel[(rows, kv_heads, splits)](
        q.contiguous(), k_cache, v_cache, meta.block_tables, meta.context_lens, partial, lse,
        scale, meta.block_tables.stride(0),
        NUM_HEADS=heads, NUM_KV_HEADS=kv_heads, GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim, BLOCK_SIZE=block_size, BLOCK_N=64, NUM_SPLITS=splits,
        num_warps=4, num_stages=2,
    )  # fmt: skip
    return _merge(partial, lse, q.dtype)


_merge = torch.compile(merge_splits, fullgraph=True)  # reset with the ops by `ops.fused()`
