"""FP8 (e4m3) weights for the linear layers, on GPUs with FP8 matrix units (Hopper, Ada).

Weights: one scale per output channel (max |w| / 448). Activations: one scale per token,
computed on the fly by the op before the linear (`ops.linear_input`, fused into its norm or SiLU
kernel); the op after it applies both scales (`ops.dequantize`). The linear itself is one FP8
product, in one of three forms ("modes"):
- "rowwise": `torch._scaled_mm` with the row and column scales inside it, bf16 out;
- "tensorwise": `torch._scaled_mm` unscaled in float32 (cuBLAS's plain FP8 path); the next op
  applies the scales;
- "triton/...": our kernel for few rows (`fp8_gemm.skinny_mm`, one of its `CANDIDATES`), float32
  out, scaled by the next op; for more rows than it was chosen at (`skinny_rows`: a larger
  decode batch, prefill) and off the GPU it is the tensorwise product. (At 64 rows some of the
  kernel's configs lose to cuBLAS by up to 8%, `bench/fp8_gemm.py`.)
`quantize_where_faster` times each kind of linear (qkv, o_proj, gate_up, down, lm_head) at the
decode batch size inside a CUDA graph, in bf16 and in every FP8 form, cycling through several
layers' weights so that none is served from the L2 cache (as in a decode step, where each
weight is read once), and converts every layer of each kind to the fastest; the embedding and
norms stay bf16.

The drafter's vocabulary head (`quantize_drafter_head_where_faster`) is converted the same way
when faster, as a `SelfQuantizedLinear` that quantises its own input and rescales its own output
(the drafter has no fused ops around it). Its drafts then come from a slightly different q,
which speculative sampling allows: the output distribution stays the model's.

Not done: calibrated static activation scales. FP8 on CPU: `convert` and `convert_drafter_head`
work there (the tests use them), the `..._where_faster` functions refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from . import fp8_gemm
from .layers import Linear, Out
from .model import CausalLM
from .ops import FP8, FP8_MAX, dequantize, quantize_rows
from .timing import agreeing_times, graph_time_ms, with_choice

LAYER_KINDS = ("qkv", "o_proj", "gate_up", "down")
KINDS = (*LAYER_KINDS, "lm_head")
CUBLAS_MODES = ("rowwise", "tensorwise")
MODES = (*CUBLAS_MODES, fp8_gemm.CANDIDATES[0].name)  # one of each form (the tests' parameters)


class SiluProduct(NamedTuple):
    """A gate_up product that ran SiLU(gate) * up as its epilogue (`fp8_gemm.skinny_silu_mm`):
    the float32 rows, their max |h| per tile of channels and the tile count; the op after it
    (`row_kernels.quantize_chunks`) finishes each row's scale and quantises."""

    h: torch.Tensor
    chunk_max: torch.Tensor
    chunks: int


