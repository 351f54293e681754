"""The drafter's optimisation loop: frozen base model, teacher-forced loss, AdamW.

Each optimizer step runs the frozen base model over `grad_accum_steps` batches (no gradients) for
its last hidden states and token embeddings, then the drafter's teacher-forced loss
(`build.drafter.loss`), then an AdamW update with linear warm-up and cosine decay and gradient
clipping (Apple's and NeMo-Skills' recipe: lr 1e-3, no weight decay, 10% warm-up).

Precision follows the tensors given: with a bfloat16 base model on a GPU the drafter keeps its
float32 master weights and runs under bfloat16 autocast; on a CPU everything stays float32.
One process, one device: no data parallelism. A tqdm bar shows loss and each head's top-1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from build.drafter.data import Batch, Example, batches, batches_per_epoch, collate
from build.drafter.loss import DraftStats, draft_loss
from build.drafter.model import Drafter


@dataclass(frozen=True)
class LoopConfig:
    """How the optimisation runs; independent of where the data and models come from."""

    num_draft_tokens: int = 3  # drafter_predict_n_tokens; the engine drafts at most this many
    batch_size: int = 1
    grad_accum_steps: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    num_epochs: int = 1
    max_steps: int | None = None  # caps optimizer steps; None: num_epochs over the data
    max_grad_norm: float = 1.0
    top_k: int = 3
    log_every: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_draft_tokens", "batch_size", "grad_accum_steps", "num_epochs", "top_k", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("--max-steps must be >= 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("--warmup-ratio must be in [0, 1)")
        if self.learning_rate <= 0:
            raise ValueError("--learning-rate must be > 0")

    def num_steps(self, num_examples: int) -> int:
        per_epoch = batches_per_epoch(num_examples, self.batch_size)
        steps = math.ceil(per_epoch * self.num_epochs / self.grad_accum_steps)
        return min(steps, self.max_steps) if self.max_steps else steps


def lr_factor(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up to 1, then cosine decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def base_features(base: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen base model's last hidden states and token embeddings, both [B, T, H]."""
    with torch.no_grad():
        hidden = base.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        embeds = base.get_input_embeddings()(batch.input_ids)
    return hidden, embeds


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def batch_loss(base, drafter: Drafter, batch: Batch, loop: LoopConfig, device: torch.device):
    batch = batch.to(device)
    hidden, embeds = base_features(base, batch)
    with _autocast(device):
        return draft_loss(drafter, hidden, embeds, batch.labels, loop.num_draft_tokens, loop.top_k)


def train(
    base: torch.nn.Module,
    drafter: Drafter,
    examples: list[Example],
    loop: LoopConfig,
    pad_id: int,
    device: torch.device,
    log_path: Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train `drafter` in place; returns one record per logging window."""
    total_steps = loop.num_steps(len(examples))
    optimizer = torch.optim.AdamW(drafter.parameters(), lr=loop.learning_rate, weight_decay=loop.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(total_steps, int(loop.warmup_ratio * total_steps)))
    stream = batches(examples, loop.batch_size, pad_id, loop.seed)
    window = DraftStats(loop.num_draft_tokens, loop.top_k)
    history: list[dict] = []
    drafter.train()
    bar = tqdm(range(1, total_steps + 1), desc="drafter", unit="step", disable=not progress)
    for step in bar:
        for _ in range(loop.grad_accum_steps):
            loss, stats = batch_loss(base, drafter, next(stream), loop, device)
            (loss / loop.grad_accum_steps).backward()
            window.add(stats)
        torch.nn.utils.clip_grad_norm_(drafter.parameters(), loop.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % loop.log_every == 0 or step == total_steps:
            record = {"step": step, "lr": schedule.get_last_lr()[0], **window.metrics()}
            history.append(record)
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k == "loss" or k.endswith("_top1")})
            if log_path is not None:
                with log_path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
            window = DraftStats(loop.num_draft_tokens, loop.top_k)
    drafter.eval()
    return history


def evaluate(
    base, drafter: Drafter, examples: list[Example], loop: LoopConfig, pad_id: int, device: torch.device
) -> dict[str, float]:
    """Teacher-forced metrics over all `examples`, token-weighted, no updates."""
    total = DraftStats(loop.num_draft_tokens, loop.top_k)
    with torch.no_grad():
        for start in range(0, len(examples), loop.batch_size):
            _, stats = batch_loss(base, drafter, collate(examples[start : start + loop.batch_size], pad_id), loop, device)
            total.add(stats)
    return total.metrics()
