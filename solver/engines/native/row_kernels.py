"""Hand-written Triton kernels for a decoder layer's elementwise steps, where the fused ops
(`ops.fused`, made by `torch.compile`) take several kernels or a slow one:

- `rope_store`: the qkv product's scales and bias, RoPE on q and k, and k and v written into
  their cache slots (converted to an FP8 cache's dtype): one kernel. The compiled form is a
  RoPE kernel or three plus two index copies; writing the cache inside a compiled function is
  not an option (`torch.compile` turns the in-place write into a copy of the whole cache).
- `add_norm_quantize`: a product plus the residual, RMSNorm and the per-row FP8 quantisation for
  the next linear in one kernel, one program per row (the compiled form is one kernel too, 3.6
  us against BF16's 2.1 us per call on an H100, twice per layer).
- `merge_quantize`: the decode attention's parts merged and quantised per row for o_proj in one
  kernel (the compiled form is two: 1.3 + 1.8 us per layer on an H100). With `group_heads` it
  quantises per row and group of heads instead, for an o_proj in our product kernel
  (`fp8_gemm.skinny_mm` with `group_scales`), which then needs no per-row maximum; timed with the product
  against the product plus each per-row form (on an H200, 14B shape, 16 rows: within 0.7 us of
  them, chosen in one of three builds).
- `silu_mul_quantize`: SiLU(gate) * up of the gate_up product and its per-row FP8 quantisation
  for the down projection. The compiled form is a split reduction: three kernels, 7.5 us per
  layer for 16 rows of Qwen2.5-14B on an H100. Two variants: the row held whole by one program
  ("row"), or chunks of rows over many programs and a second kernel that finishes each row's
  scale and quantises ("chunks"). A third form has no SiLU kernel: an FP8 gate_up product in our
  own kernel ends with SiLU*up (`fp8_gemm.skinny_silu_mm`) and `quantize_chunks` (the chunk
  variant's second kernel) finishes; it is timed together with the product, against the
  product plus each other form (on an H200, 14B shape, 16 rows: 38.6 us against 41.5).

Each is computed in float32 and rounded once at the end (as the compiled ops are; the eager ops
round after each step in the model's dtype). `choose_row_kernels` times each against the compiled
form at the decode batch size and keeps the faster (as `fp8.quantize_where_faster` does for the
linears); `EngineConfig(row_kernels=True)` (the default) does this when the engine is built.
CUDA only; the tests run the kernels in Triton's CPU interpreter in float32. On an H100 (14B
shape, 16 rows, us per call, compiled -> kernel): RoPE + store 10.2 -> 2.4, SiLU*up + quantise
6.8 -> 4.4 ("chunks"), merge + quantise 4.1 -> 3.5, add + norm + quantise 4.3 -> 3.7.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import torch
import triton
import triton.language as tl

from .attention import DecodeKernel, Splits
from .fp8 import FP8Linear, SiluProduct, fuse_silu, use_product_kernel
from .fp8_gemm import CANDIDATES, SkinnyConfig
from .launch import wait_for_previous
from .layers import Out
from .model import CausalLM
from .ops import FP8, dequantize
from .timing import agreeing_times, graph_time_ms, with_choice


@triton.jit
def _rope_store_kernel(
    raw_ptr, row_scale_ptr, col_scale_ptr, bias_ptr, cos_ptr, sin_ptr, q_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    HAS_SCALES: tl.constexpr, HAS_BIAS: tl.constexpr, CLAMP: tl.constexpr,
    PDL: tl.constexpr = False,
):  # fmt: skip
    """One (token, head) of the qkv product [tokens, (heads + 2 kv_heads) * head_dim]: a query
    head is roped into q, a key head roped into the cache, a value head copied into the cache."""
    wait_for_previous(PDL)
    token = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    HALF: tl.constexpr = HEAD_DIM // 2
    d = tl.arange(0, HALF)
    width = (NUM_HEADS + 2 * NUM_KV_HEADS) * HEAD_DIM
    col = head * HEAD_DIM
    x1 = tl.load(raw_ptr + token * width + col + d).to(tl.float32)
    x2 = tl.load(raw_ptr + token * width + col + HALF + d).to(tl.float32)
    if HAS_SCALES:
        row_scale = tl.load(row_scale_ptr + token)
        x1 = x1 * row_scale * tl.load(col_scale_ptr + col + d)
        x2 = x2 * row_scale * tl.load(col_scale_ptr + col + HALF + d)
    if HAS_BIAS:
        x1 += tl.load(bias_ptr + col + d).to(tl.float32)
        x2 += tl.load(bias_ptr + col + HALF + d).to(tl.float32)
    if head < NUM_HEADS + NUM_KV_HEADS:  # x * cos + rotate_half(x) * sin
        cos1 = tl.load(cos_ptr + token * HEAD_DIM + d).to(tl.float32)
        cos2 = tl.load(cos_ptr + token * HEAD_DIM + HALF + d).to(tl.float32)
        sin1 = tl.load(sin_ptr + token * HEAD_DIM + d).to(tl.float32)
        sin2 = tl.load(sin_ptr + token * HEAD_DIM + HALF + d).to(tl.float32)
        x1, x2 = x1 * cos1 - x2 * sin1, x2 * cos2 + x1 * sin2
    if head < NUM_HEADS:
        out = q_ptr + (token * NUM_HEADS + head) * HEAD_DIM
        tl.store(out + d, x1.to(q_ptr.dtype.element_ty))
        tl.store(out + HALF + d, x2.to(q_ptr.dtype.element_ty))
    else:
        if CLAMP:  # an FP8 cache saturates (`ops.to_cache`)
            x1 = tl.minimum(tl.maximum(x1, -448.0), 448.0)
            x2 = tl.minimum(tl.maximum(x2, -448.0), 448.0)
        slot = tl.load(slot_ptr + token)
        kv_head = (head - NUM_HEADS) % NUM_KV_HEADS
        offset = (slot * NUM_KV_HEADS + kv_head) * HEAD_DIM
        if head < NUM_HEADS + NUM_KV_HEADS:
            tl.store(k_cache_ptr + offset + d, x1.to(k_cache_ptr.dtype.element_ty))
            tl.store(k_cache_ptr + offset + HALF + d, x2.to(k_cache_ptr.dtype.element_ty))
        else:
            tl.store(v_cache_ptr + offset + d, x1.to(v_cache_ptr.dtype.element_ty))
            tl.store(v_cache_ptr + offset + HALF + d, x2.to(v_cache_ptr.dtype.element_ty))


def rope_store(qkv: Out, cos: torch.Tensor, sin: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int,
               k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor, pdl: bool = False) -> torch.Tensor:  # fmt: skip
    """`ops.rope_store` as one kernel: returns q [tokens, heads, head_dim] in cos's dtype."""
    raw = qkv.raw.contiguous()
    tokens = raw.shape[0]
    q = torch.empty(tokens, num_heads, head_dim, dtype=cos.dtype, device=raw.device)
    scales = qkv.row_scale is not None
    _rope_store_kernel[(tokens, num_heads + 2 * num_kv_heads)](
        raw, qkv.row_scale if scales else raw, qkv.col_scale if scales else raw, qkv.bias if qkv.bias is not None else raw,
        cos.contiguous(), sin.contiguous(), q, k_cache, v_cache, slot_mapping,
        NUM_HEADS=num_heads, NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, HAS_SCALES=scales,
        HAS_BIAS=qkv.bias is not None, CLAMP=k_cache.dtype == FP8, PDL=pdl, num_warps=1, launch_pdl=pdl,
    )  # fmt: skip
    return q


