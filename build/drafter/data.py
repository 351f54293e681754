"""Drafter training examples: token ids as the engine saw them, with the prompt masked.

An example's ids are `solver.prompt.prompt_token_ids(problem)` (the exact prompt the engine was
given) followed by the tokens of the rest of `solver.prompt.training_text` (the solution and the
end-of-turn marker), tokenized separately so no token straddles the prompt boundary. Labels are
the ids themselves with prompt positions set to `IGNORE_INDEX`; the loss shifts them per draft
head. Examples are cut to `max_len` tokens and kept as int32 tensors (50k examples of 2048
tokens take 0.4 GB, not the ~7 GB of Python int tuples).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from solver.prompt import prompt_text, prompt_token_ids, training_text

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    input_ids: torch.Tensor  # [T] int32
    prompt_len: int  # the first prompt_len ids are the prompt: never scored

    @property
    def labels(self) -> torch.Tensor:
        """[T] long: the ids, IGNORE_INDEX on prompt positions."""
        labels = self.input_ids.to(torch.long, copy=True)
        labels[: self.prompt_len] = IGNORE_INDEX
        return labels

    @property
    def has_targets(self) -> bool:
        """Whether any draft head has a target: a solution token at position >= 2."""
        return len(self.input_ids) > max(self.prompt_len, 2)


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [B, T] long, right-padded with pad_id
    attention_mask: torch.Tensor  # [B, T] long, 0 on padding
    labels: torch.Tensor  # [B, T] long, IGNORE_INDEX on prompt and padding

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def encode_example(tokenizer: PreTrainedTokenizerBase, problem: str, solution: str, max_len: int) -> Example:
    prompt_ids = list(prompt_token_ids(tokenizer, problem))
    completion = training_text(tokenizer, problem, solution)[len(prompt_text(tokenizer, problem)) :]
    completion_ids = tokenizer.encode(completion, add_special_tokens=False)
    ids = (prompt_ids + completion_ids)[:max_len]
    return Example(torch.tensor(ids, dtype=torch.int32), min(len(prompt_ids), max_len))


def collate(examples: list[Example], pad_id: int) -> Batch:
    length = max(len(example.input_ids) for example in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = example.input_ids
        mask[row, :n] = 1
        labels[row, :n] = example.labels
    return Batch(ids, mask, labels)


def batches(examples: list[Example], batch_size: int, pad_id: int, seed: int) -> Iterator[Batch]:
    """Endless batches: each epoch a fresh seeded shuffle; the last partial batch is kept."""
    assert examples and batch_size >= 1
    rng = random.Random(seed)
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield collate([examples[i] for i in order[start : start + batch_size]], pad_id)


def batches_per_epoch(num_examples: int, batch_size: int) -> int:
    return -(-num_examples // batch_size)
