"""Sampling, shared by the torch backends (`hf`, `native`): pure functions over logits [rows, vocab].

Guaranteed: a greedy row (temperature 0) takes the argmax; a sampled row draws exactly one
uniform number per token from its own CPU `torch.Generator` (`generator_for(seed)`), then takes
the token whose interval of the top-p nucleus at its temperature holds it; so a request's tokens
do not depend on the rest of the batch or on the device.
"""

from __future__ import annotations

import torch

from .base import SamplingParams

NUCLEUS_CANDIDATES = 1024  # candidates for the nucleus; see sample_candidates


def inverse_cdf(sorted_probs: torch.Tensor, sorted_ids: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The token whose cumulative-probability interval holds `uniform` [rows] in [0, 1)."""
    cdf = sorted_probs.cumsum(dim=-1)
    target = (uniform * cdf[:, -1]).unsqueeze(-1)
    # Rounding can put `target` at the total; the last kept token then takes it.
    last_kept = (sorted_probs > 0).sum(dim=-1, keepdim=True) - 1
    index = torch.minimum(torch.searchsorted(cdf, target, right=True), last_kept)
    return sorted_ids.gather(-1, index).squeeze(-1)


def sample_candidates(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The tokens of `sample_tokens`, without any host synchronisation (so a CUDA graph can hold
    it): logits [rows, V]; temperature, top_p, uniform [rows] float32. Returns token ids [rows],
    or -1 for a sampled row whose `NUCLEUS_CANDIDATES` most likely tokens hold less than top_p
    (the caller finishes those rows with `complete`)."""
    greedy = logits.argmax(dim=-1)
    sampled = temperature > 0
    safe_t = torch.where(sampled, temperature, torch.ones_like(temperature))
    probs = torch.softmax(logits.float() / safe_t.unsqueeze(-1), dim=-1)
    cand_probs, cand_ids = probs.topk(min(NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)
    cumulative = cand_probs.cumsum(dim=-1)
    held = cumulative[:, -1] >= top_p
    beyond = (cumulative - cand_probs >= top_p.unsqueeze(-1)) & (torch.arange(cand_probs.shape[-1], device=logits.device) > 0)
    kept = cand_probs.masked_fill(beyond, 0.0)  # the most likely token always stays (any top_p, padded rows too)
    drawn = torch.where(held, inverse_cdf(kept, cand_ids, uniform), -1)
    return torch.where(sampled, drawn, greedy)


def complete(logits: torch.Tensor, tokens: list[int], temperature: list[float], top_p: list[float], uniform: list[float]) -> list[int]:
    """Fill the -1 rows of `sample_candidates` by sorting their whole vocabulary (same uniform)."""
    rows = [i for i, t in enumerate(tokens) if t < 0]
    if rows:
        device = logits.device
        index = torch.tensor(rows, device=device)
        t = torch.tensor([temperature[i] for i in rows], device=device)
        probs = torch.softmax(logits[index].float() / t.unsqueeze(-1), dim=-1)
        sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(dim=-1)
        p = torch.tensor([[top_p[i]] for i in rows], device=device)
        sorted_probs = sorted_probs.masked_fill(cumulative - sorted_probs >= p, 0.0)
        drawn = inverse_cdf(sorted_probs, sorted_ids, torch.tensor([uniform[i] for i in rows], device=device)).tolist()
        tokens = list(tokens)
        for i, token in zip(rows, drawn):
            tokens[i] = token
    return tokens


def sampling_inputs(params: list[SamplingParams], generators: list[torch.Generator]) -> tuple[list[float], list[float], list[float]]:
    """(temperature, top_p, uniform) per row: a sampled row draws its uniform now from its own
    generator; a greedy row draws nothing (0.0)."""
    uniform = [float(torch.rand(1, generator=g)) if p.temperature > 0 else 0.0 for p, g in zip(params, generators)]
    return [p.temperature for p in params], [p.top_p for p in params], uniform


def sample_tokens(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]) -> list[int]:
    """One token per row: argmax where temperature is 0, else top-p sampling at the row's
    temperature with one uniform draw from the row's generator."""
    temperature, top_p, uniform = sampling_inputs(params, generators)
    as_tensor = lambda values: torch.tensor(values, dtype=torch.float32, device=logits.device)  # noqa: E731
    tokens = sample_candidates(logits, as_tensor(temperature), as_tensor(top_p), as_tensor(uniform)).tolist()
    return complete(logits, tokens, temperature, top_p, uniform)


def resume_sampling(seq, params: SamplingParams) -> None:
    """A paused request's sampling state for its continuation after `extend`: its draws go on
    from where they were unless the seed changes (then a fresh generator for the new seed), and
    the count of generated tokens restarts for the new `max_tokens`. `seq` has `params`,
    `generator` and `num_generated_tokens`."""
    if params.seed != seq.params.seed:
        seq.generator = generator_for(params.seed)
    seq.params = params
    seq.num_generated_tokens = 0


def generator_for(seed: int) -> torch.Generator:
    """A request's own CPU generator: one uniform draw per sampled token."""
    return torch.Generator(device="cpu").manual_seed(seed)
