"""ReDrafter drafter for the real SmolLM2-135M-Instruct, trained on its own generations (GPU).

1. The base model (the default model's GGUF, dequantised, bfloat16 on CUDA) writes solutions to
   synthetic arithmetic word problems: sampled at temperature 0.7, top-p 0.95, in large batches.
   They are written as solver run-log records (docs/runlog.md), the format `drafter train` reads.
2. `python -m build.pipeline drafter train` trains the drafter on the training records (timed).
3. The trained drafter is scored on held-out generations: teacher-forced top-1/top-3 accuracy of
   each draft head (`redrafter{i}_top{k}`: head i predicts the token i+2 positions ahead).

Run (on a GPU machine): python bench/drafter_smollm2.py --gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf --out DIR
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from build.drafter.data import encode_example  # noqa: E402
from build.drafter.export import load_drafter  # noqa: E402
from build.drafter.loop import LoopConfig, evaluate  # noqa: E402
from solver.engines.checkpoint import load_causal_lm  # noqa: E402
from solver.prompt import prompt_text  # noqa: E402

NAMES = ["Ana", "Ben", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo"]
ITEMS = ["apples", "marbles", "books", "coins", "stickers", "pencils", "cookies", "stamps"]


def problem(rng: random.Random) -> str:
    """A small arithmetic word problem with an integer answer."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randint(2, 60), rng.randint(2, 40), rng.randint(2, 9)
    templates = [
        f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?",
        f"{name} has {a + b} {item} and gives away {b}. How many {item} are left?",
        f"{name} buys {c} boxes with {a} {item} in each box. How many {item} is that in total?",
        f"{name} shares {a * c} {item} equally among {c} friends. How many {item} does each friend get?",
        f"What is {a} times {b} plus {c}?",
        f"Find the remainder when {a * b + c} is divided by {b}.",
    ]
    return rng.choice(templates)


def generate(model, tokenizer, problems: list[str], max_new_tokens: int, batch_size: int, seed: int) -> list[str]:
    torch.manual_seed(seed)
    end = "<|im_end|>"
    texts = []
    for start in range(0, len(problems), batch_size):
        prompts = [prompt_text(tokenizer, p) for p in problems[start : start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(**batch, do_sample=True, temperature=0.7, top_p=0.95, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        for row in out[:, batch["input_ids"].shape[1] :]:
            text = tokenizer.decode(row, skip_special_tokens=False)
            texts.append(text[: text.index(end) + len(end)] if end in text else text.replace(tokenizer.pad_token or "\0", ""))
    return texts


def write_runlog(path: Path, problems: list[str], texts: list[str]) -> int:
    with path.open("w") as handle:
        for i, (p, text) in enumerate(zip(problems, texts)):
            sample = {"index": 0, "text": text, "finish_reason": "stop" if text.endswith("<|im_end|>") else "length"}
            handle.write(json.dumps({"kind": "problem", "problem_id": str(i), "problem": p, "samples": [sample]}) + "\n")
    return sum(len(t) for t in texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-heldout", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--gen-batch", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-batch", type=int, default=32)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(args.gguf.parent), gguf_file=args.gguf.name)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model, device, dtype = load_causal_lm(args.gguf)  # bfloat16 on CUDA; on the CPU a smoke test only
    model = model.to(device).eval()
    base_dir = args.out / "base"
    plain = AutoModelForCausalLM.from_config(model.config, dtype=dtype)  # a GGUF-loaded model refuses save_pretrained
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(base_dir)
    del plain
    tokenizer.save_pretrained(base_dir)

    rng = random.Random(0)
    problems = [problem(rng) for _ in range(args.num_train + args.num_heldout)]
    started = time.perf_counter()
    texts = generate(model, tokenizer, problems, args.max_new_tokens, args.gen_batch, seed=0)
    gen_s = time.perf_counter() - started
    train_log, heldout_log = args.out / "train.runlog.jsonl", args.out / "heldout.runlog.jsonl"
    write_runlog(train_log, problems[: args.num_train], texts[: args.num_train])
    write_runlog(heldout_log, problems[args.num_train :], texts[args.num_train :])
    num_tokens = sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts)
    print(f"generated {len(texts)} solutions, {num_tokens} tokens in {gen_s:.1f} s; sample: {texts[0][:200]!r}")

    drafter_dir = args.out / "drafter"
    command = [sys.executable, "-m", "build.pipeline", "drafter", "train", "--model", str(base_dir), "--data", str(train_log),
               "--output", str(drafter_dir), "--max-len", "384", "--batch-size", str(args.train_batch), "--grad-accum-steps", "1",
               "--num-epochs", str(args.epochs), "--device", device.type, "--log-every", "50", "--force"]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    train_s = time.perf_counter() - started

    drafter = load_drafter(drafter_dir, device=device)
    examples = [encode_example(tokenizer, p, t, 384) for p, t in zip(problems[args.num_train :], texts[args.num_train :])]
    examples = [e for e in examples if e.has_targets]
    metrics = evaluate(model, drafter, examples, LoopConfig(num_draft_tokens=3, batch_size=32, top_k=3), tokenizer.pad_token_id, device)
    summary = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "train_examples": args.num_train, "heldout_examples": len(examples),
               "generation_s": round(gen_s, 1), "train_s": round(train_s, 1), "heldout": {k: round(v, 4) for k, v in metrics.items()}}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
