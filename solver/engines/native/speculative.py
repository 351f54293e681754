"""Speculative sampling: which draft tokens the model keeps, as pure functions over tensors.

One verify step of one sequence scores its L draft tokens d_1..d_L (drawn from the drafter's
distributions q_1..q_L) with the model's distributions p_0..p_L at the L + 1 fed positions
(p_j follows the j-th draft; p_0 follows the guaranteed token). `accept` returns how many
drafts are kept (k) and the one token that follows them:
- greedy rows (temperature 0): d_j is kept while it equals argmax p_{j-1}; the next token is
  argmax p_k. This is exactly plain greedy decoding.
- sampled rows: d_j is kept with probability min(1, p(d_j) / q(d_j)) (test: u * q < p with
  u uniform in [0, 1)); at the first rejection the next token is drawn from max(0, p - q)
  normalised (from p itself if that is all zero), after L acceptances from p_L (the bonus).
  Every emitted token then has exactly the model's own distribution (Leviathan et al. 2023;
  Chen et al. 2023), whatever q is, as long as the drafts were drawn from q.

`warp` is the one definition of "the distribution at this temperature and top-p" for both the
model and the drafter, equal to what `solver.engines.sampling.sample_tokens` samples from: softmax of
logits / temperature, then the smallest set of most likely tokens whose mass reaches top_p
(the most likely token always stays), renormalised.

All randomness comes in as uniforms drawn by the caller from each request's own generator, so
nothing here depends on the batch. Rows are padded to a common L; `num_drafts` [rows] says how
many drafts of each row are real. Guaranteed: shapes below; no host synchronisation.
"""

from __future__ import annotations

import torch


def warp(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """logits [..., V]; temperature, top_p broadcastable to [...] (temperature > 0) -> probs [..., V]."""
    probs = torch.softmax(logits.float() / temperature.unsqueeze(-1), dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p.unsqueeze(-1), 0.0)
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)


def sample(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: probs [..., V] (unnormalised is fine), uniform [...] in [0, 1) -> ids [...]."""
    cdf = probs.cumsum(dim=-1)
    target = (uniform * cdf[..., -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target, right=True)
    # Rounding can put `target` at the total: the last token with mass takes it.
    positions = torch.arange(probs.shape[-1], device=probs.device)
    last_kept = torch.where(probs > 0, positions, -1).amax(dim=-1, keepdim=True)
    return torch.minimum(index, last_kept).squeeze(-1)


def accept(
    target_logits: torch.Tensor,
    drafts: torch.Tensor,
    draft_probs: torch.Tensor | None,
    num_drafts: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    uniforms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep a prefix of each row's drafts and choose the token after it.

    target_logits [rows, L+1, V]; drafts [rows, L]; draft_probs [rows, L, V] (the warped
    distributions the drafts were drawn from; None when every row is greedy); num_drafts,
    temperature, top_p [rows]; uniforms [rows, L+1] (L acceptance tests, then the final draw).
    Returns (num_accepted [rows], next_token [rows]).
    """
    rows, width = drafts.shape
    index = torch.arange(width, device=drafts.device)
    greedy_ids = target_logits.argmax(dim=-1)  # [rows, L+1]
    ok = drafts == greedy_ids[:, :width]
    sampled = temperature > 0
    any_sampled = bool(sampled.any())
    if any_sampled:
        safe_t = torch.where(sampled, temperature, torch.ones_like(temperature))
        p = warp(target_logits, safe_t.unsqueeze(-1), top_p.unsqueeze(-1).expand(rows, width + 1))
        if width:
            assert draft_probs is not None, "sampled rows need the drafter's distributions"
            p_draft = p[:, :width].gather(-1, drafts.unsqueeze(-1)).squeeze(-1)
            q_draft = draft_probs.gather(-1, drafts.unsqueeze(-1)).squeeze(-1)
            ok = torch.where(sampled.unsqueeze(-1), uniforms[:, :width] * q_draft < p_draft, ok)
    ok &= index < num_drafts.unsqueeze(-1)
    num_accepted = ok.long().cumprod(dim=-1).sum(dim=-1)  # [rows]
    next_token = greedy_ids.gather(-1, num_accepted.unsqueeze(-1)).squeeze(-1)
    if any_sampled:
        vocab = p.shape[-1]
        at = num_accepted.view(rows, 1, 1)
        final = p.gather(1, at.expand(rows, 1, vocab)).squeeze(1)
        if width:
            q_next = draft_probs.gather(1, at.clamp(max=width - 1).expand(rows, 1, vocab)).squeeze(1)
            residual = (final - q_next).clamp(min=0.0)
            rejected = (num_accepted < num_drafts).unsqueeze(-1) & (residual.sum(dim=-1, keepdim=True) > 0)
            final = torch.where(rejected, residual, final)
        next_token = torch.where(sampled, sample(final, uniforms[:, width]), next_token)
    return num_accepted, next_token
