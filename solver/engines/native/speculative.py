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

Two warps, because only the model's side must be exact:
- `target_nucleus` (and `warp`, its dense form) is "the distribution at this temperature and
  top-p" of the model, equal to what `solver.engines.sampling.sample_tokens` samples from:
  softmax of logits / temperature, then the smallest set of most likely tokens whose mass
  reaches top_p (the most likely token always stays), renormalised. Like `sampling.sample_candidates`
  it looks only at the `NUCLEUS_CANDIDATES` most likely tokens when they hold top_p in every
  row (then nothing beyond them can be in the nucleus) and sorts the whole vocabulary
  otherwise; that decision is one host synchronisation.
- `draft_nucleus` is the drafter's q: the same rule applied within the `NUCLEUS_CANDIDATES`
  most likely tokens only, renormalised over them, with no fallback and no host
  synchronisation (so it can run inside a CUDA graph). When the candidates hold less than
  top_p, q differs from the drafter's exact nucleus; that costs acceptance, never
  correctness, since the guarantee above holds for any q the drafts are drawn from.

All randomness comes in as uniforms drawn by the caller from each request's own generator, so
nothing here depends on the batch. Rows are padded to a common L; `num_drafts` [rows] says how
many drafts of each row are real. Guaranteed: shapes below; `accept` synchronises with the
host only for the nucleus decision above, and only when some row is sampled.
"""

from __future__ import annotations

import torch

from solver.engines import sampling

GREEDY_TOP_P = 1e-6  # stands in for a greedy row's top_p where p is computed but unused


def target_nucleus(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's exact warp on a candidate set. logits [..., V]; temperature, top_p
    broadcastable to [...] (temperature > 0). Returns (probs [..., C], token ids [..., C]),
    C = NUCLEUS_CANDIDATES when they hold top_p in every row, else V; probs sum to 1."""
    probs = torch.softmax(logits.float() / temperature.unsqueeze(-1), dim=-1)
    sorted_probs, ids = _candidates(probs)
    if not bool((sorted_probs.cumsum(dim=-1)[..., -1] >= top_p).all()):
        sorted_probs, ids = probs.sort(dim=-1, descending=True)
    return _truncate(sorted_probs, top_p), ids


def draft_nucleus(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The drafter's warp: as `target_nucleus` but always within the NUCLEUS_CANDIDATES most
    likely tokens (C = min(NUCLEUS_CANDIDATES, V)); no host synchronisation, static shapes."""
    probs = torch.softmax(logits.float() / temperature.unsqueeze(-1), dim=-1)
    sorted_probs, ids = _candidates(probs)
    return _truncate(sorted_probs, top_p), ids


def densify(probs: torch.Tensor, ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Candidate probs and ids [..., C] -> probs over the vocabulary [..., V] (zero elsewhere)."""
    return probs.new_zeros(*probs.shape[:-1], vocab_size).scatter_(-1, ids, probs)


def warp(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """`target_nucleus` over the whole vocabulary: logits [..., V] -> probs [..., V]."""
    return densify(*target_nucleus(logits, temperature, top_p), logits.shape[-1])


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
    uniforms: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep a prefix of each row's drafts and choose the token after it.

    target_logits [rows, L+1, V]; drafts [rows, L]; draft_probs [rows, L, V] (the warped
    distributions the drafts were drawn from; None when every row is greedy); num_drafts,
    temperature, top_p [rows]; uniforms [rows, L+1] (L acceptance tests, then the final draw),
    None when every row is greedy (the caller knows: it skips all sampling work).
    Returns (num_accepted [rows], next_token [rows]).
    """
    rows, width = drafts.shape
    index = torch.arange(width, device=drafts.device)
    greedy_ids = target_logits.argmax(dim=-1)  # [rows, L+1]
    ok = drafts == greedy_ids[:, :width]
    sampled = temperature > 0
    if uniforms is not None:
        safe_t = torch.where(sampled, temperature, torch.ones_like(temperature))
        # Greedy rows never use p: a tiny top_p keeps only their most likely token, so they
        # cannot force the full sort on the batch.
        safe_p = torch.where(sampled, top_p, torch.full_like(top_p, GREEDY_TOP_P))
        p, p_ids = target_nucleus(target_logits, safe_t.unsqueeze(-1), safe_p.unsqueeze(-1))  # [rows, L+1, C]
        if width:
            assert draft_probs is not None, "sampled rows need the drafter's distributions"
            # Candidate ids are distinct, so the masked sum is p(d_j) itself (or 0 outside the set).
            p_draft = (p[:, :width] * (p_ids[:, :width] == drafts.unsqueeze(-1))).sum(dim=-1)
            q_draft = draft_probs.gather(-1, drafts.unsqueeze(-1)).squeeze(-1)
            ok = torch.where(sampled.unsqueeze(-1), uniforms[:, :width] * q_draft < p_draft, ok)
    ok &= index < num_drafts.unsqueeze(-1)
    num_accepted = ok.long().cumprod(dim=-1).sum(dim=-1)  # [rows]
    next_token = greedy_ids.gather(-1, num_accepted.unsqueeze(-1)).squeeze(-1)
    if uniforms is not None:
        vocab = target_logits.shape[-1]
        at = num_accepted.view(rows, 1, 1).expand(rows, 1, p.shape[-1])
        final = densify(p.gather(1, at).squeeze(1), p_ids.gather(1, at).squeeze(1), vocab)  # [rows, V]
        if width:
            at_draft = num_accepted.clamp(max=width - 1).view(rows, 1, 1).expand(rows, 1, vocab)
            residual = (final - draft_probs.gather(1, at_draft).squeeze(1)).clamp(min=0.0)
            rejected = (num_accepted < num_drafts).unsqueeze(-1) & (residual.sum(dim=-1, keepdim=True) > 0)
            final = torch.where(rejected, residual, final)
        next_token = torch.where(sampled, sample(final, uniforms[:, width]), next_token)
    return num_accepted, next_token


def _candidates(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The NUCLEUS_CANDIDATES most likely tokens, most likely first: (probs, ids) [..., C]."""
    return probs.topk(min(sampling.NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)


def _truncate(sorted_probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero the tail beyond top_p [...] of descending probs [..., C], renormalise.

    The total is a running sum's last value: past the nucleus it adds only zeros, so (with the
    CPU's sequential running sum) it is the same number whether C is the candidates or the whole
    vocabulary, and so are the probabilities."""
    cumulative = sorted_probs.cumsum(dim=-1)
    kept = sorted_probs.masked_fill(cumulative - sorted_probs >= top_p.unsqueeze(-1), 0.0)
    return kept / kept.cumsum(dim=-1)[..., -1:]
