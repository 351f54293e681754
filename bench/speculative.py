"""ReDrafter speculation in the native engine: accepted tokens per step and speedup (one GPU).

    PYTHONUNBUFFERED=1 python bench/speculative.py --base OUT/base --drafter OUT/drafter --out $OUT [--verify-cost-14b]
    python bench/speculative.py --smoke          # CPU: tiny random model and drafter, a few tokens

1. SmolLM2-135M-Instruct (`--base`, the HF copy `bench/drafter_smollm2.py` writes) with the drafter
   trained on its own generations (`--drafter`): the same synthetic problems (new seed), N
   samples per problem at the training temperature (0.7, top-p 0.95) and greedily, each run by
   one engine without and one with the drafter over the same model weights, in the same process.
   Reports time, tokens/s per sample, tokens per step and acceptance; greedy outputs of the two
   engines are compared token for token.
2. `--verify-cost-14b`: a Qwen2.5-14B-shaped model with random weights in FP8 (as
   `bench/engine.py`) and a random drafter of the same shape as a real one: the time of one
   engine step at 16 samples without speculation (decode) and with L = 3 (draft + verify of 4
   tokens per sample + acceptance), and the speedup those imply at given tokens per step: a
   projection, not a measurement of a trained drafter.
3. `--gpu-check`: tiny float32 models with drafts (greedy against transformers' `generate`, and a
   sampled run through the graph-captured sampled draft loop), and the CUDA-graph draft loop of
   a random drafter against the eager loop at several batch sizes, greedy and sampled: same
   drafts, same distributions up to 1e-5.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from build.drafter.model import Drafter, DrafterConfig  # noqa: E402
from solver.engines.base import Request, SamplingParams  # noqa: E402
from solver.engines.native import EngineConfig, NativeEngine  # noqa: E402
from solver.engines.native.model import from_hf  # noqa: E402

GRAPH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def log(*parts) -> None:
    print(*parts, flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(engine: NativeEngine, prompts: list[tuple[int, ...]], samples_per_prompt: int, params: SamplingParams) -> dict:
    """All samples of all prompts at once; time, tokens and the engine's counters."""
    engine.stats.extra.clear()
    steps_before = engine.stats.num_decode_steps
    sync()
    start = time.perf_counter()
    for p, prompt in enumerate(prompts):
        for i in range(samples_per_prompt):
            seed = 1000 * p + i
            engine.add(Request(f"{p}-{i}", prompt, SamplingParams(**{**params.__dict__, "seed": seed})))
    out: dict[str, list[int]] = {}
    while engine.has_work():
        for d in engine.step():
            out.setdefault(d.request_id, []).extend(d.token_ids)
    sync()
    elapsed = time.perf_counter() - start
    for request_id in out:
        engine.abort(request_id)  # requests that ended on a stop token stay paused until then
    tokens = sum(len(t) for t in out.values())
    num_samples = len(prompts) * samples_per_prompt
    return {
        "total_s": round(elapsed, 3),
        "tokens": tokens,
        "tok_s_per_sample": round(tokens / elapsed / num_samples, 1),
        "decode_steps": engine.stats.num_decode_steps - steps_before,
        "extra": {k: round(v, 4) for k, v in engine.stats.extra.items()},
        "outputs": out,
    }


