"""Benchmark the native engine against transformers' continuous batching on one GPU.

    PYTHONUNBUFFERED=1 python bench/engine.py --out $OUT            # full run (about 5 minutes on an H100)
    python bench/engine.py --quick                                  # smoke run: few tokens

What it does, in one process:
1. correctness on the GPU: the Triton paged decode kernel against the gather-based one on random
   data; tiny random Qwen2 and Llama through the engine (graphs + Triton, and plain torch) against
   transformers' greedy `generate`;
2. measures device-to-device copy bandwidth (bytes read plus written);
3. builds a Qwen2.5-14B-shaped model with random bf16 weights directly on the GPU (decode cost does
   not depend on weight values, so these are speeds only), runs transformers' continuous batching
   (`generate_batch`) on the workload, then our engine in BF16 and FP8;
4. prints a table: time, batch tokens/s, tokens/s per sample, bytes per decode step over the
   measured bandwidth (the memory floor) as a percent of the measured step time.
Workloads use forced lengths: no stop tokens, sampling at temperature 0.6, top-p 0.95.
The random output head is scaled so the next-token distribution is peaked as a trained model's
is (logits with standard deviation `LOGIT_STD`): with flat logits every sampled row's nucleus
would spill past the sampler's candidates and take the host's full-sort path every step, which a
trained model rarely does. The rows that did take it are counted in the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from solver.engines import sampling as sampling_module  # noqa: E402
from solver.engines.base import Request, SamplingParams  # noqa: E402
from solver.engines.native import EngineConfig, NativeEngine  # noqa: E402
from solver.engines.native.attention import DecodeKernel  # noqa: E402
from solver.engines.native.model import CausalLM, from_hf  # noqa: E402

QWEN25_14B = dict(
    hidden_size=5120, intermediate_size=13824, num_hidden_layers=48, num_attention_heads=40,
    num_key_value_heads=8, vocab_size=152064, rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=False,
)  # fmt: skip
OWN_STEPS = 64  # decode steps after each sample's own long prompt (--own-context)
LOGIT_STD = 3.0  # spread of the random model's logits: at T=0.6 the top 1,024 hold >= 0.95 of the mass


def randomize(model) -> None:
    """Explicit random weights in place (never time uninitialised memory or zeros): norms 1,
    weights N(0, 0.02), the output head scaled so logits have standard deviation LOGIT_STD
    (the final norm makes hidden rows unit-RMS)."""
    head_std = LOGIT_STD / model.config.hidden_size**0.5
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if "norm" in name else p.normal_(0.0, head_std if name.startswith("lm_head") else 0.02)


@dataclass
class Row:
    engine: str
    precision: str
    samples: int
    context: str
    total_s: float
    batch_tok_s: float
    per_sample_tok_s: float
    gb_per_step: float
    floor_ms: float
    step_ms: float
    pct_of_limit: float
    fallback_rows: int = 0
    gb_per_step_shared_once: float = 0.0  # the prompt's KV counted once, not once per sample
    pct_of_limit_shared_once: float = 0.0
    other_steps: int = 0  # engine steps without a decode (prefill, admission)
    other_s: float = 0.0  # their time; total_s minus this and the decode steps is the host's rest


def log(*parts) -> None:
    print(*parts, flush=True)


# -- correctness -------------------------------------------------------------------------------


def check_kernel(cache_dtype: torch.dtype = torch.bfloat16, shared_blocks: int = 0) -> float:
    """The paged decode kernel against the gather reference on the same cache values, for a
    bf16 or an FP8 cache (the kernel converts FP8 as it loads); with `shared_blocks`, every row's
    table starts with the same blocks and the kernel is told so (compared on the rows longer
    than them; a shorter row stands for a padded graph row)."""
    from solver.engines.native.attention import DecodeMeta, decode_attention
    from solver.engines.native.paged_attention import paged_decode_attention

    torch.manual_seed(1)
    rows, heads, kv_heads, dim, blocks, bs = 7, 40, 8, 128, 300, 16
    k, v = (torch.randn(blocks, bs, kv_heads, dim, device="cuda").to(cache_dtype) for _ in range(2))
    q = torch.randn(rows, heads, dim, device="cuda", dtype=torch.bfloat16)
    lens = torch.tensor([1, 15, 16, 17, 300, 1000, 2047], dtype=torch.int32, device="cuda")
    tables = torch.stack([torch.randperm(blocks - 1, device="cuda")[:128] + 1 for _ in range(rows)]).int()
    tables[:, :shared_blocks] = tables[0, :shared_blocks]
    slots = torch.zeros(rows, dtype=torch.long, device="cuda")
    hint = torch.tensor([shared_blocks * bs], dtype=torch.int32, device="cuda") if shared_blocks else None
    ref = decode_attention(q.float(), k.float(), v.float(), DecodeMeta(slots, tables, lens), dim**-0.5)
    out = paged_decode_attention(q, k, v, DecodeMeta(slots, tables, lens, hint), dim**-0.5).float()
    real = lens > shared_blocks * bs
    err = ((out[real] - ref[real]).norm() / ref[real].norm()).item()
    log(f"paged kernel on a {cache_dtype} cache, {shared_blocks} shared blocks, vs gather reference: relative error {err:.2e}")
    assert err < 1e-2 and not out[real].isnan().any(), f"paged kernel, {cache_dtype} cache, {shared_blocks} shared blocks: relative error {err:.2e}"
    return err


def check_prefill_kernel(cache_dtype: torch.dtype = torch.bfloat16) -> float:
    """The paged prefill kernel against the gather attention on the same cache: a batch of a
    2,000-token prompt, a continuation of 37 tokens after 3,000, and 15 sequences that share the
    prompt's first blocks and compute their last 8 tokens (N samples of one prompt)."""
    from solver.engines.native.attention import PrefillMeta, prefill_attention
    from solver.engines.native.paged_prefill import paged_prefill_attention

    torch.manual_seed(2)
    heads, kv_heads, dim, blocks, bs = 40, 8, 128, 600, 16
    k, v = (torch.randn(blocks, bs, kv_heads, dim, device="cuda").to(cache_dtype) for _ in range(2))
    pages = (torch.randperm(blocks - 1, device="cuda") + 1).tolist()
    prompt, other = pages[:125], pages[125:315]
    seqs = [(prompt, 2000, 2000), (other, 37, 3037)] + [(prompt[:62] + [pages[315 + i]], 8, 1000) for i in range(15)]
    starts = [sum(n for _, n, _ in seqs[:i]) for i in range(len(seqs))]
    q = torch.randn(sum(n for _, n, _ in seqs), heads, dim, device="cuda", dtype=torch.bfloat16)
    meta = PrefillMeta(torch.zeros(q.shape[0], dtype=torch.long, device="cuda"), [torch.tensor(t, device="cuda") for t, _, _ in seqs],
                       starts, [n for _, n, _ in seqs], [c for _, _, c in seqs])  # fmt: skip
    ref = prefill_attention(q.float(), k, v, meta, dim**-0.5)
    out = paged_prefill_attention(q, k, v, meta, dim**-0.5).float()
    err = ((out - ref).norm() / ref.norm()).item()
    log(f"paged prefill kernel on a {cache_dtype} cache vs gather reference (17 sequences): relative error {err:.2e}")
    assert err < 1e-2 and not out.isnan().any(), f"paged prefill kernel, {cache_dtype} cache: relative error {err:.2e}"
    return err


