"""Settings of the per-row paged decode kernel (`paged_attention.DecodeKernel`) at a decode step of
the Qwen2.5-14B shape: 16 rows that share a 1,000-token prompt, each with 512 tokens of its own
(the middle of a 1,024-token generation), for a bf16 and an FP8 cache.

    python bench/paged_attention.py

Each variant is checked against the float32 gather attention on the same cache values, then
timed in a CUDA graph that cycles through 8 layers' caches (as a step reads each layer's cache
once: the prompt's blocks stay in L2 only while one layer's rows read them). Prints each
variant's microseconds per layer and its share of the memory floor (the prompt's KV counted
once, each row's own KV once). Random values: the time does not depend on them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import copy_bandwidth, log  # noqa: E402

from solver.engines.native.attention import DecodeMeta, decode_attention  # noqa: E402
from solver.engines.native.ops import merge_splits  # noqa: E402
from solver.engines.native.paged_attention import DecodeKernel, paged_decode_splits  # noqa: E402
from solver.engines.native.timing import graph_time_ms  # noqa: E402

ROWS, HEADS, KV_HEADS, DIM, BLOCK = 16, 40, 8, 128, 16
PROMPT, OWN, LAYERS = 1000, 512, 8
# around the defaults (4 programs per SM; measured best among these on an H100 with 2-4 programs
# per SM, 32-128 positions, 2-8 warps, 2-4 stages): the settings not yet tried together with them
VARIANTS = [DecodeKernel()] + [
    DecodeKernel(block_n=n, num_warps=w, num_stages=s, programs_per_sm=p)
    for n, w, s, p in [(64, 4, 2, 2), (128, 4, 2, 4), (64, 4, 3, 4), (128, 8, 2, 4), (64, 8, 2, 4), (32, 4, 2, 4),
                       (64, 4, 2, 6), (64, 4, 2, 8)]
]  # fmt: skip


def layer_inputs(dtype: torch.dtype):
    """One layer's cache, the rows' block tables (the prompt's blocks shared) and context lengths."""
    prompt_blocks = -(-PROMPT // BLOCK)
    own_blocks = -(-(PROMPT % BLOCK + OWN) // BLOCK)
    blocks = 1 + prompt_blocks + ROWS * own_blocks
    k, v = (torch.randn(blocks, BLOCK, KV_HEADS, DIM, device="cuda").clamp(-4, 4).to(dtype) for _ in range(2))
    pages = torch.randperm(blocks - 1, device="cuda") + 1
    shared, own = pages[:prompt_blocks], pages[prompt_blocks:].view(ROWS, own_blocks)
    # the last prompt block is each row's own copy (copy-on-write), as in the engine
    tables = torch.cat([shared[:-1].expand(ROWS, -1), own], dim=1).int()
    lens = torch.full((ROWS,), PROMPT + OWN, dtype=torch.int32, device="cuda")
    return k, v, DecodeMeta(torch.zeros(ROWS, dtype=torch.long, device="cuda"), tables, lens)


def main() -> None:
    log(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    bw = copy_bandwidth()
    log(f"copy bandwidth: {bw / 1e12:.2f} TB/s")
    torch.manual_seed(0)
    q = torch.randn(ROWS, HEADS, DIM, device="cuda", dtype=torch.bfloat16)
    scale = DIM**-0.5
    table, results = [], {}
    for dtype in (torch.bfloat16, torch.float8_e4m3fn):
        layers = [layer_inputs(dtype) for _ in range(LAYERS)]
        k, v, meta = layers[0]
        reference = decode_attention(q.float(), k.float(), v.float(), meta, scale)
        floor_us = 1e6 * (PROMPT + ROWS * OWN) * 2 * KV_HEADS * DIM * dtype.itemsize / bw  # bytes over the copy rate
        in_bf16 = [DecodeKernel(fp8_in_fp16=False), DecodeKernel(programs_per_sm=2, fp8_in_fp16=False)]
        variants = VARIANTS + (in_bf16 if dtype != torch.bfloat16 else [])
        for kernel in variants:
            name = f"{str(dtype)[6:]} {json.dumps(asdict(kernel))}"
            try:
                out = merge_splits(*paged_decode_splits(q, k, v, meta, scale, kernel=kernel), torch.float32)
                err = ((out - reference).norm() / reference.norm()).item()
                if not err < 1e-2:
                    log(f"{name}: WRONG, relative error {err:.2e}")
                    continue
                fns = [lambda _, kv=kv: paged_decode_splits(q, kv[0], kv[1], kv[2], scale, kernel=kernel) for kv in layers]
                us = 1e3 * graph_time_ms(fns, None, repeats=4 * LAYERS)
            except Exception as exc:  # a setting this Triton cannot build: say so, go on
                log(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            results[name] = us
            table.append(f"| {str(dtype)[6:]} | {kernel.block_n} | {kernel.num_warps} | {kernel.num_stages} | {kernel.programs_per_sm} | "
                         f"{kernel.fp8_in_fp16} | {us:.2f} | {100 * floor_us / us:.0f}% | {err:.1e} |")  # fmt: skip
    log("\n| cache | block_n | warps | stages | programs/SM | fp16 products | us per layer | % of floor | rel. error |")
    log("|---|---|---|---|---|---|---|---|---|")
    log("\n".join(table))
    log(json.dumps(results))


if __name__ == "__main__":
    main()
