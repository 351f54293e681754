"""Decode attention over the paged KV cache as Triton kernels (CUDA; on the CPU only in Triton's
interpreter, which the tests use in float32).

One launch per step. Its programs each take one (row, KV head, context split): a program loads
the row's group of query heads ([group, head_dim], padded to 16 rows for the tensor cores),
walks its share of the context
BLOCK_N positions at a time through the block table, and keeps an online softmax. Splits are
merged by their log-sum-exp by the op that consumes the attention (`ops.attention_output`: a
compiled merge, or with `row_kernels` one kernel that merges and quantises for FP8). Each row's
KV is read once, only up to its own context length, so a padded CUDA-graph batch pays only for
real tokens and the block table may be as wide as the longest allowed sequence.

With `DecodeMeta.shared_len` (the N samples of a prompt share its blocks), more programs of the
same launch take the shared positions: each (KV head, tile of BLOCK_Q query vectors of all
rows, split) reads each shared block once for every row's queries, the per-row programs read
only what follows, both kinds run side by side, and all splits merge the same way. Without it
every row reads its own copy.

Guaranteed: the same function as `attention.decode_attention` up to bf16/f32 rounding, for
caches in the query's dtype or FP8 (converted to the query's dtype as they are loaded), with or
without the shared-prefix split (rows no longer than `shared_len`, padded graph rows, get
meaningless output). Measured on an H200 (Qwen2.5-14B shape, 16 samples, same run): with the
shared positions read once and `EngineConfig.shared_decode_kernel`'s settings, an 8,000-token
prompt's BF16 step 12.20 -> 10.34 ms; a 1,000-token one is left to the per-row programs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .attention import DecodeKernel, DecodeMeta, Splits
from .launch import wait_for_previous
from .ops import merge_splits


@triton.jit
def _attend(q, k_ptr, v_ptr, table_ptr, start, end, kv_head, scale,
            NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
            last=0, CAUSAL: tl.constexpr = False, PREFETCH: tl.constexpr = False):  # fmt: skip
    """Online softmax of the query rows q [Q, HEAD_DIM] over positions [start, end) of one block
    table: (unnormalised output [Q, HEAD_DIM], running max [Q], running sum [Q]). With CAUSAL,
    row i sees only positions <= last[i] (prefill; each row must see at least one). With
    PREFETCH each step loads the next step's block-table entries and asks for V with K, so a
    step's K/V addresses never wait on a load of the same step."""
    d = tl.arange(0, HEAD_DIM)
    m = tl.full([q.shape[0]], float("-inf"), tl.float32)
    l = tl.zeros([q.shape[0]], tl.float32)
    acc = tl.zeros([q.shape[0], HEAD_DIM], tl.float32)
    if PREFETCH:
        t = start + tl.arange(0, BLOCK_N)
        page = tl.load(table_ptr + t // BLOCK_SIZE, mask=t < end, other=0)
    for n0 in range(start, end, BLOCK_N):
        t = n0 + tl.arange(0, BLOCK_N)
        valid = t < end
        if not PREFETCH:
            page = tl.load(table_ptr + t // BLOCK_SIZE, mask=valid, other=0)
        slot = page.to(tl.int64) * BLOCK_SIZE + t % BLOCK_SIZE
        offsets = (slot * NUM_KV_HEADS + kv_head)[:, None] * HEAD_DIM + d[None, :]
        if PREFETCH:
            page = tl.load(table_ptr + (t + BLOCK_N) // BLOCK_SIZE, mask=t + BLOCK_N < end, other=0)
        k = tl.load(k_ptr + offsets, mask=valid[:, None], other=0.0).to(q.dtype)  # FP8 caches too
        if PREFETCH:
            v = tl.load(v_ptr + offsets, mask=valid[:, None], other=0.0).to(q.dtype)
        s = tl.dot(q, tl.trans(k)) * scale
        if CAUSAL:
            s = tl.where(valid[None, :] & (t[None, :] <= last[:, None]), s, float("-inf"))
        else:
            s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m - m_new)
        l = l * alpha + tl.sum(p, 1)
        if not PREFETCH:
            v = tl.load(v_ptr + offsets, mask=valid[:, None], other=0.0).to(q.dtype)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    return acc, m, l


@triton.jit
def _in_product_dtype(q, IN_FP16: tl.constexpr):
    """The query as the products take it: as it is, or with IN_FP16 in float16, clamped to its range."""
    if IN_FP16:
        q = tl.minimum(tl.maximum(q.to(tl.float32), -65504.0), 65504.0).to(tl.float16)
    return q


@triton.jit
def _store_split(out_ptr, lse_ptr, acc, m, l, index, mask, HEAD_DIM: tl.constexpr):
    """One split's normalised output and log-sum-exp at flat (row, head, split) `index` [Q]."""
    d = tl.arange(0, HEAD_DIM)
    safe_l = tl.where(l > 0, l, 1.0)
    tl.store(out_ptr + index[:, None] * HEAD_DIM + d[None, :], acc / safe_l[:, None], mask=mask[:, None])
    tl.store(lse_ptr + index, tl.where(l > 0, m + tl.log(safe_l), float("-inf")), mask=mask)


@triton.jit
def _own_part(index, q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, shared_ptr, out_ptr, lse_ptr, scale, table_stride,
              NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr,
              HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr,
              TOTAL_SPLITS: tl.constexpr, SPLIT_BASE: tl.constexpr, HAS_SHARED: tl.constexpr, IN_FP16: tl.constexpr,
              PREFETCH: tl.constexpr):  # fmt: skip
    """Program `index` of (row, KV head, split): the row's query heads of one KV head over its
    share of the row's own context, positions [shared, length)."""
    row = index // (NUM_KV_HEADS * NUM_SPLITS)
    kv_head = index // NUM_SPLITS % NUM_KV_HEADS
    split = index % NUM_SPLITS
    length = tl.load(lens_ptr + row)
    first = length * 0
    if HAS_SHARED:
        first = tl.minimum(tl.load(shared_ptr), length)
    per_split = tl.cdiv(tl.cdiv(length - first, NUM_SPLITS), BLOCK_N) * BLOCK_N
    start = first + split * per_split
    end = tl.minimum(start + per_split, length)

    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, HEAD_DIM)
    heads = kv_head * GROUP + g
    q = tl.load(q_ptr + (row * NUM_HEADS + heads)[:, None] * HEAD_DIM + d[None, :], mask=(g < GROUP)[:, None], other=0.0)
    q = _in_product_dtype(q, IN_FP16)
    acc, m, l = _attend(q, k_ptr, v_ptr, tables_ptr + row * table_stride, start, end, kv_head, scale,
                        NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE, BLOCK_N, PREFETCH=PREFETCH)  # fmt: skip
    _store_split(out_ptr, lse_ptr, acc, m, l, (row * NUM_HEADS + heads) * TOTAL_SPLITS + SPLIT_BASE + split, g < GROUP, HEAD_DIM)


@triton.jit
def _shared_part(index, q_ptr, k_ptr, v_ptr, tables_ptr, shared_ptr, out_ptr, lse_ptr, scale, rows,
                 NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                 BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_Q: tl.constexpr, NUM_SPLITS: tl.constexpr,
                 TOTAL_SPLITS: tl.constexpr, IN_FP16: tl.constexpr, PREFETCH: tl.constexpr):  # fmt: skip
    """Program `index` of (KV head, tile of BLOCK_Q (row, query head) pairs, split): every row's
    query heads of one KV head over the positions [0, shared) that all rows' block tables share,
    read once for all of them (through row 0's table)."""
    tiles = tl.cdiv(rows * GROUP, BLOCK_Q)
    kv_head = index // (tiles * NUM_SPLITS)
    tile = index // NUM_SPLITS % tiles
    split = index % NUM_SPLITS
    shared = tl.load(shared_ptr)
    per_split = tl.cdiv(tl.cdiv(shared, NUM_SPLITS), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, shared)

    j = tile * BLOCK_Q + tl.arange(0, BLOCK_Q)
    valid = j < rows * GROUP
    row = j // GROUP
    head = kv_head * GROUP + j % GROUP
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + (row * NUM_HEADS + head)[:, None] * HEAD_DIM + d[None, :], mask=valid[:, None], other=0.0)
    q = _in_product_dtype(q, IN_FP16)
    acc, m, l = _attend(q, k_ptr, v_ptr, tables_ptr, start, end, kv_head, scale, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE, BLOCK_N,
                        PREFETCH=PREFETCH)  # fmt: skip
    _store_split(out_ptr, lse_ptr, acc, m, l, (row * NUM_HEADS + head) * TOTAL_SPLITS + split, valid, HEAD_DIM)


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, shared_ptr, out_ptr, lse_ptr,
    scale, table_stride, rows, shared_programs,
    NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr,
    TOTAL_SPLITS: tl.constexpr, HAS_SHARED: tl.constexpr, BLOCK_Q: tl.constexpr = 64, SHARED_SPLITS: tl.constexpr = 1,
    SHARED_BLOCK_N: tl.constexpr = 64,
    IN_FP16: tl.constexpr = False, PREFETCH: tl.constexpr = False, PDL: tl.constexpr = False,
):  # fmt: skip
    """One launch for a decode step's attention, a flat grid: with HAS_SHARED the first
    `shared_programs` programs take the shared positions (`_shared_part`, splits [0,
    SHARED_SPLITS)), the others each row's own (`_own_part`, the splits after them); so both kinds
    run side by side. With IN_FP16 (an FP8 cache) the products run in float16: FP8 converts to it
    in one instruction and exactly, and the query keeps more bits than in bf16 (clamped to
    float16's range)."""
    wait_for_previous(PDL)
    index = tl.program_id(0)
    own = True
    if HAS_SHARED:
        own = index >= shared_programs
    if not own:
        _shared_part(index, q_ptr, k_ptr, v_ptr, tables_ptr, shared_ptr, out_ptr, lse_ptr, scale, rows,
                     NUM_HEADS, NUM_KV_HEADS, GROUP, HEAD_DIM, BLOCK_SIZE, SHARED_BLOCK_N, BLOCK_Q, SHARED_SPLITS, TOTAL_SPLITS,
                     IN_FP16, PREFETCH)  # fmt: skip
    else:
        _own_part(index - shared_programs, q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, shared_ptr, out_ptr, lse_ptr, scale,
                  table_stride, NUM_HEADS, NUM_KV_HEADS, GROUP, GROUP_PAD, HEAD_DIM, BLOCK_SIZE, BLOCK_N, NUM_SPLITS,
                  TOTAL_SPLITS, SHARED_SPLITS if HAS_SHARED else 0, HAS_SHARED, IN_FP16, PREFETCH)  # fmt: skip


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: DecodeMeta, scale: float) -> torch.Tensor:
    """q [rows, heads, head_dim] -> [rows, heads, head_dim]: `paged_decode_splits`, merged."""
    return merge_splits(*paged_decode_splits(q, k_cache, v_cache, meta, scale), q.dtype)


