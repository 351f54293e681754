"""The building blocks of a Llama/Qwen2 decoder, as small functions and modules.

Shapes: activations are flattened over the batch, [tokens, hidden]; per-head tensors are
[tokens, heads, head_dim]. Each op mirrors transformers' Llama/Qwen2 code in its float32
upcasts, so greedy outputs match `generate` on CPU in float32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [tokens, heads, head_dim]; cos, sin [tokens, head_dim] in x's dtype."""
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


def rope_table(hf_rotary: nn.Module, max_positions: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [max_positions, head_dim] from the HF model's own rotary module, so the config's
    theta and scaling (default, linear, dynamic-free llama3, yarn...) are applied as
    transformers applies them."""
    positions = torch.arange(max_positions, device=device).unsqueeze(0)
    probe = torch.zeros(1, dtype=dtype, device=device)
    hf_rotary = hf_rotary.to(device)
    cos, sin = hf_rotary(probe, positions)
    return cos[0].to(dtype), sin[0].to(dtype)


class Out(NamedTuple):
    """A linear layer's output before its scales and bias: the product is `raw` [rows, out] when
    `row_scale` is None, else `raw * row_scale [rows, 1] * col_scale [1, out]` (FP8 inputs); then
    `bias` is added. The consumer applies them (`ops.dequantize`) inside its own fused kernel."""

    raw: torch.Tensor
    row_scale: torch.Tensor | None = None
    col_scale: torch.Tensor | None = None
    bias: torch.Tensor | None = None


class Linear(nn.Module):
    """y = x W^T + b with a plain (bf16 / f32) weight [out, in], returned as a finished `Out`."""

    fp8 = False  # an FP8 linear takes (fp8 rows, row scales) from `ops.linear_input` instead

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> Out:
        return Out(F.linear(x, self.weight, self.bias))
