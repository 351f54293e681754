"""FP8 products at decode batch sizes: cuBLAS (`torch._scaled_mm`, both scale modes) against the
Triton kernel for few rows (`fp8_gemm.skinny_mm`) and the BF16 product, for the linears of the
Qwen2.5-14B shape at 16 and 64 rows.

    python bench/fp8_gemm.py

Each product is timed inside a CUDA graph of 20 calls that cycles through enough copies of the
weight (>= 256 MB together) that none is served from the L2 cache, as in a decode step where
each layer's weight is read once. Random weights: the time does not depend on their values.
Prints, per shape and row count, each variant's microseconds and its share of the memory floor
(bytes read and written over the measured copy bandwidth); the Triton kernel is first checked
against the float32 product of the same FP8 operands.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import copy_bandwidth, log  # noqa: E402

from solver.engines.native.fp8_gemm import SkinnyConfig, skinny_mm  # noqa: E402
from solver.engines.native.ops import FP8, quantize_rows  # noqa: E402
from solver.engines.native.timing import graph_time_ms  # noqa: E402

SHAPES = {"qkv": (7168, 5120), "o_proj": (5120, 5120), "gate_up": (27648, 5120), "down": (5120, 13824), "lm_head": (152064, 5120)}
CONFIGS = [SkinnyConfig(bn, bk, 4, 4) for bn, bk in itertools.product((32, 64, 128), (128, 256))]
CONFIGS += [SkinnyConfig(32, 512, 4, 3), SkinnyConfig(32, 256, 2, 6)]
CONFIGS += [SkinnyConfig(64, 256, w, st) for w, st in ((8, 4), (4, 3), (4, 6))]


def time_us(fn, copies: int) -> float:
    """Microseconds per call of fn(i) for i cycling through the weight copies, replayed from a graph."""
    return 1e3 * graph_time_ms([lambda _, i=i: fn(i) for i in range(copies)], None)


def main() -> None:
    log(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    bw = copy_bandwidth()
    log(f"copy bandwidth: {bw / 1e12:.2f} TB/s")
    one = torch.ones((), device="cuda")
    table, best = [], {}
    for (name, (n, k)), rows in itertools.product(SHAPES.items(), (16, 64)):
        copies = max(2, -(-(256 << 20) // (n * k)))
        w16 = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
        w8 = [(torch.randn(n, k, device="cuda") * 100).clamp(-448, 448).to(FP8) for _ in range(copies)]
        w_scale = torch.rand(1, n, device="cuda") + 0.5
        x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        xq, x_scale = quantize_rows(x)
        fp8_bytes = n * k + rows * k
        variants = {
            "rowwise": (lambda i: torch._scaled_mm(xq, w8[i].t(), scale_a=x_scale, scale_b=w_scale, out_dtype=torch.bfloat16), fp8_bytes + 2 * rows * n),
            "tensorwise": (lambda i: torch._scaled_mm(xq, w8[i].t(), scale_a=one, scale_b=one, out_dtype=torch.float32), fp8_bytes + 4 * rows * n),
            "bf16": (lambda i: torch.nn.functional.linear(x, w16[i]), 2 * (n * k + rows * k + rows * n)),
        }
        reference = xq.float() @ w8[0].float().t()  # exact products, float32 sums
        cublas = torch._scaled_mm(xq, w8[0].t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
        log(f"{name} rows={rows}: cuBLAS tensorwise vs float32 reference, relative error {((cublas - reference).norm() / reference.norm()).item():.2e}")
        for c in CONFIGS:
            try:
                got = skinny_mm(xq, w8[0], c)
            except Exception as exc:  # a config this Triton cannot build: skip it, say so
                log(f"{name} rows={rows} {c}: {type(exc).__name__}: {str(exc)[:160]}")
                continue
            err = ((got - reference).norm() / reference.norm()).item()
            assert err < 1e-3, f"skinny_mm {name} rows={rows} {c}: relative error {err:.2e} against the float32 reference"
            variants[c.name] = (lambda i, c=c: skinny_mm(xq, w8[i], c), fp8_bytes + 4 * rows * n)
        results = {}
        for label, (fn, nbytes) in variants.items():
            us = time_us(fn, copies)
            results[label] = (us, 100 * nbytes / bw * 1e6 / us)
        triton_best = min((v for v in results if v.startswith("triton")), key=lambda v: results[v][0], default=None)
        best[f"{name}/{rows}"] = triton_best
        for label in ("bf16", "rowwise", "tensorwise", triton_best):
            if label in results:
                table.append((name, rows, label, *results[label]))
        log(json.dumps({f"{name}/{rows}": {v: round(t, 1) for v, (t, _) in sorted(results.items(), key=lambda kv: kv[1][0])[:8]}}))
        variants.clear()
        torch.cuda.empty_cache()
    log("\n| linear | rows | variant | us | % of memory floor |\n|---|---|---|---|---|")
    for name, rows, label, us, pct in table:
        log(f"| {name} | {rows} | {label} | {us:.1f} | {pct:.0f}% |")
    per_step = {}
    for rows in (16, 64):
        for label in ("bf16", "rowwise", "tensorwise", "triton"):
            total = 0.0
            for name in SHAPES:
                row = [t for t in table if t[0] == name and t[1] == rows and t[2].startswith(label)]
                total += row[0][3] * (48 if name != "lm_head" else 1)
            per_step[f"{label}/{rows}"] = round(total / 1e3, 3)
    log("per decode step, 48 layers + lm_head, ms:", json.dumps(per_step))


if __name__ == "__main__":
    main()
