"""A trained ReDrafter drafter (`build.drafter.model.Drafter`) as the engine's source of drafts.

Beam width 1: from the token g_0 the model just chose and the model's final-norm hidden state h
at the position that chose it, the drafter runs its recurrence exactly as it was trained
(`Drafter.teacher_forced_states`): s_0 = next_state(0, E(g_0)), draft logits_0 = logits(h, s_0)
give d_1 (the token two positions after h), s_k = next_state(s_{k-1}, E(d_k)), logits_k give
d_{k+1}. E is the base model's own embedding table.

Greedy rows take each draft's argmax; sampled rows draw it from `speculative.warp` of the draft
logits at the row's temperature and top-p, with uniforms from the row's own generator, and
the warped distributions come back for `speculative.accept`.

Not done: beams wider than 1 and tree attention; CUDA graphs for the draft loop.
"""

from __future__ import annotations

import torch

from .config import ModelShape
from .speculative import sample, warp


def check_compatible(drafter, shape: ModelShape) -> None:
    """A drafter must be trained for this model's hidden size and vocabulary."""
    config = drafter.config
    if config.hidden_size != shape.hidden_size or config.vocab_size != shape.vocab_size:
        raise ValueError(
            f"drafter was trained for hidden size {config.hidden_size} and vocabulary {config.vocab_size}; "
            f"the model has {shape.hidden_size} and {shape.vocab_size}"
        )


class DraftProposer:
    def __init__(self, drafter, embed: torch.Tensor, num_draft_tokens: int) -> None:
        assert num_draft_tokens >= 1
        self.drafter = drafter.eval()
        self.embed = embed  # [V, H], the base model's table (not a copy)
        self.num_draft_tokens = num_draft_tokens

    @torch.inference_mode()
    def propose(
        self,
        context: torch.Tensor,
        last_token: torch.Tensor,
        temperature: torch.Tensor,
        top_p: torch.Tensor,
        uniforms: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """context [rows, H] (final-norm hidden state), last_token [rows] (g_0), temperature and
        top_p [rows], uniforms [rows, L] or None when every row is greedy.
        Returns drafts [rows, L] and, for sampled rows, their distributions [rows, L, V]."""
        sampled = temperature > 0
        safe_t = torch.where(sampled, temperature, torch.ones_like(temperature))
        context = context.to(self.embed.dtype)
        state = torch.zeros_like(context)
        token = last_token
        drafts, probs = [], []
        for k in range(self.num_draft_tokens):
            state = self.drafter.next_state(state, self.embed[token])
            logits = self.drafter.logits(context, state).float()
            token = logits.argmax(dim=-1)
            if uniforms is not None:
                q = warp(logits, safe_t, top_p)
                token = torch.where(sampled, sample(q, uniforms[:, k]), token)
                probs.append(q)
            drafts.append(token)
        return torch.stack(drafts, dim=1), (torch.stack(probs, dim=1) if probs else None)