def compare(plain: NativeEngine, spec: NativeEngine, prompts, samples_per_prompt: int, params: SamplingParams, label: str) -> dict:
    run(plain, prompts[:1], 2, SamplingParams(max_tokens=8, temperature=params.temperature))  # warm-up
    run(spec, prompts[:1], 2, SamplingParams(max_tokens=8, temperature=params.temperature))
    a = run(plain, prompts, samples_per_prompt, params)
    b = run(spec, prompts, samples_per_prompt, params)
    row = {
        "workload": label,
        "samples": len(prompts) * samples_per_prompt,
        "plain_s": a["total_s"], "spec_s": b["total_s"],
        "plain_tokens": a["tokens"], "spec_tokens": b["tokens"],
        "plain_tok_s_per_sample": a["tok_s_per_sample"], "spec_tok_s_per_sample": b["tok_s_per_sample"],
        "speedup": round(b["tok_s_per_sample"] / a["tok_s_per_sample"], 2),
        "plain_decode_steps": a["decode_steps"], "spec_verify_steps": b["decode_steps"],
        "spec_tokens_per_step": b["extra"].get("spec_tokens_per_step"),
        "spec_acceptance_rate": b["extra"].get("spec_acceptance_rate"),
    }  # fmt: skip
    if params.temperature == 0:
        same = [a["outputs"][k] == b["outputs"][k] for k in a["outputs"]]
        prefix = [_common_prefix(a["outputs"][k], b["outputs"][k]) / max(1, len(a["outputs"][k])) for k in a["outputs"]]
        row["greedy_identical_samples"] = f"{sum(same)}/{len(same)}"
        row["greedy_mean_common_prefix"] = round(sum(prefix) / len(prefix), 3)
    log(json.dumps(row))
    return row


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# -- 1. SmolLM2 with its trained drafter -------------------------------------------------------


