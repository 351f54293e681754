"""The drafter learns: a tiny random Qwen2 base model, a synthetic corpus whose solutions repeat
fixed cycles of characters (conftest.cycle_corpus), a few hundred CPU steps."""

import pytest
import torch

from build.drafter.data import IGNORE_INDEX, collate, encode_example
from build.drafter.loss import draft_loss
from build.drafter.model import Drafter, DrafterConfig
from build.drafter.loop import LoopConfig, evaluate, train
from solver.prompt import prompt_token_ids


def test_training_lowers_the_loss_and_beats_chance_top1(tokenizer, tiny_base, cycle_corpus):
    examples = cycle_corpus
    loop = LoopConfig(num_draft_tokens=3, batch_size=8, grad_accum_steps=1, learning_rate=3e-3,
                      num_epochs=1000, max_steps=300, top_k=3, log_every=50)
    torch.manual_seed(1)
    drafter = Drafter(DrafterConfig.for_base(64, len(tokenizer), num_draft_layers=2, num_draft_tokens=3))
    device, pad = torch.device("cpu"), tokenizer.pad_token_id
    before = evaluate(tiny_base, drafter, examples, loop, pad, device)
    history = train(tiny_base, drafter, examples, loop, pad, device, progress=False)
    after = evaluate(tiny_base, drafter, examples, loop, pad, device)
    chance = 1 / len(tokenizer)
    print(f"\nloss {before['loss']:.3f} -> {after['loss']:.3f}; top1 chance {chance:.4f}; "
          + ", ".join(f"redrafter{i}_top1 {before[f'redrafter{i}_top1']:.3f} -> {after[f'redrafter{i}_top1']:.3f}" for i in range(3)))
    assert [record["step"] for record in history] == [50, 100, 150, 200, 250, 300]
    assert after["loss"] < 0.25 * before["loss"]
    for head in range(3):
        assert after[f"redrafter{head}_top1"] > 0.6  # chance is 1/261 ~ 0.004
        assert after[f"redrafter{head}_top1"] > 100 * chance
        assert after[f"redrafter{head}_top3"] >= after[f"redrafter{head}_top1"]


def test_head_i_is_scored_on_the_token_i_plus_2_ahead(tokenizer):
    torch.manual_seed(0)
    drafter = Drafter(DrafterConfig.for_base(4, 9))
    labels = torch.full((1, 8), IGNORE_INDEX)
    labels[0, 5] = 3  # only x_5 is scored: head i sees it from position 5 - 2 - i
    hidden, embeds = torch.randn(1, 8, 4), torch.randn(1, 8, 4)
    _, stats = draft_loss(drafter, hidden, embeds, labels, num_draft_tokens=5, top_k=1)
    assert stats.count == [1, 1, 1, 1, 0]  # head 4 would need position -1
    logits = drafter.logits(hidden[0, 3], drafter.teacher_forced_states(embeds, 1)[0][0, 3])
    assert stats.correct[0] == [int(logits.argmax() == 3)]
    assert stats.metrics()["redrafter0_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits[None], torch.tensor([3])).detach()))


def test_prompt_tokens_are_masked_and_the_prompt_is_the_engines(tokenizer):
    example = encode_example(tokenizer, "What is 1+1?", "It is \\boxed{2}.", max_len=1000)
    prompt = prompt_token_ids(tokenizer, "What is 1+1?")
    ids, labels = example.input_ids.tolist(), example.labels.tolist()
    assert tuple(ids[: len(prompt)]) == prompt and example.prompt_len == len(prompt)
    assert set(labels[: len(prompt)]) == {IGNORE_INDEX}
    assert labels[len(prompt):] == ids[len(prompt):]
    assert tokenizer.decode(ids[len(prompt):]) == "It is \\boxed{2}.<|im_end|>\n"
    batch = collate([example, encode_example(tokenizer, "Q", "A", max_len=1000)], pad_id=tokenizer.pad_token_id)
    assert batch.labels[0].tolist() == labels and batch.labels[1, -1] == IGNORE_INDEX  # padding is never scored