class FP8Linear(nn.Module):
    fp8 = True
    pdl = False  # our kernel launched programmatically (`launch`); the engine sets it
    # a gate_up linear whose own kernel (few rows) returns a `SiluProduct`; set by
    # `row_kernels.choose_row_kernels` where faster, with a `silu_mul` op that takes it
    silu_epilogue = False

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, mode: str = "rowwise", skinny_rows: int = fp8_gemm.MAX_ROWS) -> None:
        super().__init__()
        self.mode = mode
        self.skinny_rows = min(skinny_rows, fp8_gemm.MAX_ROWS)
        self.skinny = fp8_gemm.SkinnyConfig.parse(mode) if mode.startswith("triton/") else None
        assert mode in CUBLAS_MODES or self.skinny is not None, mode
        scale = weight.abs().amax(dim=1).float().clamp(min=1e-12) / FP8_MAX  # [out]
        self.weight = nn.Parameter((weight.float() / scale.unsqueeze(1)).to(FP8), requires_grad=False)  # [out, in]
        self.weight_scale = nn.Parameter(scale.unsqueeze(0), requires_grad=False)  # [1, out]
        self.bias = bias
        self.register_buffer("one", torch.ones((), dtype=torch.float32, device=weight.device), persistent=False)
        self.register_buffer("unit_rows", torch.ones(fp8_gemm.MAX_ROWS, 1, device=weight.device), persistent=False)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> Out | SiluProduct:
        """x: (fp8 rows [rows, in], their scales [rows, 1]) from `ops.linear_input`, or scales per
        row and group of columns [rows, groups] (`row_kernels.merge_quantize` per group), which only
        our product kernel takes (the row kernels choose such inputs only for it)."""
        xq, x_scale = x
        if x_scale.shape[1] > 1:
            return self.grouped_product(x)
        if self.mode == "rowwise":
            y = torch._scaled_mm(xq, self.weight.t(), scale_a=x_scale, scale_b=self.weight_scale, out_dtype=torch.bfloat16)
            return Out(y, bias=self.bias)
        if self.skinny is not None and xq.is_cuda and xq.shape[0] <= self.skinny_rows:
            if self.silu_epilogue:
                return self.silu_product(x)
            y = fp8_gemm.skinny_mm(xq, self.weight, self.skinny, self.pdl)
        else:
            y = torch._scaled_mm(xq, self.weight.t(), scale_a=self.one, scale_b=self.one, out_dtype=torch.float32)
        return Out(y, x_scale, self.weight_scale, self.bias)

    def grouped_product(self, x: tuple[torch.Tensor, torch.Tensor], config: fp8_gemm.SkinnyConfig | None = None,
                        pdl: bool | None = None) -> Out:  # fmt: skip
        """The product of an input quantised per row and group of columns (scales [rows, groups])
        in our kernel, in `config` (default: this linear's) and launched as `pdl` says (default:
        as this linear is)."""
        xq, x_scale = x
        config, pdl = config or self.skinny, self.pdl if pdl is None else pdl
        y = fp8_gemm.skinny_mm(xq, self.weight, config, pdl, group_scales=x_scale)
        return Out(y, self.unit_rows[: y.shape[0]], self.weight_scale, self.bias)

    def silu_product(self, x: tuple[torch.Tensor, torch.Tensor], config: fp8_gemm.SkinnyConfig | None = None,
                     pdl: bool | None = None) -> SiluProduct:  # fmt: skip
        """A gate_up linear's product in our kernel ending with SiLU*up, in `config` (default:
        this linear's) and launched as `pdl` says (default: as this linear is)."""
        xq, x_scale = x
        config, pdl = config or self.skinny, self.pdl if pdl is None else pdl
        return SiluProduct(*fp8_gemm.skinny_silu_mm(xq, x_scale, self.weight, self.weight_scale, config, pdl))


