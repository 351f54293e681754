"""Sampling, shared by the torch backends (`hf`, `native`): pure functions over logits [rows, vocab].

Guaranteed: a greedy row (temperature 0) takes the argmax; a sampled row draws exactly one
uniform number per token from its own CPU `torch.Generator` (`generator_for(seed)`), then takes
the token whose interval of the top-p nucleus at its temperature holds it; so a request's tokens
do not depend on the rest of the batch or on the device.
"""

from __future__ import annotations

import torch

from .base import SamplingParams

NUCLEUS_CANDIDATES = 1024




def nucleus(probs: torch.Tensor, top_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities sorted descending with the tail beyond `top_p` [rows, 1] zeroed; the most
    likely token always stays. Returns (sorted_probs, sorted_token_ids).

    Sorting a whole vocabulary costs more than a small model's forward on a CPU, so the
    `NUCLEUS_CANDIDATES` most likely tokens are taken first; when they already hold `top_p` of the
    mass in every row, no token beyond them can be in the nucleus and the result is exactly the
    full sort's (same values, same cumulative sums). Otherwise (top-p near 1, flat
    distributions) the whole vocabulary is sorted."""
    sorted_probs, sorted_ids = probs.topk(min(NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)
    cumulative = sorted_probs.cumsum(dim=-1)
    if not bool((cumulative[:, -1:] >= top_p).all()):
        sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(dim=-1)
    return sorted_probs.masked_fill(cumulative - sorted_probs >= top_p, 0.0), sorted_ids



def inverse_cdf(sorted_probs: torch.Tensor, sorted_ids: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The token whose cumulative-probability interval holds `uniform` [rows] in [0, 1)."""
    cdf = sorted_probs.cumsum(dim=-1)
    target = (uniform * cdf[:, -1]).unsqueeze(-1)
    # Rounding can put `target` at the total; the last kept token then takes it.
    last_kept = (sorted_probs > 0).sum(dim=-1, keepdim=True) - 1
    index = torch.minimum(torch.searchsorted(cdf, target, right=True), last_kept)
    return sorted_ids.gather(-1, index).squeeze(-1)


def sample_tokens(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]) -> list[int]:
    """One token per row: argmax where temperature is 0, else top-p sampling at the row's
    temperature with one uniform draw from the row's generator."""
    tokens = logits.argmax(dim=-1)
    rows = [i for i, p in enumerate(params) if p.temperature > 0]
    if rows:
        index = torch.tensor(rows, device=logits.device)
        temperature = torch.tensor([params[i].temperature for i in rows], device=logits.device)
        top_p = torch.tensor([[params[i].top_p] for i in rows], device=logits.device)
        probs = torch.softmax(logits[index].float() / temperature.unsqueeze(-1), dim=-1)
        uniform = torch.cat([torch.rand(1, generator=generators[i]) for i in rows]).to(logits.device)
        sorted_probs, sorted_ids = nucleus(probs, top_p)
        tokens[index] = inverse_cdf(sorted_probs, sorted_ids, uniform)
    return tokens.tolist()


def generator_for(seed: int) -> torch.Generator:
    """A request's own CPU generator: one uniform draw per sampled token."""
    return torch.Generator(device="cpu").manual_seed(seed)