def smollm2(args) -> list[dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from build.drafter.export import load_drafter
    from solver.prompt import prompt_text

    sys.path.insert(0, str(ROOT / "bench"))
    from drafter_smollm2 import problem

    device, dtype = torch.device("cuda"), torch.bfloat16
    tokenizer = AutoTokenizer.from_pretrained(str(args.base))
    hf = AutoModelForCausalLM.from_pretrained(str(args.base), dtype=dtype).to(device).eval()
    native = from_hf(hf, 1024, device, dtype, consume=True)
    drafter = load_drafter(args.drafter, device=device, dtype=dtype)
    log(f"drafter: {drafter.config}")
    config = EngineConfig(max_num_seqs=64, max_model_len=1024, num_kv_blocks=4096, cuda_graph_batch_sizes=GRAPH_SIZES)
    plain = NativeEngine(native, config=config)
    spec = NativeEngine(native, config=config, drafter=drafter)
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rng = random.Random(1)  # training used seed 0
    prompts = [tuple(tokenizer.encode(prompt_text(tokenizer, problem(rng)), add_special_tokens=False)) for _ in range(4)]
    rows = []
    for temperature in (0.7, 0.0):
        params = SamplingParams(max_tokens=args.max_tokens, temperature=temperature, top_p=0.95, stop_token_ids=(stop,))
        for samples in args.samples:
            per_prompt = 16 if samples >= 16 else samples
            rows.append(compare(plain, spec, prompts[: max(1, samples // 16)], per_prompt, params, f"smollm2 T={temperature}"))
    return rows


# -- 2. the cost of a verify step at 14B in FP8 ------------------------------------------------


def step_times(engine: NativeEngine, num_samples: int, prompt_len: int, num_steps: int) -> float:
    """Median seconds of an engine step once every sample decodes (forced length)."""
    gen = torch.Generator().manual_seed(0)
    prompt = tuple(torch.randint(10, engine.vocab_size - 10, (prompt_len,), generator=gen).tolist())
    for i in range(num_samples):
        engine.add(Request(f"s{i}", prompt, SamplingParams(max_tokens=10_000, temperature=0.6, top_p=0.95, seed=i)))
    while engine.scheduler.waiting:
        engine.step()
    times = []
    for _ in range(num_steps):
        sync()
        t0 = time.perf_counter()
        engine.step()
        sync()
        times.append(time.perf_counter() - t0)
    for i in range(num_samples):
        engine.abort(f"s{i}")
    return sorted(times[3:])[len(times[3:]) // 2]


def verify_cost_14b(args, smol_tokens_per_step: float | None) -> dict:
    from transformers import AutoModelForCausalLM, Qwen2Config

    from solver.engines.native.fp8 import quantize_where_faster

    sys.path.insert(0, str(ROOT / "bench"))
    from engine import QWEN25_14B, randomize

    cfg = Qwen2Config(**QWEN25_14B, max_position_embeddings=2048)
    with torch.device("cuda"):
        hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    randomize(hf)  # logits as peaked as a trained model's (see bench/engine.py)
    native = from_hf(hf, 2048, consume=True)
    del hf
    torch.cuda.empty_cache()
    quantize_where_faster(native, batch_size=16)
    with torch.device("cuda"):
        drafter = Drafter(DrafterConfig.for_base(cfg.hidden_size, cfg.vocab_size, num_draft_tokens=3)).to(torch.bfloat16).eval()
    # fp8=True on a model already in FP8: the engine keeps its linears and puts the drafter's head in FP8 where faster.
    config = EngineConfig(max_num_seqs=16, max_model_len=2048, num_kv_blocks=1600, cuda_graph_batch_sizes=(16, 64), fp8=True)
    plain = NativeEngine(native, config=config)
    decode_s = step_times(plain, 16, 1000, 23)
    plain.close()
    spec = NativeEngine(native, config=config, drafter=drafter)
    log("drafter head:", json.dumps(spec.fp8_choice.get("drafter_head")))
    spec_s = step_times(spec, 16, 1000, 23)
    ratio = spec_s / decode_s
    result = {"decode_step_ms": round(decode_s * 1e3, 2), "spec_step_ms": round(spec_s * 1e3, 2), "spec_over_decode": round(ratio, 3)}
    cases = {"aimo2_all3_65pct_low": 0.65 * 4 + 0.35 * 1, "aimo2_all3_65pct_mid": 0.65 * 4 + 0.35 * 2, "aimo2_all3_65pct_high": 0.65 * 4 + 0.35 * 3}
    if smol_tokens_per_step:
        cases["smollm2_measured"] = smol_tokens_per_step
    result["projected_speedup"] = {k: {"tokens_per_step": round(v, 2), "speedup": round(v / ratio, 2)} for k, v in cases.items()}
    log(json.dumps(result))
    return result


# -- GPU correctness -----------------------------------------------------------------------------


def gpu_check() -> dict:
    """Tiny float32 Qwen2/Llama on the GPU (Triton decode kernel + CUDA graphs for verify) with
    the tests' bigram drafter: greedy tokens with drafts against transformers' `generate`."""
    sys.path.insert(0, str(ROOT / "tests/solver/engines/native"))
    from test_native_engine import PROMPTS, reference, tiny_model
    from test_speculative import bigram_drafter

    results = {}
    for arch in ("qwen2", "llama"):
        model = tiny_model(arch)
        refs = {name: reference(model, p, 40) for name, p in PROMPTS.items()}
        drafter = bigram_drafter(model)
        model = model.cuda()
        drafter.embed, drafter.next_of = drafter.embed.cuda(), drafter.next_of.cuda()
        config = EngineConfig(max_model_len=512, cuda_graph_batch_sizes=(1, 2, 4, 8, 16))
        results[arch] = {}
        for label, d in (("plain", None), ("drafts", drafter)):  # plain: is a mismatch ours or numerics?
            engine = NativeEngine(model, config=config, drafter=d)
            for name, p in PROMPTS.items():
                engine.add(Request(name, p, SamplingParams(max_tokens=40, temperature=0.0)))
            out: dict[str, list[int]] = {}
            finish: dict[str, str] = {}
            while engine.has_work():
                for delta in engine.step():
                    out.setdefault(delta.request_id, []).extend(delta.token_ids)
                    if delta.finish_reason:
                        finish[delta.request_id] = delta.finish_reason
            same = sum(a == b for n in refs for a, b in zip(out[n], refs[n])) / sum(len(r) for r in refs.values())
            results[arch][label] = {"equal_to_generate": same, "tokens_per_step": engine.stats.extra.get("spec_tokens_per_step"),
                                    "attention": engine.attention_backend, "graphs": engine.runner.graphs is not None,
                                    "kv_blocks": engine.block_manager.num_blocks, "finish": sorted(set(finish.values())),
                                    "draft_graphs": d is not None and engine.proposer.graphs is not None}  # fmt: skip
            engine.close()  # before the next engine sizes its KV cache from free memory
            del engine
        results[arch]["sampled_drafts"] = sampled_run(model, drafter, config, PROMPTS)
        log(f"gpu check {arch}: {json.dumps(results[arch])}")
    results["propose_graphs"] = propose_graph_check()
    return results


def sampled_run(model, drafter, config: EngineConfig, prompts: dict) -> dict:
    """Sampled requests through the engine with drafts (the sampled draft graph and `accept`'s
    sampled branch on the GPU): every request runs to max_tokens, some drafts are kept."""
    engine = NativeEngine(model, config=config, drafter=drafter)
    for i in range(12):
        prompt = list(prompts.values())[i % len(prompts)]
        engine.add(Request(f"s{i}", prompt, SamplingParams(max_tokens=30, temperature=0.8, top_p=0.95, seed=i)))
    lengths: dict[str, int] = {}
    while engine.has_work():
        for delta in engine.step():
            lengths[delta.request_id] = lengths.get(delta.request_id, 0) + len(delta.token_ids)
    extra = dict(engine.stats.extra)
    engine.close()
    return {"all_ran_to_max_tokens": len(lengths) == 12 and all(n == 30 for n in lengths.values()),
            "tokens_per_step": extra.get("spec_tokens_per_step"), "acceptance": extra.get("spec_acceptance_rate")}  # fmt: skip


def propose_graph_check() -> dict:
    """A random float32 drafter (vocabulary above the 1,024 nucleus candidates) on the GPU: the
    CUDA-graph draft loop against the eager one at batch sizes that hit a graph size exactly, are
    padded, or exceed the largest (eager), greedy and sampled (mixed temperatures and top-p).
    `ok`: the same drafts and distributions within 1e-5 as the eager loop on the same padded
    batch (same GEMM shapes, so any difference is the graph's). `ok_unpadded`: the same against
    the eager loop on the real rows alone, where GEMMs of another batch size may round
    differently (a rare draft may then flip at a near tie; see the cases)."""
    from solver.engines.native.drafter_runtime import DraftProposer

    torch.manual_seed(0)
    hidden, vocab, width, sizes = 64, 4096, 3, (1, 2, 4, 8, 16, 32)
    with torch.device("cuda"):
        drafter = Drafter(DrafterConfig.for_base(hidden, vocab, num_draft_tokens=width)).eval()
        embed = torch.randn(vocab, hidden)
    with torch.no_grad():
        drafter.lm_head[-1].weight.mul_(10.0)  # from near-uniform to a spread of peaked and flat rows
    eager, graphed = DraftProposer(drafter, embed, width), DraftProposer(drafter, embed, width)
    graphed.enable_graphs(sizes)
    cases = []
    for rows in (1, 3, 8, 13, 32, 40):
        for sampled in (False, True):
            gen = torch.Generator(device="cuda").manual_seed(rows)
            context = torch.randn(rows, hidden, device="cuda", generator=gen)
            last = torch.randint(0, vocab, (rows,), device="cuda", generator=gen)
            temperature = torch.tensor([(0.0, 0.7, 1.0)[i % 3] if sampled else 0.0 for i in range(rows)], device="cuda")
            top_p = torch.tensor([(0.95, 1.0, 0.5)[i % 3] for i in range(rows)], device="cuda")
            uniforms = torch.rand(rows, width, device="cuda", generator=gen) if sampled else None
            want = eager.propose(context, last, temperature, top_p, uniforms)
            got = [None if t is None else t.clone() for t in graphed.propose(context, last, temperature, top_p, uniforms)]
            pad = next((b for b in sizes if b >= rows), rows) - rows  # as `DraftGraphs.run` pads
            padded = eager.propose(
                torch.cat([context, context.new_zeros(pad, hidden)]), torch.cat([last, last.new_zeros(pad)]),
                torch.cat([temperature, temperature.new_zeros(pad)]), torch.cat([top_p, top_p.new_ones(pad)]),
                None if uniforms is None else torch.cat([uniforms, uniforms.new_zeros(pad, width)]),
            )
            case = {"rows": rows, "sampled": sampled, "graph": rows <= sizes[-1],
                    "drafts_equal": torch.equal(got[0], want[0]), "drafts_equal_padded": torch.equal(got[0], padded[0][:rows])}  # fmt: skip
            if sampled:
                case["q_max_diff"] = (got[1] - want[1]).abs().max().item()
                case["q_max_diff_padded"] = (got[1] - padded[1][:rows]).abs().max().item()
                case["q_rows_sum_to_1"] = bool(torch.allclose(got[1].sum(dim=-1), torch.ones(rows, width, device="cuda"), atol=1e-5))
            cases.append(case)
    ok = all(c["drafts_equal_padded"] and c.get("q_max_diff_padded", 0.0) <= 1e-5 and c.get("q_rows_sum_to_1", True) for c in cases)
    ok_unpadded = all(c["drafts_equal"] and c.get("q_max_diff", 0.0) <= 1e-5 for c in cases)
    log(f"gpu check propose graphs: ok={ok} ok_unpadded={ok_unpadded} {json.dumps(cases)}")
    return {"ok": ok, "ok_unpadded": ok_unpadded, "cases": cases}


# -- smoke ---------------------------------------------------------------------------------------


def smoke() -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)).eval()  # fmt: skip
    native = from_hf(hf, 256)
    drafter = Drafter(DrafterConfig.for_base(64, 300, num_draft_tokens=3)).eval()
    plain = NativeEngine(native, config=EngineConfig(max_num_seqs=32))
    spec = NativeEngine(native, config=EngineConfig(max_num_seqs=32), drafter=drafter)
    prompts = [tuple(range(5, 40)), tuple(range(50, 70))]
    compare(plain, spec, prompts, 4, SamplingParams(max_tokens=20, temperature=0.0), "smoke greedy")
    compare(plain, spec, prompts, 4, SamplingParams(max_tokens=20, temperature=0.7), "smoke T=0.7")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--gpu-check", action="store_true", help="tiny fp32 models: greedy with drafts vs generate; graph vs eager draft loop")
    parser.add_argument("--base", type=Path)
    parser.add_argument("--drafter", type=Path)
    parser.add_argument("--samples", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--verify-cost-14b", action="store_true")
    parser.add_argument("--smol-tokens-per-step", type=float, default=None, help="with --verify-cost-14b and no --base: tokens per step measured earlier")
    parser.add_argument("--deadline-epoch", type=float, default=None, help="skip the 14B part unless 150 s remain before this time")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.smoke:
        smoke()
        return
    log(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  date {time.strftime('%Y-%m-%d')}")
    results: dict = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name()}
    if args.gpu_check:
        results["gpu_check"] = gpu_check()
        _save(args.out, results)
    if args.base:
        results["smollm2"] = smollm2(args)
        _save(args.out, results)
    if args.verify_cost_14b and args.deadline_epoch and time.time() + 150 > args.deadline_epoch:
        log("skipping the 14B verify cost: too close to the deadline")
    elif args.verify_cost_14b:
        sampled = [r["spec_tokens_per_step"] for r in results.get("smollm2", []) if "T=0.7" in r["workload"] and r["samples"] == 16]
        results["verify_cost_14b"] = verify_cost_14b(args, sampled[0] if sampled else args.smol_tokens_per_step)
        _save(args.out, results)


def _save(out: Path | None, results: dict) -> None:
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "speculative.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