def check_engines(with_fp8_kv: bool = True) -> dict[str, float]:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/solver/engines/native"))
    from test_fp8_kv import kv_rounded_to_fp8
    from test_overlap import run_with_tool_calls

    results = {}
    prompts = [list(range(3, 40)), list(range(50, 60)) * 7, list(range(3, 40))]
    for name, cfg_cls, model_cls in (("qwen2", Qwen2Config, Qwen2ForCausalLM), ("llama", LlamaConfig, LlamaForCausalLM)):
        torch.manual_seed(0)
        cfg = cfg_cls(vocab_size=300, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
                      num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.3, bos_token_id=None,
                      eos_token_id=None)  # fmt: skip
        model = model_cls(cfg).cuda().eval()
        model.generation_config.eos_token_id = None
        refs, refs_kv8 = [], []
        for p in prompts:
            ids = torch.tensor([p], device="cuda")
            refs.append(model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False)[0, len(p) :].tolist())
            with kv_rounded_to_fp8(model):  # transformers with its K/V rounded to FP8 as they enter its cache
                refs_kv8.append(model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False)[0, len(p) :].tolist())
        small = dict(cuda_graph_batch_sizes=(1, 2, 4), max_model_len=512)
        plain = EngineConfig(**small, row_kernels=False, prefill_attention_backend="torch", programmatic_launch=False)
        for variant, config, expected in (
            ("torch", EngineConfig(attention_backend="torch", cuda_graph_batch_sizes=(), max_model_len=512), refs),
            ("triton+graphs, compiled ops, gather prefill, plain launch", dataclasses.replace(plain, attention_backend="triton"), refs),
            ("triton+graphs, defaults (row kernels, prefill kernel, programmatic launch)", EngineConfig(**small), refs),
            ("triton+graphs, defaults, programmatic launch off", EngineConfig(**small, programmatic_launch=False), refs),
            ("triton+graphs+fp8 KV, plain", dataclasses.replace(plain, kv_cache_dtype="fp8"), refs_kv8),
            ("triton+graphs+fp8 KV, defaults", EngineConfig(**small, kv_cache_dtype="fp8"), refs_kv8),
        )[: 6 if with_fp8_kv else 4]:
            engine = NativeEngine(model, config=config)
            if config.row_kernels and engine.attention_backend == "triton":  # the kernels are checked whatever the timing chose
                from solver.engines.native.row_kernels import rope_store

                kernel = partial(rope_store, pdl=config.programmatic_launch)
                engine.runner.model.ops = dataclasses.replace(engine.runner.model.ops, rope_store=kernel)
                engine.runner.enable_graphs(config.cuda_graph_batch_sizes)
            got = generate(engine, prompts, 40)
            same = sum(a == b for g, r in zip(got, expected) for a, b in zip(g, r)) / sum(len(r) for r in expected)
            results[f"{name}/{variant}"] = same
            log(f"{name} {variant}: {same:.1%} of greedy tokens equal generate's (fp32; for the FP8 KV cache, generate with K/V rounded to FP8)")
            engine.close()
        # Shared-prefix attention: three samples of one 37-token prompt share its first two blocks,
        # which the shared programs read once for all three rows (no length threshold here).
        engine = NativeEngine(model, config=EngineConfig(cuda_graph_batch_sizes=(1, 2, 4), max_model_len=512, shared_prefix_min_tokens=0))
        got = generate(engine, [prompts[0]] * 3, 40)
        same = sum(a == b for g in got for a, b in zip(g, refs[0])) / (3 * len(refs[0]))
        results[f"{name}/triton+graphs+shared prefix"] = same
        log(f"{name} triton+graphs+shared prefix, 3 samples of one prompt: {same:.1%} of greedy tokens equal generate's (fp32)")
        engine.close()
        # Overlapped decode (the default) against plain decode: sampled rows with stop tokens and
        # continuations, rows left to the full sort, token for token on the same GPU kernels.
        for candidates in (1024, 2):
            sampling_module.NUCLEUS_CANDIDATES = candidates
            runs = []
            for overlap in (True, False):
                engine = NativeEngine(model, config=EngineConfig(max_model_len=512, cuda_graph_batch_sizes=(1, 2, 4, 8), overlap_decode=overlap))
                runs.append(run_with_tool_calls(engine))
                engine.close()
            if candidates == 1024:  # the gather prefill on the same tool-call workload
                engine = NativeEngine(model, config=EngineConfig(max_model_len=512, cuda_graph_batch_sizes=(1, 2, 4, 8), prefill_attention_backend="torch"))
                same = run_with_tool_calls(engine) == runs[0]
                engine.close()
                results[f"{name}/triton_prefill_equals_torch_prefill"] = float(same)
                log(f"{name} paged prefill kernel vs gather prefill, sampled with stops and continuations: {'identical' if same else 'DIFFERENT (reported: fp32 rounding order differs)'}")
            sampling_module.NUCLEUS_CANDIDATES = 1024
            same = runs[0] == runs[1]
            results[f"{name}/overlap_equals_plain/candidates={candidates}"] = float(same)
            log(f"{name} overlapped decode vs plain, sampled with stops and continuations, {candidates} candidates: {'identical' if same else 'DIFFERENT'}")
    return results


