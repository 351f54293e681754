"""The elementwise parts of a decoder layer, eager or fused.

`EAGER` runs plain PyTorch ops (the CPU path; bit-faithful to transformers' float32 order).
`fused()` returns the same functions through `torch.compile`, so each becomes one or two Triton
kernels on CUDA: a decode step is about 12 kernels per layer instead of about 40, which matters
because every kernel in a CUDA graph still costs a few microseconds. The kernels are specialised
to the model's sizes (only the row count becomes dynamic, on the second shape seen), and each
`fused()` call starts from a clean compiler state: Triton kernels keep the launch settings tuned
on the sizes they first ran with, so kernels compiled for another model (a tiny test model,
hidden size 256) ran several times slower on a 14B model's rows (measured: the FP8 quantise
kernel after attention 15 us instead of 3 us per layer).

FP8 linears add no kernels of their own: the op before one quantises its output per row
(`linear_input`, inside the norm or SiLU kernel) and the op after one applies the row and
column scales and the bias (`dequantize`, inside the RoPE, norm or SiLU kernel); the linear
itself is only the FP8 matrix product. With plain linears both are no-ops.

Two ops wrap compiled parts rather than being compiled whole: `rope_store` writes the new K/V
into the cache outside the compiled RoPE (in place; see `rope_store_with`), and
`attention_output` merges the decode attention's parts and quantises for o_proj as two compiled
functions. `row_kernels.py` offers hand-written kernels for these and the quantising ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .attention import Splits, store_kv
from .layers import Out, apply_rope, rms_norm

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


def dequantize(y: Out, dtype: torch.dtype) -> torch.Tensor:
    """The finished product of a linear layer (see `layers.Out`)."""
    x = y.raw if y.row_scale is None else (y.raw * y.row_scale * y.col_scale).to(dtype)
    return x if y.bias is None else x + y.bias


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [rows, in] -> (fp8 [rows, in], scales [rows, 1] float32): one scale per row, max |x| / 448."""
    x = x.float()
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    return (x / scale).to(FP8), scale


def linear_input(x: torch.Tensor, fp8: bool):
    """What the next linear takes: x itself, or its FP8 rows and their scales."""
    return quantize_rows(x) if fp8 else x


def add_norm(x: Out, residual: torch.Tensor | None, weight: torch.Tensor, eps: float, fp8: bool):
    """(rms_norm(x + residual) as the next linear's input, x + residual); with no residual yet,
    the sum is x."""
    x = dequantize(x, weight.dtype)
    residual = x if residual is None else x + residual
    return linear_input(rms_norm(residual, weight, eps), fp8), residual


def to_cache(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """K or V as a cache of `dtype` stores them: FP8 (e4m3) unscaled, saturating at +-448."""
    return x.clamp(-FP8_MAX, FP8_MAX).to(FP8) if dtype == FP8 else x.to(dtype)


def split_rope(qkv: Out, cos: torch.Tensor, sin: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int, kv_dtype: torch.dtype):
    """qkv [tokens, (heads + 2 kv_heads) * head_dim] -> roped q, roped k, v as [tokens, heads, head_dim];
    k and v already in the cache's dtype (`to_cache`)."""
    qkv = dequantize(qkv, cos.dtype)
    q, k, v = qkv.split([num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], dim=-1)
    q = apply_rope(q.reshape(-1, num_heads, head_dim), cos, sin)
    k = apply_rope(k.reshape(-1, num_kv_heads, head_dim), cos, sin)
    return q, to_cache(k, kv_dtype), to_cache(v.reshape(-1, num_kv_heads, head_dim), kv_dtype)


def rope_store_with(split_rope_fn: Callable) -> Callable:
    """A `rope_store` (the function returned) around a given `split_rope` (eager or compiled):
    the cache is written outside it, since a compiled function that writes into the cache in
    place is turned into one that copies the whole cache (measured: 300-400 us per layer)."""

    def rope_store(qkv: Out, cos: torch.Tensor, sin: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int,
                   k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Roped q [tokens, heads, head_dim]; roped k and v go into their cache slots."""
        q, k, v = split_rope_fn(qkv, cos, sin, num_heads, num_kv_heads, head_dim, k_cache.dtype)
        store_kv(k_cache, v_cache, k, v, slot_mapping)
        return q

    return rope_store


def silu_mul(gate_up: Out, dtype: torch.dtype, fp8: bool):
    gate, up = dequantize(gate_up, dtype).chunk(2, dim=-1)
    return linear_input(F.silu(gate) * up, fp8)


def add(x: Out, residual: torch.Tensor) -> torch.Tensor:
    return dequantize(x, residual.dtype) + residual


def merge_splits(partial: torch.Tensor, lse: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """partial [rows, heads, splits, dim] f32, lse [rows, heads, splits] -> [rows, heads, dim]."""
    weights = torch.exp(lse - lse.amax(dim=-1, keepdim=True))
    return ((partial * weights.unsqueeze(-1)).sum(dim=2) / weights.sum(dim=-1, keepdim=True)).to(dtype)


def attention_output_with(merge: Callable, to_input: Callable) -> Callable:
    """An `attention_output` (the function returned) from a given `merge_splits` and
    `linear_input` (eager or compiled: two kernels when compiled, as measured)."""

    def attention_output(o: torch.Tensor | Splits, dtype: torch.dtype, fp8: bool):
        """The output projection's input from attention [rows, heads, head_dim], or from its
        unmerged parts (`attention.Splits`), merged here in `dtype`."""
        if isinstance(o, Splits):
            o = merge(o.partial, o.lse, dtype)
        return to_input(o.flatten(1), fp8)

    return attention_output


@dataclass(frozen=True)
class Ops:
    add_norm: Callable
    rope_store: Callable
    attention_output: Callable
    silu_mul: Callable
    linear_input: Callable
    add: Callable
    dequantize: Callable


EAGER = Ops(add_norm, rope_store_with(split_rope), attention_output_with(merge_splits, linear_input), silu_mul, linear_input, add, dequantize)


def fused() -> Ops:
    """The ops compiled for the model about to use them. Resets every compiled function of
    this process (another engine's ops recompile on their next call: slower, still correct)."""
    torch._dynamo.reset()
    # Variants are cached per function: static, then dynamic rows, row count 1, each precision.
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, 64)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 1024)
    compile_ = lambda fn: torch.compile(fn, fullgraph=True)  # noqa: E731
    to_input = compile_(linear_input)
    return Ops(compile_(add_norm), rope_store_with(compile_(split_rope)), attention_output_with(compile_(merge_splits), to_input),
               compile_(silu_mul), to_input, compile_(add), compile_(dequantize))  # fmt: skip
