"""Settings of the paged decode kernel (`paged_attention.DecodeKernel`) at a decode step of the
Qwen2.5-14B shape: 16 rows that share a prompt (1,000 tokens unless told), each with 512 tokens
of its own (the middle of a 1,024-token generation), for a bf16 and an FP8 cache.

    python bench/paged_attention.py [--prompt-tokens 1000] [--own-tokens 512] [--cache both|bf16|fp8] [--per-row-only]

Variants: the per-row settings, and the prompt's positions read once for all rows
(`DecodeMeta.shared_len`) with several split counts. Each variant is checked against the
float32 gather attention on the same cache values, then timed together with the merge + FP8
quantise that follows it in the engine (more splits cost more there) in a CUDA graph that
cycles through 8 layers' caches (as a step reads each layer's cache once: the prompt's blocks
stay in L2 only while one layer's rows read them). Prints each
variant's microseconds per layer and its share of the memory floor (the prompt's KV counted
once, each row's own KV once). Random values: the time does not depend on them.
"""

from __future__ import annotations

import argparse
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
from solver.engines.native.row_kernels import merge_quantize  # noqa: E402
from solver.engines.native.timing import graph_time_ms  # noqa: E402

ROWS, HEADS, KV_HEADS, DIM, BLOCK = 16, 40, 8, 128, 16
LAYERS = 8
# The plain kernel's settings (`EngineConfig.decode_kernel`), block-table prefetch with 2-3
# stages and 2-4 programs per SM, and the shared prompt read once with several split counts, query
# tiles and positions per step (`EngineConfig.shared_decode_kernel` is the 3-stage one with 8
# splits: best at 8,000 tokens on an H200, bench/NOTES.md "Session 6")
VARIANTS = [(DecodeKernel(), False)] + [
    (DecodeKernel(prefetch=True, num_stages=st, programs_per_sm=p), False) for st, p in [(2, 4), (3, 4), (1, 4), (2, 2), (3, 2)]
] + [  # around an FP8 cache's settings (prefetch, 2 programs per SM): positions per step, warps, programs per SM
    (DecodeKernel(prefetch=True, programs_per_sm=p, block_n=n, num_warps=w), False) for n, w, p in [(128, 4, 2), (32, 4, 2), (64, 8, 2), (64, 4, 1), (64, 4, 3)]
] + [  # the prompt's positions read once for all rows by programs of the same launch
    (DecodeKernel(num_stages=st, programs_per_sm=p, shared_splits=s, shared_block_q=b, shared_block_n=n, prefetch=f), True)
    for st, p, s, b, n, f in [(2, 4, 8, 64, 64, False), (2, 2, 8, 64, 64, False), (2, 4, 8, 64, 64, True), (2, 2, 8, 64, 64, True),
                              (3, 2, 8, 64, 64, True), (2, 2, 16, 64, 64, True), (2, 2, 8, 64, 128, True), (2, 2, 8, 128, 64, True),
                              (2, 2, 4, 64, 64, True), (2, 2, 4, 64, 128, True)]
]  # fmt: skip