def check_fp8() -> dict[str, float]:
    """FP8 linears on the GPU with the fused ops: logits of a tiny bf16 Qwen2 whose linears are all
    FP8 against the same model with dequantising float32 linears (tests/.../test_fp8.py's
    reference), at row counts that are and are not multiples of 16; then the whole engine
    (graphs, Triton, sampling in the graph) with FP8 chosen where faster."""
    import copy

    from transformers import Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/solver/engines/native"))
    from test_fp8 import FakeFP8Linear, prefill_logits

    from solver.engines.native.fp8 import KINDS, MODES, FP8Linear, all_modes, convert, modules_of
    from solver.engines.native.ops import dequantize, fused, quantize_rows

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=320, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
                      num_key_value_heads=2, max_position_embeddings=512, bos_token_id=None, eos_token_id=None)  # fmt: skip
    hf = Qwen2ForCausalLM(cfg).cuda().to(torch.bfloat16).eval()
    results = {}
    plain = from_hf(hf, 512).layers[0]
    for mode in all_modes():  # each linear alone, in every form the engine may choose
        for kind in ("qkv", "down"):
            layer = getattr(plain, kind)
            linear = FP8Linear(layer.weight.data, layer.bias, mode)
            reference = FakeFP8Linear(linear)
            for rows in (1, 5, 16, 37):
                x = torch.randn(rows, layer.weight.shape[1], device="cuda", dtype=torch.bfloat16)
                got = dequantize(linear(quantize_rows(x)), torch.bfloat16).float()
                expected = reference(x).raw.float()
                err = ((got - expected).norm() / expected.norm()).item()
                results[f"fp8 linear {kind} {mode} rows={rows}"] = err
                assert err < 1e-2, f"FP8 {mode} {kind} at {rows} rows: relative error {err:.2e} against its reference"
        log(f"fp8 {mode}: each linear equals its dequantised reference at 1, 5, 16, 37 rows")
    for mode in MODES:  # the whole model in one form of each kind
        quantized = from_hf(hf, 512)
        convert(quantized, {kind: mode for kind in KINDS})
        reference = copy.deepcopy(quantized)
        for kind in KINDS:
            for owner, name in modules_of(reference, kind):
                setattr(owner, name, FakeFP8Linear(getattr(owner, name)))
        quantized.ops = fused()
        for rows in (1, 37):  # whole model: fused ops round differently and FP8 turns that into steps
            logits = [prefill_logits(model, list(range(3, 3 + rows))).float() for model in (quantized, reference)]
            err = ((logits[0] - logits[1]).norm() / logits[1].norm()).item()
            results[f"fp8 model {mode} rows={rows}"] = err
            log(f"fp8 {mode}, {rows} rows, whole model with fused ops vs eager dequantised reference: last row's logits, relative error {err:.2e} (reported, not checked)")
    engine = NativeEngine(hf, config=EngineConfig(fp8=True, max_model_len=512, cuda_graph_batch_sizes=(1, 2, 4, 8)))
    log("fp8 choice on the tiny model:", json.dumps({k: v["chosen"] for k, v in engine.fp8_choice.items()}))
    prompts = [list(range(3, 40)), list(range(50, 60)) * 7, list(range(3, 40))]
    got = generate(engine, prompts, 40)
    assert all(len(g) == 40 for g in got) and got[0] == got[2], "FP8 engine: wrong lengths or batch-dependent greedy output"
    engine.close()
    # The FP8 row kernels, each forced, against the compiled ops' outputs (dequantised rows).
    from solver.engines.native.attention import Splits
    from solver.engines.native.fp8_gemm import SkinnyConfig
    from solver.engines.native.row_kernels import _grouped_product, _silu_in_product, add_norm_quantize, merge_quantize, silu_mul_quantize

    layer, bf16 = quantized.layers[0], torch.bfloat16  # the last form of MODES: our product kernel
    gate_up_in = quantize_rows(torch.randn(16, 256, device="cuda", dtype=bf16))
    gate_up = layer.gate_up(gate_up_in)
    o = layer.o_proj(quantize_rows(torch.randn(16, 256, device="cuda", dtype=bf16)))
    residual = torch.randn(16, 256, device="cuda", dtype=bf16)
    parts = Splits(torch.randn(16, 8, 3, 32, device="cuda"), torch.randn(16, 8, 3, device="cuda"))
    cases = {
        "silu row": (silu_mul_quantize(gate_up, "row"), quantized.ops.silu_mul(gate_up, bf16, True)),
        "silu chunks": (silu_mul_quantize(gate_up, "chunks"), quantized.ops.silu_mul(gate_up, bf16, True)),
        "silu in the gate_up product": (_silu_in_product(layer.gate_up, gate_up_in, layer.gate_up.skinny, pdl=False), quantized.ops.silu_mul(gate_up, bf16, True)),
        "add_norm": (add_norm_quantize(o, residual, layer.post_attention_norm, 1e-6)[0],
                     quantized.ops.add_norm(o, residual, layer.post_attention_norm, 1e-6, True)[0]),
        "merge": (merge_quantize(parts, bf16), quantized.ops.attention_output(parts, bf16, True)),
    }  # fmt: skip
    for name, ((rows, scale), (rows_ref, scale_ref)) in cases.items():
        expected = rows_ref.float() * scale_ref
        err = ((rows.float() * scale - expected).norm() / expected.norm()).item()
        results[f"fp8 row kernel {name}"] = err
        log(f"fp8 row kernel {name} vs the compiled op: relative error {err:.2e} (FP8 steps are 6%)")
        assert err < 5e-2, f"row kernel {name}: relative error {err:.2e} against the compiled op"
    # o_proj in our product kernel on the attention quantised per group of heads, against the
    # compiled merge + per-row quantisation and the same product
    config, head_dim = SkinnyConfig(64, 64, 4, 2), quantized.shape.head_dim  # 4 groups of 2 heads
    grouped = dequantize(_grouped_product(layer.o_proj, parts, config, config.block_k // head_dim, bf16, pdl=False), torch.float32).float()
    expected = dequantize(layer.o_proj(quantized.ops.attention_output(parts, bf16, True)), torch.float32).float()
    err = ((grouped - expected).norm() / expected.norm()).item()
    results["fp8 o_proj on per-group scales"] = err
    log(f"fp8 o_proj on the attention quantised per group of heads vs per row: relative error {err:.2e}")
    assert err < 5e-2, f"o_proj on per-group scales: relative error {err:.2e} against per-row scales"
    engine = NativeEngine(hf, config=EngineConfig(fp8=True, row_kernels=True, max_model_len=512, cuda_graph_batch_sizes=(1, 2, 4, 8)))
    log("row kernel choice on the tiny FP8 model:", json.dumps({k: v["chosen"] for k, v in engine.row_kernel_choice.items()}))
    got_rk = generate(engine, prompts, 40)
    assert all(len(g) == 40 for g in got_rk) and got_rk[0] == got_rk[2], "FP8 engine with row kernels: wrong lengths or batch-dependent output"
    results["fp8 row kernels greedy tokens equal"] = sum(a == b for g, r in zip(got_rk, got) for a, b in zip(g, r)) / (3 * 40)
    log(f"fp8 engine with row kernels: {results['fp8 row kernels greedy tokens equal']:.1%} of greedy tokens equal the compiled ops' (reported)")
    engine.close()
    return results


def generate(engine: NativeEngine, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    for i, p in enumerate(prompts):
        engine.add(Request(str(i), tuple(p), SamplingParams(max_tokens=max_tokens, temperature=0.0)))
    out = {str(i): [] for i in range(len(prompts))}
    while engine.has_work():
        for d in engine.step():
            out[d.request_id] += d.token_ids
    return [out[str(i)] for i in range(len(prompts))]


# -- measurements ------------------------------------------------------------------------------


def copy_bandwidth() -> float:
    """Bytes read plus written per second by a 4 GiB device-to-device copy (median of 10)."""
    a = torch.empty(2 << 30, dtype=torch.uint8, device="cuda").random_()
    b = torch.empty_like(a)
    times = []
    for _ in range(12):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        b.copy_(a)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del a, b
    return 2 * (2 << 30) / sorted(times[2:])[len(times[2:]) // 2]


def weight_bytes(model: CausalLM) -> int:
    """Bytes a decode step reads: every parameter except the embedding table."""
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n != "embed")


def run_workload(engine: NativeEngine, weights_b: int, bw: float, precision: str, num_samples: int, prompt_len: int,
                 lengths: list[int], stop_after: int | None = None, label: str | None = None, own_prompts: bool = False) -> Row:  # fmt: skip
    """`own_prompts`: each sample its own prompt (nothing shared), else one prompt for all."""
    gen = torch.Generator().manual_seed(prompt_len)
    prompts = [tuple(torch.randint(10, engine.vocab_size - 10, (prompt_len,), generator=gen).tolist()) for _ in range(num_samples if own_prompts else 1)]
    kv_per_token = engine.runner.model.shape.kv_bytes_per_token(engine.runner.kv_cache[0][0].element_size())
    fallback_before = engine.stats.extra.get("sampling_fallback_rows", 0)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(num_samples):
        engine.add(Request(f"s{i}", prompts[i % len(prompts)], SamplingParams(max_tokens=lengths[i], temperature=0.6, top_p=0.95, seed=i)))
    tokens = finished = 0
    decode_s = decode_bytes = unique_bytes = other_s = 0.0
    decode_steps = other_steps = 0
    while engine.has_work():
        steps_before = engine.stats.num_decode_steps
        running = engine.scheduler.running if not engine.scheduler.waiting else []
        context = sum(s.num_tokens for s in running)
        # The samples share the prompt's blocks: an ideal kernel would read them once per step.
        shared = 0 if own_prompts else prompt_len
        unique = shared + sum(s.num_tokens - shared for s in running) if running else 0
        t0 = time.perf_counter()
        deltas = engine.step()
        dt = time.perf_counter() - t0
        if engine.stats.num_decode_steps > steps_before:
            decode_steps += 1
            decode_s += dt
            decode_bytes += weights_b + context * kv_per_token
            unique_bytes += weights_b + unique * kv_per_token
        else:
            other_steps += 1
            other_s += dt
        tokens += sum(len(d.token_ids) for d in deltas)
        finished += sum(d.is_finished for d in deltas)
        if stop_after is not None and finished >= stop_after:
            for i in range(num_samples):
                engine.abort(f"s{i}")
            break
    total = time.perf_counter() - start
    assert engine.num_used_blocks() == 0, "blocks left after the workload"
    step_ms = 1e3 * decode_s / max(decode_steps, 1)
    floor_ms = 1e3 * decode_bytes / max(decode_steps, 1) / bw
    config = engine.config  # the name says where it differs from the defaults
    name = "native" + ("" if config.shared_prefix_attention else "-shared-prefix") + ("" if config.row_kernels else "-row-kernels")
    if config.shared_prefix_attention and config.shared_prefix_min_tokens != EngineConfig.shared_prefix_min_tokens:
        name += f"+shared-prefix>={config.shared_prefix_min_tokens}"
    changed = {k: v for k, v in asdict(config.plain_decode_kernel()).items() if v != getattr(DecodeKernel(), k)}
    name += f" {json.dumps(changed)}" if changed else ""
    name += ("" if config.prefill_attention_backend == "triton" else "+gather-prefill") + ("" if config.programmatic_launch else "-pdl")
    return Row(name, precision, num_samples, label or f"{prompt_len}+{max(lengths)}", total, tokens / total,
               tokens / total / num_samples, decode_bytes / max(decode_steps, 1) / 1e9, floor_ms, step_ms,
               100 * floor_ms / step_ms, engine.stats.extra.get("sampling_fallback_rows", 0) - fallback_before,
               unique_bytes / max(decode_steps, 1) / 1e9, 100 * 1e3 * unique_bytes / max(decode_steps, 1) / bw / step_ms,
               other_steps, other_s)  # fmt: skip


def run_transformers(model, weights_b: int, bw: float, num_samples: int, prompt_len: int, new_tokens: int) -> Row:
    from transformers import GenerationConfig

    gen = torch.Generator().manual_seed(prompt_len)
    prompt = torch.randint(10, 150000, (prompt_len,), generator=gen).tolist()
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=True, temperature=0.6, top_p=0.95, eos_token_id=None, pad_token_id=0)
    model.generate_batch(inputs=[prompt] * 2, generation_config=GenerationConfig(max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=0))
    torch.cuda.synchronize()
    start = time.perf_counter()
    outputs = model.generate_batch(inputs=[prompt] * num_samples, generation_config=config)
    total = time.perf_counter() - start
    tokens = sum(len(o.generated_tokens) for o in outputs.values())
    per_sample = tokens / total / num_samples
    kv = model.config.num_hidden_layers * 2 * 8 * 128 * 2 * num_samples * (prompt_len + new_tokens / 2)
    floor_ms = 1e3 * (weights_b + kv) / bw
    step_ms = 1e3 / per_sample
    return Row("transformers-cb", "bf16", num_samples, f"{prompt_len}+{new_tokens}", total, tokens / total, per_sample,
               (weights_b + kv) / 1e9, floor_ms, step_ms, 100 * floor_ms / step_ms)  # fmt: skip


KERNEL_KINDS = (  # (kind, name fragments), first match wins
    ("gemm", ("gemm", "nvjet", "cutlass", "xmma", "gemv", "splitk")),
    ("attention", ("paged", "attn", "attention")),
    ("sampling", ("topk", "sort", "softmax", "cumsum", "argmax", "searchsorted", "radix", "scan")),
)


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, parts in KERNEL_KINDS if any(p in lowered for p in parts)), "other")


