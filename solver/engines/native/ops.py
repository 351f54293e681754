"""The elementwise parts of a decoder layer, eager or fused.

`EAGER` runs plain PyTorch ops (the CPU path; bit-faithful to transformers' float32 order).
`fused()` returns the same functions through `torch.compile(dynamic=True)`, so each becomes one
or two Triton kernels on CUDA: a decode step is about 12 kernels per layer instead of about 40,
which matters because every kernel in a CUDA graph still costs a few microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .layers import apply_rope, rms_norm


def add_norm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual); with no residual yet, the sum is x."""
    residual = x if residual is None else x + residual
    return rms_norm(residual, weight, eps), residual


def split_rope(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int):
    """qkv [tokens, (heads + 2 kv_heads) * head_dim] -> roped q, roped k, v as [tokens, heads, head_dim]."""
    q, k, v = qkv.split([num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], dim=-1)
    q = apply_rope(q.reshape(-1, num_heads, head_dim), cos, sin)
    k = apply_rope(k.reshape(-1, num_kv_heads, head_dim), cos, sin)
    return q, k, v.reshape(-1, num_kv_heads, head_dim)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def merge_splits(partial: torch.Tensor, lse: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """partial [rows, heads, splits, dim] f32, lse [rows, heads, splits] -> [rows, heads, dim]."""
    weights = torch.exp(lse - lse.amax(dim=-1, keepdim=True))
    return ((partial * weights.unsqueeze(-1)).sum(dim=2) / weights.sum(dim=-1, keepdim=True)).to(dtype)


@dataclass(frozen=True)
class Ops:
    add_norm: Callable
    split_rope: Callable
    silu_mul: Callable


EAGER = Ops(add_norm, split_rope, silu_mul)


def fused() -> Ops:
    compile_ = lambda fn: torch.compile(fn, dynamic=True, fullgraph=True)  # noqa: E731
    return Ops(compile_(add_norm), compile_(split_rope), compile_(silu_mul))
