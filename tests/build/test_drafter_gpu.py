"""On a GPU the base model runs in bfloat16 and the drafter trains under bfloat16 autocast.
Skipped without CUDA (the default CPU run)."""

import copy

import pytest
import torch

from build.drafter.model import Drafter, DrafterConfig
from build.drafter.loop import LoopConfig, evaluate, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_bf16_training_on_gpu_lowers_the_loss(tokenizer, tiny_base, cycle_corpus):
    device = torch.device("cuda")
    base = copy.deepcopy(tiny_base).to(device, torch.bfloat16)
    examples = cycle_corpus
    loop = LoopConfig(batch_size=8, grad_accum_steps=1, learning_rate=3e-3, num_epochs=1000, max_steps=300, log_every=100)
    torch.manual_seed(1)
    drafter = Drafter(DrafterConfig.for_base(64, len(tokenizer), num_draft_tokens=3)).to(device)
    before = evaluate(base, drafter, examples, loop, tokenizer.pad_token_id, device)
    train(base, drafter, examples, loop, tokenizer.pad_token_id, device, progress=False)
    after = evaluate(base, drafter, examples, loop, tokenizer.pad_token_id, device)
    print(f"\nGPU bf16: loss {before['loss']:.3f} -> {after['loss']:.3f}, redrafter2_top1 {after['redrafter2_top1']:.3f}")
    assert next(drafter.parameters()).dtype == torch.float32  # master weights stay float32
    assert after["loss"] < 0.25 * before["loss"]
    assert min(after[f"redrafter{i}_top1"] for i in range(3)) > 0.6
