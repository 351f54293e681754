"""Teacher-forced drafter loss and the `redrafter{i}_top{k}` metrics.

Draft head i at position t sees the base model's hidden state h_t and the true tokens
x_{t+1}..x_{t+1+i} through the recurrence, and predicts x_{t+2+i}: the token i+2 positions ahead
(i = 0 is the first draft token after the guaranteed one). The loss is the sum over heads of each
head's mean cross-entropy over scored positions (target not IGNORE_INDEX), as in Apple's
`drafter_loss`. `redrafter{i}_top{k}` is the fraction of scored positions whose target is among
head i's k highest logits; `redrafter{i}_loss` is head i's mean cross-entropy. NeMo-Skills' target
for a usable drafter is redrafter2_top1 > 0.6 (all 3 drafts accepted that often, greedily).

Logits are computed only at scored positions: with a 152k vocabulary, the prompt's positions
would otherwise cost as much memory as the solution's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from build.drafter.data import IGNORE_INDEX
from build.drafter.model import Drafter


@dataclass
class DraftStats:
    """Token-weighted sums over any number of batches; `metrics()` turns them into means."""

    num_draft_tokens: int
    top_k: int
    count: list[int] = field(default_factory=list)  # [head] scored positions
    loss_sum: list[float] = field(default_factory=list)  # [head] sum of cross-entropies
    correct: list[list[int]] = field(default_factory=list)  # [head][k-1] top-k hits

    def __post_init__(self) -> None:
        n, k = self.num_draft_tokens, self.top_k
        self.count = self.count or [0] * n
        self.loss_sum = self.loss_sum or [0.0] * n
        self.correct = self.correct or [[0] * k for _ in range(n)]

    def add(self, other: DraftStats) -> None:
        assert (other.num_draft_tokens, other.top_k) == (self.num_draft_tokens, self.top_k)
        for head in range(self.num_draft_tokens):
            self.count[head] += other.count[head]
            self.loss_sum[head] += other.loss_sum[head]
            for k in range(self.top_k):
                self.correct[head][k] += other.correct[head][k]

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        total = 0.0
        for head in range(self.num_draft_tokens):
            n = max(self.count[head], 1)
            out[f"redrafter{head}_loss"] = self.loss_sum[head] / n
            total += out[f"redrafter{head}_loss"]
            for k in range(self.top_k):
                out[f"redrafter{head}_top{k + 1}"] = self.correct[head][k] / n
        out["loss"] = total
        return out


def draft_loss(
    drafter: Drafter,
    hidden: torch.Tensor,
    token_embeds: torch.Tensor,
    labels: torch.Tensor,
    num_draft_tokens: int,
    top_k: int = 1,
) -> tuple[torch.Tensor, DraftStats]:
    """hidden, token_embeds: [B, T, H]; labels: [B, T]. Returns (summed loss, stats)."""
    stats = DraftStats(num_draft_tokens, top_k)
    length = labels.shape[1]
    total = hidden.new_zeros((), dtype=torch.float32)
    states = drafter.teacher_forced_states(token_embeds, num_draft_tokens)
    for head, state in enumerate(states):
        span = length - (head + 2)
        if span <= 0:
            break
        target = labels[:, head + 2 :]  # [B, span]
        scored = target != IGNORE_INDEX
        count = int(scored.sum())
        if count == 0:
            continue
        logits = drafter.logits(hidden[:, :span][scored], state[:, :span][scored]).float()  # [M, V]
        target = target[scored]
        loss = F.cross_entropy(logits, target)
        total = total + loss
        with torch.no_grad():
            ranked = logits.topk(min(top_k, logits.shape[-1]), dim=-1).indices  # [M, k]
            hits = ranked.eq(target.unsqueeze(-1)).cumsum(dim=-1).clamp(max=1).sum(dim=0)
        stats.count[head] = count
        stats.loss_sum[head] = float(loss.detach()) * count
        stats.correct[head] = [int(h) for h in hits.tolist()] + [count] * (top_k - hits.numel())
    return total, stats