class SelfQuantizedLinear(nn.Module):
    """An FP8Linear with its input quantisation and output rescaling around it: x -> x W^T in
    x's dtype, for a place without fused ops (the drafter's head)."""

    fp8 = False  # takes a plain tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, mode: str, skinny_rows: int = fp8_gemm.MAX_ROWS) -> None:
        super().__init__()
        self.inner = FP8Linear(weight, bias, mode, skinny_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dequantize(self.inner(quantize_rows(x)), x.dtype).to(x.dtype)


def is_quantized(model: nn.Module) -> bool:
    """Whether some linear of `model` is already FP8."""
    return any(isinstance(m, FP8Linear) for m in model.modules())


def modules_of(model: CausalLM, kind: str) -> list[tuple[nn.Module, str]]:
    if kind == "lm_head":
        return [(model, "lm_head")]
    return [(layer, kind) for layer in model.layers]


def convert(model: CausalLM, modes: dict[str, str], skinny_rows: int = fp8_gemm.MAX_ROWS) -> None:
    """Replace every linear of each kind in `modes` by an FP8Linear of that mode, in place."""
    if model.embed.dtype != torch.bfloat16:
        raise ValueError(f"FP8 linears need a bfloat16 model, got {model.embed.dtype}")
    for kind, mode in modes.items():
        for owner, name in modules_of(model, kind):
            linear: Linear = getattr(owner, name)
            setattr(owner, name, FP8Linear(linear.weight.data, linear.bias, mode, skinny_rows))
            del linear


def _require_fp8_gpu(device: torch.device) -> None:
    if device.type != "cuda":
        raise ValueError("FP8 weights need a CUDA GPU with FP8 matrix units")
    if torch.cuda.get_device_capability(device) < (8, 9):
        raise ValueError("FP8 weights need compute capability 8.9 or newer (Ada, Hopper)")


def all_modes() -> tuple[str, ...]:
    return (*CUBLAS_MODES, *(c.name for c in fp8_gemm.CANDIDATES))


def _finished(y) -> torch.Tensor:
    return (dequantize(y, torch.bfloat16) if isinstance(y, Out) else y).float()


def _fastest(plain: list[nn.Module], fp8_in: Callable[[str], list[nn.Module]], x: torch.Tensor, fp8_x) -> dict[str, float | str]:
    """{"bf16": ms, each FP8 mode: ms, "chosen": the fastest} for the `plain` linears on x and
    their FP8 forms in each mode (`fp8_in(mode)`) on fp8_x. A mode this cuBLAS / torch / Triton
    build does not offer, or whose product differs from the first form that runs (cuBLAS
    row-wise) by more than rounding (1e-2 relative; listed under "mismatch"), times as
    infinite: never chosen."""
    bf16 = graph_time_ms(plain, x)

    def form(mode: str):
        fns = fp8_in(mode)
        return lambda: _finished(fns[0](fp8_x)), lambda: graph_time_ms(fns, fp8_x)

    return with_choice({"bf16": bf16, **agreeing_times({mode: partial(form, mode) for mode in all_modes()}, 1e-2)})


def _rows_served(batch_size: int) -> int:
    """The most rows a kernel chosen at `batch_size` rows serves: the batch it was timed at, or a
    whole 16-row tile (below that the kernel's work is the same)."""
    return max(16, batch_size)


def _enough_to_miss_l2(weight: torch.Tensor, available: int) -> int:
    """How many different weights of this size, read in turn, overflow twice the L2 cache (FP8
    bytes; at least 1, at most `available`)."""
    l2 = torch.cuda.get_device_properties(weight.device).L2_cache_size
    return max(1, min(available, -(-2 * l2 // weight.numel())))


def quantize_where_faster(model: CausalLM, batch_size: int) -> dict[str, dict[str, float | str]]:
    """Convert each kind of linear to its fastest form at `batch_size` rows; returns
    {kind: {"bf16": ms, each FP8 mode: ms, "chosen": name}}. The FP8 times are the bare
    products: quantising and rescaling happen inside the neighbouring fused ops."""
    _require_fp8_gpu(model.embed.device)
    choice = {}
    for kind in KINDS:
        owners = modules_of(model, kind)
        first: Linear = getattr(*owners[0])
        plain = [getattr(*owner) for owner in owners[: _enough_to_miss_l2(first.weight, len(owners))]]
        x = torch.randn(batch_size, first.weight.shape[1], dtype=first.weight.dtype, device=first.weight.device)
        to_fp8 = lambda mode: [FP8Linear(m.weight.data, m.bias, mode) for m in plain]  # noqa: E731
        choice[kind] = _fastest(plain, to_fp8, x, quantize_rows(x))
        if choice[kind]["chosen"] != "bf16":
            convert(model, {kind: choice[kind]["chosen"]}, skinny_rows=_rows_served(batch_size))
        torch.cuda.empty_cache()
    return choice


def convert_drafter_head(drafter: nn.Module, mode: str, skinny_rows: int = fp8_gemm.MAX_ROWS) -> None:
    """Replace the drafter's vocabulary head (the last linear of `lm_head`) by an FP8 one."""
    head: nn.Linear = drafter.lm_head[-1]
    drafter.lm_head[-1] = SelfQuantizedLinear(head.weight.data, head.bias, mode, skinny_rows)


def quantize_drafter_head_where_faster(drafter: nn.Module, batch_size: int) -> dict[str, float | str]:
    """Time the drafter's vocabulary head at `batch_size` rows in bf16 and every FP8 mode (with
    their quantisation and rescaling, which this head does itself) and keep the fastest."""
    head: nn.Linear = drafter.lm_head[-1]
    _require_fp8_gpu(head.weight.device)
    x = torch.randn(batch_size, head.weight.shape[1], dtype=head.weight.dtype, device=head.weight.device)
    choice = _fastest([head], lambda mode: [SelfQuantizedLinear(head.weight.data, head.bias, mode)], x, x)
    if choice["chosen"] != "bf16":
        convert_drafter_head(drafter, choice["chosen"], skinny_rows=_rows_served(batch_size))
    torch.cuda.empty_cache()
    return choice


def launch_programmatically(model: nn.Module, pdl: bool) -> None:
    """Whether the FP8 linears' own kernel (`fp8_gemm`) is launched programmatically (`launch`)."""
    for module in model.modules():
        if isinstance(module, FP8Linear):
            module.pdl = pdl


def use_product_kernel(model: CausalLM, kind: str, config: fp8_gemm.SkinnyConfig) -> None:
    """Every FP8 linear of `kind` becomes our product kernel in `config` (the weight is the same
    in every form)."""
    for owner, name in modules_of(model, kind):
        linear = getattr(owner, name)
        if isinstance(linear, FP8Linear):
            linear.mode, linear.skinny = config.name, config


def fuse_silu(model: CausalLM, config: fp8_gemm.SkinnyConfig | None) -> None:
    """With a config, every FP8 gate_up linear becomes our product kernel in that config, ending
    with SiLU*up (`FP8Linear.silu_epilogue`); None turns the epilogue off (the form stays).
    `row_kernels.choose_row_kernels` turns it on with the op that takes their output."""
    if config is not None:
        use_product_kernel(model, "gate_up", config)
    for layer in model.layers:
        if isinstance(layer.gate_up, FP8Linear):
            layer.gate_up.silu_epilogue = config is not None
