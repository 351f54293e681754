"""FP8 (e4m3) weights for the linear layers, on GPUs with FP8 matrix units (Hopper, Ada).

Weights: one scale per output channel (max |w| / 448). Activations: one scale per token,
computed on the fly. The product is `torch._scaled_mm`, either with row-wise scales
("rowwise") or unscaled in float32 with the two scales applied after ("tensorwise": cuBLAS's
plain FP8 path, often faster at small batch). `quantize_where_faster` times each kind of linear
(qkv, o_proj, gate_up, down, lm_head) at the decode batch size inside a CUDA graph, in bf16 and
in both FP8 modes, on the first layer, and converts every layer of each kind to the fastest;
the embedding and norms stay bf16, and so does the KV cache.

Not done: calibrated static activation scales; FP8 KV cache; FP8 on CPU (refused).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Linear
from .model import CausalLM

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
LAYER_KINDS = ("qkv", "o_proj", "gate_up", "down")


def _quantize_rows(x: torch.Tensor, padded_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [rows, in] -> (fp8 [padded_rows, in], scales [padded_rows, 1] f32); extra rows are zero."""
    x = F.pad(x, (0, 0, 0, padded_rows - x.shape[0])).float()
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    return (x / scale).to(FP8), scale


def _rescale(y: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor, rows: int) -> torch.Tensor:
    return (y[:rows] * x_scale[:rows] * w_scale).to(torch.bfloat16)


_quantize_rows_fused = torch.compile(_quantize_rows, dynamic=True, fullgraph=True)
_rescale_fused = torch.compile(_rescale, dynamic=True, fullgraph=True)


class FP8Linear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, mode: str = "rowwise") -> None:
        super().__init__()
        assert mode in ("rowwise", "tensorwise")
        self.mode = mode
        scale = weight.abs().amax(dim=1).float().clamp(min=1e-12) / FP8_MAX  # [out]
        self.weight = nn.Parameter((weight.float() / scale.unsqueeze(1)).to(FP8), requires_grad=False)  # [out, in]
        self.weight_scale = nn.Parameter(scale.unsqueeze(0), requires_grad=False)  # [1, out]
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        xq, x_scale = _quantize_rows_fused(x, -(-rows // 16) * 16)  # _scaled_mm wants multiples of 16
        if self.mode == "rowwise":
            y = torch._scaled_mm(xq, self.weight.t(), scale_a=x_scale, scale_b=self.weight_scale, out_dtype=torch.bfloat16)[:rows]
        else:
            one = torch.ones((), dtype=torch.float32, device=x.device)
            y = torch._scaled_mm(xq, self.weight.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
            y = _rescale_fused(y, x_scale, self.weight_scale, rows)
        return y if self.bias is None else y + self.bias


def _time_ms(fn, x: torch.Tensor, repeats: int = 20) -> float:
    """Milliseconds per call, replayed from a CUDA graph as decode runs it."""
    with torch.inference_mode():
        for _ in range(3):
            fn(x)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(repeats):
                fn(x)
        graph.replay()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def _modules_of(model: CausalLM, kind: str) -> list[tuple[nn.Module, str]]:
    if kind == "lm_head":
        return [(model, "lm_head")]
    return [(layer, kind) for layer in model.layers]


def quantize_where_faster(model: CausalLM, batch_size: int) -> dict[str, dict[str, float | str]]:
    """Convert each kind of linear to its fastest form at `batch_size` rows; returns
    {kind: {"bf16": ms, "rowwise": ms, "tensorwise": ms, "chosen": name}}."""
    if model.embed.device.type != "cuda":
        raise ValueError("FP8 weights need a CUDA GPU with FP8 matrix units")
    if torch.cuda.get_device_capability(model.embed.device) < (8, 9):
        raise ValueError("FP8 weights need compute capability 8.9 or newer (Ada, Hopper)")
    choice = {}
    for kind in (*LAYER_KINDS, "lm_head"):
        owners = _modules_of(model, kind)
        first: Linear = getattr(*owners[0])
        x = torch.randn(batch_size, first.weight.shape[1], dtype=first.weight.dtype, device=first.weight.device)
        times = {"bf16": _time_ms(first, x)}
        for mode in ("rowwise", "tensorwise"):
            try:
                times[mode] = _time_ms(FP8Linear(first.weight.data, first.bias, mode), x)
            except RuntimeError:  # a mode this cuBLAS / torch build does not offer
                times[mode] = float("inf")
        chosen = min(times, key=times.get)
        choice[kind] = {**times, "chosen": chosen}
        if chosen != "bf16":
            for owner, name in owners:
                linear: Linear = getattr(owner, name)
                setattr(owner, name, FP8Linear(linear.weight.data, linear.bias, chosen))
                del linear
        torch.cuda.empty_cache()
    return choice