def paged_decode_splits(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: DecodeMeta, scale: float,
                        pdl: bool = False, kernel: DecodeKernel = DecodeKernel()) -> Splits:  # fmt: skip
    """q [rows, heads, head_dim] -> the attention in parts, for the consuming op to merge. With
    `meta.shared_len`, the positions every row shares are read once for all rows, the rest per
    row. `pdl`: launched programmatically (`launch`); `kernel`: the per-row kernel's settings."""
    rows, heads, head_dim = q.shape
    _, block_size, kv_heads, _ = k_cache.shape
    group = heads // kv_heads
    q = q.contiguous()
    shared_splits, own_splits = kernel.splits(rows, heads, kv_heads, q.device, shared=meta.shared_len is not None)
    tiles = kernel.shared_tiles(rows, group)
    total = shared_splits + own_splits
    partial = torch.empty(rows, heads, total, head_dim, dtype=torch.float32, device=q.device)
    lse = torch.empty(rows, heads, total, dtype=torch.float32, device=q.device)
    shared = meta.shared_len if meta.shared_len is not None else meta.context_lens  # unread without HAS_SHARED
    shared_programs = kv_heads * tiles * shared_splits
    _decode_kernel[(shared_programs + rows * kv_heads * own_splits,)](
        q, k_cache, v_cache, meta.block_tables, meta.context_lens, shared, partial, lse,
        scale, meta.block_tables.stride(0), rows, shared_programs,
        NUM_HEADS=heads, NUM_KV_HEADS=kv_heads, GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim, BLOCK_SIZE=block_size, BLOCK_N=kernel.block_n, NUM_SPLITS=own_splits, SHARED_BLOCK_N=kernel.shared_block_n,
        TOTAL_SPLITS=total, HAS_SHARED=shared_splits > 0, BLOCK_Q=kernel.shared_block_q, SHARED_SPLITS=max(1, shared_splits),
        IN_FP16=kernel.fp8_in_fp16 and k_cache.dtype == torch.float8_e4m3fn and q.is_cuda, PREFETCH=kernel.prefetch, PDL=pdl,
        num_warps=kernel.num_warps, num_stages=kernel.num_stages, launch_pdl=pdl,
    )  # fmt: skip
    return Splits(partial, lse)