def profile_step(engine: NativeEngine, precision: str, num_samples: int, prompt_len: int) -> dict:
    """Where one decode step's time goes at `num_samples` rows, mid-generation: the whole step
    (wall), the CUDA-graph replay alone (CUDA events), the heaviest kernels of one replay and
    their time by kind, what each kernel adds to the replay (its end minus the previous
    kernel's end: with programmatic launch a kernel's own time includes its wait), and a
    timeline of 10 engine steps: how much of the wall the GPU is busy, and the longest GPU-idle
    gaps."""
    from torch.profiler import ProfilerActivity, profile

    gen = torch.Generator().manual_seed(prompt_len)
    prompt = tuple(torch.randint(10, engine.vocab_size - 10, (prompt_len,), generator=gen).tolist())
    for i in range(num_samples):
        engine.add(Request(f"p{i}", prompt, SamplingParams(max_tokens=10_000, temperature=0.6, top_p=0.95, seed=i)))
    while engine.scheduler.waiting:
        engine.step()
    for _ in range(20):
        engine.step()
    fallback_before = engine.stats.extra.get("sampling_fallback_rows", 0)
    walls = []
    for _ in range(30):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        engine.step()
        torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
    fallback_rows = engine.stats.extra.get("sampling_fallback_rows", 0) - fallback_before
    seqs = list(engine.scheduler.running)
    graphs = engine.runner.graphs
    size = next(b for b in graphs.batch_sizes if b >= len(seqs))

    def cuda_ms(fn, repeats=20) -> float:
        fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / repeats

    replay_ms = cuda_ms(graphs.graphs[size].replay)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        graphs.graphs[size].replay()
        torch.cuda.synchronize()
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type.name == "CUDA":
            kernels.setdefault(event.name[:90], []).append(event.device_time_total / 1e3)
    top = sorted(((sum(v), len(v), k) for k, v in kernels.items()), reverse=True)[:14]
    # The replay's kernels in launch order, from the second layer's input norm on: what one
    # layer costs, kernel by kernel (a layer is the stretch between two input norm kernels).
    ordered = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    norms = [i for i, e in enumerate(ordered) if "rsqrt" in e.name or "_add_norm" in e.name]
    one_layer = ordered[norms[2] : norms[4]] if len(norms) > 4 else ordered[:40]
    # What each kernel adds to the replay: its end minus the previous kernel's end (with
    # programmatic launch a kernel starts, and waits, before the one ahead of it has ended).
    added: dict[str, float] = {}
    ends = [e.time_range.end for e in ordered]
    for i, e in enumerate(ordered):
        added[e.name[:70]] = added.get(e.name[:70], 0.0) + (ends[i] - ends[i - 1] if i else e.device_time_total)
    position = {id(e): i for i, e in enumerate(ordered)}
    by_kind: dict[str, float] = {}
    for name, times in kernels.items():
        by_kind[kernel_kind(name)] = by_kind.get(kernel_kind(name), 0.0) + sum(times)
    # Timeline of whole engine steps: GPU busy time (union of kernel intervals) against the wall.
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(10):
            engine.step()
        torch.cuda.synchronize()
        timeline_wall = time.perf_counter() - t0
    intervals = sorted(
        (e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type.name == "CUDA" and e.time_range.end > e.time_range.start
    )
    busy_us, gaps, cursor = 0.0, [], None
    for start, end in intervals:
        if cursor is None or start > cursor:
            if cursor is not None:
                gaps.append(start - cursor)
            busy_us += end - start
            cursor = end
        elif end > cursor:
            busy_us += end - cursor
            cursor = end
    span_us = intervals[-1][1] - intervals[0][0] if intervals else 0.0
    cpu_top = sorted((e for e in prof.key_averages() if e.self_cpu_time_total > 0), key=lambda e: -e.self_cpu_time_total)[:12]
    for i in range(num_samples):
        engine.abort(f"p{i}")
    result = {
        "precision": precision, "samples": num_samples, "step_wall_ms": round(1e3 * sorted(walls)[len(walls) // 2], 3),
        "replay_ms": round(replay_ms, 3), "fallback_rows_in_30_steps": fallback_rows,
        "kernels_in_replay": sum(len(v) for v in kernels.values()), "kernel_ms_sum": round(sum(sum(v) for v in kernels.values()), 3),
        "replay_ms_by_kind": {k: round(v, 3) for k, v in sorted(by_kind.items())},
        "timeline_10_steps": {"wall_ms": round(1e3 * timeline_wall, 2), "gpu_span_ms": round(span_us / 1e3, 2),
                              "gpu_busy_ms": round(busy_us / 1e3, 2), "idle_gaps_over_50us": len([g for g in gaps if g > 50]),
                              "largest_gaps_ms": [round(g / 1e3, 3) for g in sorted(gaps, reverse=True)[:12]]},
        "top_kernels": [(round(ms, 3), n, name) for ms, n, name in top],
        "one_layer_us": [(round(e.device_time_total, 1), e.name[:70]) for e in one_layer],
        "one_layer_added_us": [(round(ends[position[id(e)]] - ends[position[id(e)] - 1], 1), e.name[:70]) for e in one_layer],
        "replay_added_ms_by_kernel": sorted(((round(v / 1e3, 3), k) for k, v in added.items()), reverse=True)[:16],
        "cpu_self_ms_in_10_steps": [(round(e.self_cpu_time_total / 1e3, 3), e.count, e.key[:60]) for e in cpu_top],
    }  # fmt: skip
    log(json.dumps(result, indent=1))
    return result


def print_table(rows: list[Row]) -> None:
    log("\n| engine | precision | samples | context (prompt+new) | total s | batch tok/s | tok/s per sample | GB/step | floor ms | step ms | % of memory limit | % with the prompt's KV read once | full-sort rows | steps without decode: n, s |")
    log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        log(f"| {r.engine} | {r.precision} | {r.samples} | {r.context} | {r.total_s:.1f} | {r.batch_tok_s:.0f} | {r.per_sample_tok_s:.1f} | "
            f"{r.gb_per_step:.1f} | {r.floor_ms:.2f} | {r.step_ms:.2f} | {r.pct_of_limit:.0f}% | {r.pct_of_limit_shared_once:.0f}% | {r.fallback_rows} | {r.other_steps}, {r.other_s:.2f} |")  # fmt: skip


# -- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few tokens everywhere: a smoke run")
    parser.add_argument("--samples", type=int, nargs="+", default=[16, 64], help="batch sizes of the main workload")
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--new-tokens", type=int, default=1024)
    parser.add_argument("--baseline-new-tokens", type=int, default=128, help="transformers is slow: fewer tokens for it")
    parser.add_argument("--long-prompt-tokens", type=int, default=7000, help="prompt of the long-context point (0: skip)")
    parser.add_argument("--tutorial", action="store_true", help="also 12 samples of ~5,000 tokens, stop after 10")
    parser.add_argument("--own-context", type=int, nargs="+", default=[],
                        help="also 16 samples each with its own prompt of this many tokens (late in long generations), 64 decode steps each")
    parser.add_argument("--no-bf16", action="store_true", help="skip the BF16 rows (the model is still built in bf16)")
    parser.add_argument("--no-fp8", action="store_true")
    parser.add_argument("--no-fp8-kv", action="store_true", help="skip the FP8 weights + FP8 KV cache rows")
    parser.add_argument("--no-baseline", action="store_true", help="skip transformers' continuous batching")
    parser.add_argument("--no-shared-prefix-attention", action="store_true", help="native rows each read the shared prompt's KV")
    parser.add_argument("--shared-prefix-min-tokens", type=int, default=EngineConfig.shared_prefix_min_tokens,
                        help="shortest shared prompt read once for all rows")
    parser.add_argument("--gather-prefill", action="store_true", help="native engines gather each sequence for prefill (not the kernel)")
    parser.add_argument("--no-row-kernels", action="store_true", help="native engines use only the compiled ops")
    parser.add_argument("--no-programmatic-launch", action="store_true", help="native engines launch their kernels plainly")
    parser.add_argument("--decode-kernel", type=json.loads, nargs="+", default=[None],
                        help="paged decode kernel settings other than the defaults, as JSON (several: one engine each): "
                             "{\"num_stages\": 3, ...}; null: the engine's choice by cache dtype")
    parser.add_argument("--fp8-kv-only", action="store_true", help="of the FP8 rows, only FP8 weights + FP8 KV cache")
    parser.add_argument("--no-checks", action="store_true", help="skip the GPU correctness checks (they ran in an earlier call)")
    parser.add_argument("--profile", action="store_true", help="only profile one decode step per precision at 16 samples")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.quick:
        args.new_tokens, args.baseline_new_tokens, args.long_prompt_tokens = 64, 16, 2000
    from transformers import AutoModelForCausalLM, Qwen2Config

    log(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  date {time.strftime('%Y-%m-%d')}")
    checks = {} if args.no_checks else {"kernel_rel_err": check_kernel(), "prefill_kernel_rel_err": check_prefill_kernel()}
    if not args.no_checks:
        checks["kernel_shared_prefix_rel_err"] = check_kernel(shared_blocks=8)
    if not args.no_checks and not args.no_fp8_kv:
        try:
            checks["kernel_fp8_cache_rel_err"] = check_kernel(torch.float8_e4m3fn)
            checks["prefill_kernel_fp8_cache_rel_err"] = check_prefill_kernel(torch.float8_e4m3fn)
        except Exception as exc:  # measure the rest anyway; an FP8 cache that fails is not measured
            checks["fp8_kv_check_failed"] = f"{type(exc).__name__}: {exc}"
            log(f"FP8 KV CHECK FAILED, fp8+kv8 not measured: {exc}")
            args.no_fp8_kv = True
    if not args.no_checks:
        checks.update(check_engines(with_fp8_kv=not args.no_fp8_kv))
    if not args.no_fp8 and not args.no_checks:
        try:
            checks.update(check_fp8())
        except AssertionError as exc:  # measure bf16 anyway; fp8 numbers would mean nothing
            checks["fp8_check_failed"] = str(exc)
            log(f"FP8 CHECK FAILED, fp8 not measured: {exc}")
            args.no_fp8 = True
    bw = copy_bandwidth()
    log(f"copy bandwidth: {bw / 1e12:.2f} TB/s")
    max_len = max(args.long_prompt_tokens + args.new_tokens, 5600 if args.tutorial else 0, args.prompt_tokens + args.new_tokens,
                  *(n + OWN_STEPS for n in args.own_context)) + 64  # fmt: skip
    cfg = Qwen2Config(**QWEN25_14B, max_position_embeddings=max_len)
    t0 = time.perf_counter()
    with torch.device("cuda"):
        hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    hf.eval()
    randomize(hf)
    log(f"random 14B-shaped model on the GPU in {time.perf_counter() - t0:.1f} s")
    rows: list[Row] = []

    def save() -> None:  # after every row, so a run cut short keeps what it measured
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "results.json").write_text(json.dumps({"checks": checks, "bandwidth": bw, "rows": [asdict(r) for r in rows]}, indent=1))

    def record(row: Row) -> None:
        rows.append(row)
        log(row)
        save()

    weights_b = sum(p.numel() * 2 for n, p in hf.named_parameters() if "embed_tokens" not in n)
    for n in [] if args.profile or args.no_baseline else args.samples:
        try:
            record(run_transformers(hf, weights_b, bw, n, args.prompt_tokens, args.baseline_new_tokens))
        except Exception as exc:  # report and go on: the baseline must not stop our measurements
            log(f"transformers continuous batching failed at {n} samples: {type(exc).__name__}: {exc}")
    native = from_hf(hf, max_len, consume=True)
    del hf
    torch.cuda.empty_cache()
    precisions = ([] if args.no_bf16 else ["bf16"]) + ([] if args.no_fp8 else ["fp8"] + ([] if args.no_fp8_kv else ["fp8+kv8"]))
    for precision in precisions:
        if precision == "fp8":  # the model's linears become FP8 here, for both FP8 rows
            from solver.engines.native.fp8 import quantize_where_faster

            choice = quantize_where_faster(native, batch_size=16)
            log("fp8 choice at 16 rows (ms per call in a graph):", json.dumps(choice))
            torch.cuda.empty_cache()
            if args.fp8_kv_only and "fp8+kv8" in precisions:
                continue
        for decode_kernel in args.decode_kernel:  # one engine each
            t0 = time.perf_counter()
            kv = "fp8" if precision == "fp8+kv8" else "auto"  # fp8+kv8: FP8 weights and an FP8 KV cache
            config = EngineConfig(max_num_seqs=max(args.samples), max_model_len=max_len, kv_cache_dtype=kv,
                                  shared_prefix_attention=not args.no_shared_prefix_attention,
                                  shared_prefix_min_tokens=args.shared_prefix_min_tokens, row_kernels=not args.no_row_kernels,
                                  prefill_attention_backend="torch" if args.gather_prefill else "triton",
                                  programmatic_launch=not args.no_programmatic_launch,
                                  decode_kernel=None if decode_kernel is None else DecodeKernel(**decode_kernel))  # fmt: skip
            engine = NativeEngine(native, config=config)
            log(f"{precision} engine: {engine.block_manager.num_blocks} blocks, attention {engine.attention_backend}, built in {time.perf_counter() - t0:.1f} s")
            if engine.row_kernel_choice:
                log(f"{precision} row kernels at 16 rows (ms per call in a graph):", json.dumps(engine.row_kernel_choice))
            wb = weight_bytes(native)
            run_workload(engine, wb, bw, precision, 2, 100, [8, 8])  # warm-up
            if args.profile:
                checks[f"profile_{precision}_{json.dumps(decode_kernel)}"] = [profile_step(engine, precision, n, args.prompt_tokens) for n in args.samples]
            else:
                for n in args.samples:
                    record(run_workload(engine, wb, bw, precision, n, args.prompt_tokens, [args.new_tokens] * n))
                if args.long_prompt_tokens and (precision == "bf16" or args.quick):
                    record(run_workload(engine, wb, bw, precision, 16, args.long_prompt_tokens, [args.new_tokens] * 16))
                if args.tutorial:
                    lengths = [4500 + 90 * i for i in range(12)]
                    record(run_workload(engine, wb, bw, precision, 12, 200, lengths, stop_after=10, label="200+~5000, stop after 10"))
                for n in args.own_context:
                    record(run_workload(engine, wb, bw, precision, 16, n, [OWN_STEPS] * 16, label=f"16 own prompts of {n}+{OWN_STEPS}", own_prompts=True))
            engine.close()
            del engine
            torch.cuda.empty_cache()
    save()
    print_table(rows)


if __name__ == "__main__":
    main()