@triton.jit
def _silu_chunk(raw_ptr, row_scale_ptr, col_scale_ptr, width, cols, HAS_SCALES: tl.constexpr):
    """SiLU(gate) * up at columns `cols` of one row of the gate_up product (float32)."""
    valid = cols < width
    gate = tl.load(raw_ptr + cols, mask=valid, other=0.0).to(tl.float32)
    up = tl.load(raw_ptr + width + cols, mask=valid, other=0.0).to(tl.float32)
    if HAS_SCALES:
        row_scale = tl.load(row_scale_ptr)
        gate = gate * row_scale * tl.load(col_scale_ptr + cols, mask=valid, other=0.0)
        up = up * row_scale * tl.load(col_scale_ptr + width + cols, mask=valid, other=0.0)
    return gate / (1.0 + tl.exp(-gate)) * up


@triton.jit
def _silu_row_kernel(raw_ptr, row_scale_ptr, col_scale_ptr, out_ptr, scale_ptr, width, BLOCK: tl.constexpr, HAS_SCALES: tl.constexpr,
                     PDL: tl.constexpr = False):  # fmt: skip
    wait_for_previous(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    h = _silu_chunk(raw_ptr + row * 2 * width, row_scale_ptr + row, col_scale_ptr, width, cols, HAS_SCALES)
    scale = tl.maximum(tl.max(tl.abs(h), axis=0), 1e-12) / 448.0
    tl.store(out_ptr + row * width + cols, (h / scale).to(out_ptr.dtype.element_ty), mask=cols < width)
    tl.store(scale_ptr + row, scale)


@triton.jit
def _silu_chunk_kernel(raw_ptr, row_scale_ptr, col_scale_ptr, h_ptr, chunk_max_ptr, width, CHUNKS: tl.constexpr, BLOCK: tl.constexpr,
                       HAS_SCALES: tl.constexpr, PDL: tl.constexpr = False):  # fmt: skip
    wait_for_previous(PDL)
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    cols = chunk * BLOCK + tl.arange(0, BLOCK)
    h = _silu_chunk(raw_ptr + row * 2 * width, row_scale_ptr + row, col_scale_ptr, width, cols, HAS_SCALES)
    tl.store(h_ptr + row * width + cols, h, mask=cols < width)
    tl.store(chunk_max_ptr + row * CHUNKS + chunk, tl.max(tl.abs(h), axis=0))


@triton.jit
def _quantize_chunk_kernel(h_ptr, chunk_max_ptr, out_ptr, scale_ptr, width, chunks, CHUNKS: tl.constexpr, BLOCK: tl.constexpr,
                           PDL: tl.constexpr = False):  # fmt: skip
    wait_for_previous(PDL)
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    c = tl.arange(0, CHUNKS)
    scale = tl.maximum(tl.max(tl.load(chunk_max_ptr + row * CHUNKS + c, mask=c < chunks, other=0.0), axis=0), 1e-12) / 448.0
    cols = chunk * BLOCK + tl.arange(0, BLOCK)
    h = tl.load(h_ptr + row * width + cols, mask=cols < width, other=0.0)
    tl.store(out_ptr + row * width + cols, (h / scale).to(out_ptr.dtype.element_ty), mask=cols < width)
    if chunk == 0:
        tl.store(scale_ptr + row, scale)


@triton.jit
def _add_norm_row_kernel(raw_ptr, row_scale_ptr, col_scale_ptr, residual_ptr, weight_ptr, sum_ptr, out_ptr, scale_ptr, width, eps,
                         BLOCK: tl.constexpr, HAS_SCALES: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
                         PDL: tl.constexpr = False):  # fmt: skip
    """One row: x (a linear's product with its scales) + residual, stored in the residual's
    dtype; its RMSNorm times the weight, quantised to FP8 with the row's own scale."""
    wait_for_previous(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    valid = cols < width
    x = tl.load(raw_ptr + row * width + cols, mask=valid, other=0.0).to(tl.float32)
    if HAS_SCALES:
        x = x * tl.load(row_scale_ptr + row) * tl.load(col_scale_ptr + cols, mask=valid, other=0.0)
    if HAS_RESIDUAL:
        x += tl.load(residual_ptr + row * width + cols, mask=valid, other=0.0).to(tl.float32)
    x = x.to(sum_ptr.dtype.element_ty)  # the residual stream keeps the model's dtype
    tl.store(sum_ptr + row * width + cols, x, mask=valid)
    x = x.to(tl.float32)
    normed = x * tl.rsqrt(tl.sum(x * x, axis=0) / width + eps)
    normed = normed.to(sum_ptr.dtype.element_ty).to(tl.float32) * tl.load(weight_ptr + cols, mask=valid, other=0.0).to(tl.float32)
    scale = tl.maximum(tl.max(tl.abs(normed), axis=0), 1e-12) / 448.0
    tl.store(out_ptr + row * width + cols, (normed / scale).to(out_ptr.dtype.element_ty), mask=valid)
    tl.store(scale_ptr + row, scale)


def add_norm_quantize(x: Out, residual: torch.Tensor | None, weight: torch.Tensor, eps: float, out_dtype: torch.dtype = FP8,
                      num_warps: int = 8, pdl: bool = False):  # fmt: skip
    """`ops.add_norm` with `fp8=True` as one kernel: ((rows in `out_dtype` [rows, width], scales
    [rows, 1]), x + residual in the weight's dtype). No bias (none after o_proj or down in
    Llama/Qwen2); `out_dtype` float32 as in `silu_mul_quantize`."""
    assert x.bias is None, "add_norm_quantize: a product with a bias"
    raw = x.raw.contiguous()
    rows, width = raw.shape
    scales = x.row_scale is not None
    summed = torch.empty(rows, width, dtype=weight.dtype, device=raw.device)
    out = torch.empty(rows, width, dtype=out_dtype, device=raw.device)
    scale = torch.empty(rows, 1, dtype=torch.float32, device=raw.device)
    _add_norm_row_kernel[(rows,)](
        raw, x.row_scale if scales else raw, x.col_scale if scales else raw, residual if residual is not None else raw, weight,
        summed, out, scale, width, eps, BLOCK=triton.next_power_of_2(width), HAS_SCALES=scales,
        HAS_RESIDUAL=residual is not None, PDL=pdl, num_warps=num_warps, launch_pdl=pdl,
    )  # fmt: skip
    return (out, scale), summed


@triton.jit
def _merged_heads(partial_ptr, lse_ptr, row, h, valid, splits, NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                  ROUND_TO: tl.constexpr):  # fmt: skip
    """Heads h (where valid) of one row, their attention parts merged by their log-sum-exp (as
    `ops.merge_splits`) and rounded to the model's dtype: [len(h), HEAD_DIM] float32, 0 elsewhere."""
    d = tl.arange(0, HEAD_DIM)
    lse_row = lse_ptr + (row * NUM_HEADS + h) * splits  # each head's first split
    top = tl.full(h.shape, float("-inf"), tl.float32)
    for s in range(splits):
        top = tl.maximum(top, tl.load(lse_row + s, mask=valid, other=float("-inf")))
    acc = tl.zeros([h.shape[0], HEAD_DIM], tl.float32)
    total = tl.zeros(h.shape, tl.float32)
    for s in range(splits):
        w = tl.exp(tl.load(lse_row + s, mask=valid, other=float("-inf")) - top)
        used = valid & (w > 0)  # an empty part (a split past the shared positions) is not read
        part = tl.load(partial_ptr + ((row * NUM_HEADS + h) * splits + s)[:, None] * HEAD_DIM + d[None, :], mask=used[:, None], other=0.0)
        acc += part * w[:, None]
        total += w
    merged = (acc / tl.where(valid, total, 1.0)[:, None]).to(ROUND_TO).to(tl.float32)
    return tl.where(valid[:, None], merged, 0.0)


@triton.jit
def _merge_kernel(partial_ptr, lse_ptr, out_ptr, scale_ptr, splits, NUM_HEADS: tl.constexpr, GROUP: tl.constexpr,
                  GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, ROUND_TO: tl.constexpr,
                  PDL: tl.constexpr = False):  # fmt: skip
    """One (row, group of GROUP heads, padded to GROUP_PAD): the attention parts merged, rounded to
    the model's dtype, and quantised to FP8 with the group's own scale (one group of all heads:
    the row's own scale)."""
    wait_for_previous(PDL)
    row = tl.program_id(0).to(tl.int64)
    group = tl.program_id(1)
    g = tl.arange(0, GROUP_PAD)
    h = group * GROUP + g
    d = tl.arange(0, HEAD_DIM)
    valid = g < GROUP
    merged = _merged_heads(partial_ptr, lse_ptr, row, h, valid, splits, NUM_HEADS, HEAD_DIM, ROUND_TO)
    scale = tl.maximum(tl.max(tl.max(tl.abs(merged), axis=1), axis=0), 1e-12) / 448.0
    out = out_ptr + row * NUM_HEADS * HEAD_DIM + h[:, None] * HEAD_DIM + d[None, :]
    tl.store(out, (merged / scale).to(out_ptr.dtype.element_ty), mask=valid[:, None])
    tl.store(scale_ptr + row * (NUM_HEADS // GROUP) + group, scale)


_TRITON_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}


def merge_quantize(o: Splits, dtype: torch.dtype, out_dtype: torch.dtype = FP8, num_warps: int = 8, pdl: bool = False,
                   group_heads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """`ops.attention_output` with `fp8=True` as one kernel: the parts merged (in `dtype`) and
    quantised per row: (rows [rows, heads * head_dim] in `out_dtype`, scales [rows, 1]). With
    `group_heads` (a power of two dividing the heads), per row and group of that many heads
    instead (scales [rows, heads / group_heads]), for our product kernel (`fp8_gemm.skinny_mm`
    with `group_scales`)."""
    partial, lse = o.partial.contiguous(), o.lse.contiguous()
    rows, heads, splits, head_dim = partial.shape
    group = heads if group_heads is None else group_heads
    assert heads % group == 0 and (group_heads is None or group & (group - 1) == 0), (heads, group_heads)
    out = torch.empty(rows, heads * head_dim, dtype=out_dtype, device=partial.device)
    scale = torch.empty(rows, heads // group, dtype=torch.float32, device=partial.device)
    _merge_kernel[(rows, heads // group)](partial, lse, out, scale, splits, NUM_HEADS=heads, GROUP=group, GROUP_PAD=triton.next_power_of_2(group),
                                          HEAD_DIM=head_dim, ROUND_TO=_TRITON_DTYPES[dtype], PDL=pdl, num_warps=num_warps,
                                          launch_pdl=pdl)  # fmt: skip
    return out, scale


ROW_WARPS = 16  # one program per row: the row's 13,824 values over 512 threads
CHUNK = 2048  # columns per program of the chunked variant


def silu_mul_quantize(gate_up: Out, variant: str = "chunks", out_dtype: torch.dtype = FP8, row_warps: int = ROW_WARPS,
                      chunk: int = CHUNK, pdl: bool = False) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(rows [rows, width] in `out_dtype`, scales [rows, 1]) of SiLU(gate) * up, one scale per row,
    max |row| / 448 (as `ops.quantize_rows`); `out_dtype` float32 gives the scaled rows unrounded
    (the tests' interpreter cannot store FP8). `row_warps` and `chunk` (a power of two) tune the
    two variants."""
    raw = gate_up.raw.contiguous()
    rows, width = raw.shape[0], raw.shape[1] // 2
    scales = gate_up.row_scale is not None
    row_scale, col_scale = (gate_up.row_scale, gate_up.col_scale) if scales else (raw, raw)
    if variant == "row":
        out = torch.empty(rows, width, dtype=out_dtype, device=raw.device)
        scale = torch.empty(rows, 1, dtype=torch.float32, device=raw.device)
        block = triton.next_power_of_2(width)
        _silu_row_kernel[(rows,)](raw, row_scale, col_scale, out, scale, width, BLOCK=block, HAS_SCALES=scales, PDL=pdl,
                                  num_warps=row_warps, launch_pdl=pdl)  # fmt: skip
        return out, scale
    assert variant == "chunks", variant
    chunks = triton.cdiv(width, chunk)
    padded = triton.next_power_of_2(chunks)
    h = torch.empty(rows, width, dtype=torch.float32, device=raw.device)
    chunk_max = torch.empty(rows, padded, dtype=torch.float32, device=raw.device)
    _silu_chunk_kernel[(rows, chunks)](raw, row_scale, col_scale, h, chunk_max, width, CHUNKS=padded, BLOCK=chunk, HAS_SCALES=scales,
                                       PDL=pdl, num_warps=4, launch_pdl=pdl)  # fmt: skip
    return quantize_chunks(h, chunk_max, chunks, out_dtype, chunk, pdl)


def quantize_chunks(h: torch.Tensor, chunk_max: torch.Tensor, chunks: int, out_dtype: torch.dtype = FP8, block: int = CHUNK,
                    pdl: bool = False) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(rows [rows, width] in `out_dtype`, scales [rows, 1]) of float32 rows h [rows, width] whose
    max |h| per chunk of columns is given (chunk_max [rows, a power of two >= chunks]): the
    quantisation after `fp8_gemm.skinny_silu_mm`, one scale per row as `silu_mul_quantize`."""
    rows, width = h.shape
    out = torch.empty(rows, width, dtype=out_dtype, device=h.device)
    scale = torch.empty(rows, 1, dtype=torch.float32, device=h.device)
    _quantize_chunk_kernel[(rows, triton.cdiv(width, block))](h, chunk_max, out, scale, width, chunks, CHUNKS=chunk_max.shape[1],
                                                              BLOCK=block, PDL=pdl, num_warps=4, launch_pdl=pdl)  # fmt: skip
    return out, scale


def _unscaled_product_on_gpu(y: Out) -> bool:
    return y.bias is None and y.raw.is_cuda  # Llama/Qwen2 have no bias on gate_up, o_proj, down


def _parts_on_gpu(o) -> bool:
    return isinstance(o, Splits) and o.partial.is_cuda


def _fp8_kernel(compiled: Callable, kernel: Callable, applies: Callable[[object], bool]) -> Callable:
    """An op (first argument an input, last `fp8`) whose FP8 form is `kernel(input, *the other
    arguments but fp8)` wherever `applies(input)`; otherwise (bf16, a bias, the CPU) compiled."""

    def op(x, *rest):
        if rest[-1] and applies(x):
            return kernel(x, *rest[:-1])
        return compiled(x, *rest)

    return op


def _as_values(out) -> torch.Tensor:
    """An op's output as one float vector, FP8 rows times their scales: what a variant must
    reproduce (within FP8's rounding steps)."""
    if isinstance(out, torch.Tensor):
        return out.float().flatten()
    if isinstance(out, Out):  # a product: finished
        return dequantize(out, torch.float32).float().flatten()
    if len(out) == 2 and isinstance(out[0], torch.Tensor) and out[0].dtype == FP8:
        return (out[0].float() * out[1]).flatten()
    return torch.cat([_as_values(part) for part in out])


# Our product kernel's 64- and 128-wide tiles (`fp8_gemm.CANDIDATES`), offered for the steps it can
# take over (SiLU*up after gate_up, o_proj on an input quantised per group of heads)
PRODUCT_CONFIGS = CANDIDATES[:4]


def choose_row_kernels(model: CausalLM, kv: tuple[torch.Tensor, torch.Tensor], batch_size: int, pdl: bool = False,
                       decode_kernel: DecodeKernel = DecodeKernel()) -> dict[str, dict[str, float | str]]:  # fmt: skip
    """Replace `model.ops.rope_store` and the FP8 `silu_mul`, `add_norm` and `attention_output` by
    this module's kernels where they time faster at `batch_size` rows, inside a CUDA graph, on the
    first layer's real products (their dtype and scales as this model makes them). A variant
    whose output differs from the compiled form's by more than FP8's rounding (5e-2 relative)
    is listed under "mismatch" and never chosen. `kv` is a layer's cache: the timing writes into
    block 0, the engine's scratch block. `pdl`: the kernels are launched programmatically
    (`launch`). The merge is timed on as many parts as `decode_kernel` leaves without a shared
    prefix (the short prompts' decode graph). SiLU*up and the merge are timed together with the
    FP8 product next to them (gate_up before, o_proj after), since one form of each moves into
    that product (our kernel, `PRODUCT_CONFIGS`); where such a form wins, that kind of linear
    switches to our kernel in the winning config. Returns {op: {form: ms, "chosen": form}}."""
    layer, s, ops = model.layers[0], model.shape, model.ops
    device = model.embed.device
    x = torch.randn(batch_size, s.hidden_size, dtype=model.embed.dtype, device=device)
    slots = torch.arange(batch_size, device=device) % kv[0].shape[1]
    cos, sin = model.cos[:batch_size], model.sin[:batch_size]
    with torch.inference_mode():
        qkv = layer.qkv(ops.linear_input(x, layer.qkv.fp8))
        gate_up_in = ops.linear_input(x, layer.gate_up.fp8)
    forms = {
        "rope_store": ({"compiled": ops.rope_store, "kernel": partial(rope_store, pdl=pdl)},
                       (qkv, cos, sin, s.num_heads, s.num_kv_heads, s.head_dim, kv[0], kv[1], slots)),
    }  # fmt: skip
    paired = {}  # op: (its forms, what is timed for each, the timed input, how a form goes in)
    if layer.down.fp8:  # timed with the gate_up product before it, which one form ends with SiLU*up itself
        variants = {"compiled": ops.silu_mul}
        for v in ("row", "chunks"):
            variants[f"kernel/{v}"] = _fp8_kernel(ops.silu_mul, lambda y, dtype, v=v: silu_mul_quantize(y, v, pdl=pdl), _unscaled_product_on_gpu)
        timed = {name: lambda x_in, op=op: op(layer.gate_up(x_in), model.embed.dtype, True) for name, op in variants.items()}
        if _can_fuse_silu(layer.gate_up, batch_size):  # in our product kernel, whatever form gate_up has now
            for config in PRODUCT_CONFIGS:
                timed[f"gate_up epilogue {config.name}"] = partial(_silu_in_product, layer.gate_up, config=config, pdl=pdl)
        paired["silu_mul"] = (variants, timed, gate_up_in, _install_silu)
    if layer.o_proj.fp8:  # the attention's parts as the paged kernel leaves them at this batch size
        splits = sum(decode_kernel.splits(batch_size, s.num_heads, s.num_kv_heads, device, shared=False))
        parts = Splits(torch.randn(batch_size, s.num_heads, splits, s.head_dim, device=device),
                       torch.randn(batch_size, s.num_heads, splits, device=device))  # fmt: skip
        variants = {"compiled": ops.attention_output}
        for w in (4, 8):
            variants[f"kernel/w{w}"] = _fp8_kernel(ops.attention_output, partial(merge_quantize, num_warps=w, pdl=pdl), _parts_on_gpu)
        # timed with the o_proj product after it, which our kernel can take quantised per group of heads
        timed = {name: lambda p, op=op: layer.o_proj(op(p, model.embed.dtype, True)) for name, op in variants.items()}
        for config in _group_configs(layer.o_proj, batch_size, s.num_heads, s.head_dim):
            timed[f"grouped {config.name}"] = partial(_grouped_product, layer.o_proj, config=config, group_heads=config.block_k // s.head_dim,
                                                      dtype=model.embed.dtype, pdl=pdl)  # fmt: skip
        paired["attention_output"] = (variants, timed, parts, _install_grouped)
    if layer.qkv.fp8 and layer.gate_up.fp8:  # the norms before them quantise; o_proj and down have no bias
        with torch.inference_mode():
            attn = torch.randn(batch_size, s.num_heads * s.head_dim, dtype=x.dtype, device=device)
            o = layer.o_proj(ops.linear_input(attn, layer.o_proj.fp8))
        variants = {"compiled": ops.add_norm}
        for w in (4, 8, 16):
            variants[f"kernel/w{w}"] = _fp8_kernel(ops.add_norm, partial(add_norm_quantize, num_warps=w, pdl=pdl), _unscaled_product_on_gpu)
        forms["add_norm"] = (variants, (o, x, layer.post_attention_norm, s.rms_norm_eps, True))
    def form(fn, args):
        return lambda: _as_values(fn(*args)), lambda: graph_time_ms([lambda a, fn=fn: fn(*a)], args)

    choices, replaced = {}, {}
    for op, (variants, args) in forms.items():  # "compiled" first: the kernels must agree with it
        choices[op] = with_choice(agreeing_times({name: partial(form, fn, args) for name, fn in variants.items()}, 5e-2))
        replaced[op] = variants[choices[op]["chosen"]]
    fuse_silu(model, None)
    for op, (variants, timed, x_in, install) in paired.items():
        choice = choices[op] = with_choice(agreeing_times({name: partial(form, fn, (x_in,)) for name, fn in timed.items()}, 5e-2))
        if choice["chosen"] in variants:
            replaced[op] = variants[choice["chosen"]]
        else:  # our product kernel's form; a batch beyond its rows (prefill, a larger graph) gets the best plain one
            plain = variants[min(variants, key=lambda name: choice[name])]
            replaced[op] = install(model, SkinnyConfig.parse(choice["chosen"].split()[-1]), plain, pdl)
    model.ops = dataclasses.replace(ops, **replaced)
    return choices


def _install_silu(model: CausalLM, config: SkinnyConfig, plain: Callable, pdl: bool) -> Callable:
    fuse_silu(model, config)
    return partial(_silu_mul_after, plain, pdl=pdl)


def _install_grouped(model: CausalLM, config: SkinnyConfig, plain: Callable, pdl: bool) -> Callable:
    use_product_kernel(model, "o_proj", config)
    rows = model.layers[0].o_proj.skinny_rows
    return partial(_grouped_attention_output, plain, config.block_k // model.shape.head_dim, rows, pdl=pdl)


def _group_configs(o_proj, rows: int, heads: int, head_dim: int) -> list[SkinnyConfig]:
    """Our product kernel's configs that can take o_proj's input quantised per group of heads
    (one group per K tile)."""
    if not (isinstance(o_proj, FP8Linear) and rows <= o_proj.skinny_rows):
        return []

    def fits(group: int) -> bool:  # a power of two of heads that divides them
        return group > 0 and heads % group == 0 and group & (group - 1) == 0

    return [c for c in PRODUCT_CONFIGS if c.block_k % head_dim == 0 and fits(c.block_k // head_dim)]


def _grouped_product(o_proj: FP8Linear, parts: Splits, config: SkinnyConfig, group_heads: int, dtype: torch.dtype, pdl: bool) -> Out:
    """o_proj's product of the attention's parts merged and quantised per row and group of heads."""
    return o_proj.grouped_product(merge_quantize(parts, dtype, num_warps=4, pdl=pdl, group_heads=group_heads), config, pdl)


def _grouped_attention_output(plain: Callable, group_heads: int, rows: int, o, dtype: torch.dtype, fp8: bool, pdl: bool = False,
                              out_dtype: torch.dtype = FP8):  # fmt: skip
    """`ops.attention_output` before an o_proj in our product kernel: decode's parts of up to
    `rows` rows merged and quantised per group of heads, anything else by `plain`."""
    if fp8 and isinstance(o, Splits) and o.partial.shape[0] <= rows:
        return merge_quantize(o, dtype, out_dtype, num_warps=4, pdl=pdl, group_heads=group_heads)
    return plain(o, dtype, fp8)


def _can_fuse_silu(gate_up, rows: int) -> bool:
    """Whether this gate_up linear's product can be our kernel, ending with SiLU*up, at `rows` rows."""
    return isinstance(gate_up, FP8Linear) and gate_up.bias is None and rows <= gate_up.skinny_rows


def _silu_in_product(gate_up: FP8Linear, x_in: tuple[torch.Tensor, torch.Tensor], config: SkinnyConfig,
                     pdl: bool) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The down projection's FP8 input from gate_up's, SiLU*up in the product's epilogue."""
    return quantize_chunks(*gate_up.silu_product(x_in, config, pdl), pdl=pdl)


def _silu_mul_after(plain: Callable, y, dtype: torch.dtype, fp8: bool, pdl: bool = False, out_dtype: torch.dtype = FP8):
    """`ops.silu_mul` after a gate_up linear with the SiLU epilogue: its `SiluProduct` quantised,
    any other product (more rows than its kernel takes) by `plain`."""
    if isinstance(y, SiluProduct):
        return quantize_chunks(y.h, y.chunk_max, y.chunks, out_dtype, pdl=pdl)
    return plain(y, dtype, fp8)