def layer_inputs(dtype: torch.dtype, prompt: int, own: int):
    """One layer's cache, the rows' block tables (the prompt's blocks shared, if any) and context
    lengths (`prompt` + `own` each)."""
    prompt_blocks = -(-prompt // BLOCK)
    own_blocks = -(-(prompt - max(prompt_blocks - 1, 0) * BLOCK + own) // BLOCK)  # the prompt's last block is copied
    blocks = 1 + prompt_blocks + ROWS * own_blocks
    k, v = (torch.randn(blocks, BLOCK, KV_HEADS, DIM, device="cuda").clamp(-4, 4).to(dtype) for _ in range(2))
    pages = torch.randperm(blocks - 1, device="cuda") + 1
    shared, own_pages = pages[:prompt_blocks], pages[prompt_blocks:].view(ROWS, own_blocks)
    # the last prompt block is each row's own copy (copy-on-write), as in the engine
    tables = torch.cat([shared[:-1].expand(ROWS, -1), own_pages], dim=1).int()
    lens = torch.full((ROWS,), prompt + own, dtype=torch.int32, device="cuda")
    shared = torch.tensor([max(prompt_blocks - 1, 0) * BLOCK], dtype=torch.int32, device="cuda")
    return k, v, DecodeMeta(torch.zeros(ROWS, dtype=torch.long, device="cuda"), tables, lens, shared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--own-tokens", type=int, default=512, help="each row's own positions after the prompt")
    parser.add_argument("--cache", choices=["both", "bf16", "fp8"], default="both")
    parser.add_argument("--per-row-only", action="store_true", help="only the per-row variants (no shared-prompt ones)")
    args = parser.parse_args()
    prompt, own = args.prompt_tokens, args.own_tokens
    log(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  {ROWS} rows, prompt {prompt}, own {own}")
    bw = copy_bandwidth()
    log(f"copy bandwidth: {bw / 1e12:.2f} TB/s")
    torch.manual_seed(0)
    q = torch.randn(ROWS, HEADS, DIM, device="cuda", dtype=torch.bfloat16)
    scale = DIM**-0.5
    table, results = [], {}
    dtypes = {"both": (torch.bfloat16, torch.float8_e4m3fn), "bf16": (torch.bfloat16,), "fp8": (torch.float8_e4m3fn,)}[args.cache]
    for dtype in dtypes:
        layers = [layer_inputs(dtype, prompt, own) for _ in range(LAYERS)]
        k, v, meta = layers[0]
        reference = decode_attention(q.float(), k.float(), v.float(), meta, scale)
        floor_us = 1e6 * (prompt + ROWS * own) * 2 * KV_HEADS * DIM * dtype.itemsize / bw  # bytes over the copy rate
        variants = [v for v in VARIANTS if not (args.per_row_only and v[1])]
        variants += [(DecodeKernel(fp8_in_fp16=False), False)] if dtype != torch.bfloat16 else []
        for kernel, shared in variants:
            name = f"{str(dtype)[6:]} shared={shared} {json.dumps(asdict(kernel))}"
            with_hint = [(kk, vv, m if shared else DecodeMeta(m.slot_mapping, m.block_tables, m.context_lens)) for kk, vv, m in layers]
            try:
                out = merge_splits(*paged_decode_splits(q, k, v, with_hint[0][2], scale, kernel=kernel), torch.float32)
                err = ((out - reference).norm() / reference.norm()).item()
                if not err < 1e-2:
                    log(f"{name}: WRONG, relative error {err:.2e}")
                    continue
                # with the merge the engine runs after it (FP8: merge + quantise), which pays for more splits
                fns = [lambda _, kv=kv: merge_quantize(paged_decode_splits(q, kv[0], kv[1], kv[2], scale, kernel=kernel), q.dtype)
                       for kv in with_hint]  # fmt: skip
                us = 1e3 * graph_time_ms(fns, None, repeats=4 * LAYERS)
            except Exception as exc:  # a setting this Triton cannot build: say so, go on
                log(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            results[name] = us
            table.append(f"| {str(dtype)[6:]} | {kernel.block_n} | {kernel.num_warps} | {kernel.num_stages} | {kernel.programs_per_sm} | "
                         f"{kernel.fp8_in_fp16} | {kernel.prefetch} | "
                         f"{f'{kernel.shared_splits} x {kernel.shared_block_q} x {kernel.shared_block_n}' if shared else '-'} | "
                         f"{us:.2f} | {100 * floor_us / us:.0f}% | {err:.1e} |")  # fmt: skip
    log("\n| cache | block_n | warps | stages | programs/SM | fp16 products | prefetch | shared: splits x queries x positions | us per layer (+ merge) | % of floor | rel. error |")
    log("|---|---|---|---|---|---|---|---|---|---|---|")
    log("\n".join(table))
    log(json.dumps(results))


if __name__ == "__main__":
    main()
