"""Sampling shared by the torch backends: greedy, top-p, one uniform draw per token, and the
nucleus taken from the top candidates. Run: python -m pytest tests/solver/engines/test_sampling.py -q"""

import pytest
import torch

from solver.engines import sampling
from solver.engines.base import SamplingParams
from solver.engines.sampling import inverse_cdf, sample_tokens


@pytest.mark.parametrize(
    ("logits", "params", "expected"),
    [
        ([0.0, 3.0, 1.0], SamplingParams(max_tokens=1, temperature=0.0), 1),
        ([0.0, 3.0, 1.0], SamplingParams(max_tokens=1, temperature=1.0, top_p=0.01), 1),
        ([5.0, 0.0, 4.9], SamplingParams(max_tokens=1, temperature=0.01, top_p=1.0), 0),
        ([-1e9, -1e9, 0.0], SamplingParams(max_tokens=1, temperature=2.0, top_p=1.0), 2),
    ],
)
def test_sample_tokens_table(logits, params, expected):
    generator = torch.Generator().manual_seed(0)
    assert sample_tokens(torch.tensor([logits]), [params], [generator]) == [expected]


def test_sample_tokens_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    params = [SamplingParams(max_tokens=1, temperature=1.0, top_p=1.0)]
    generator = torch.Generator().manual_seed(0)
    draws = [sample_tokens(logits, params, [generator])[0] for _ in range(4000)]
    frequencies = [draws.count(t) / len(draws) for t in range(3)]
    assert frequencies == pytest.approx([0.5, 0.3, 0.2], abs=0.03)
    # top_p 0.6 keeps the tokens whose preceding mass is below 0.6: the first two.
    params = [SamplingParams(max_tokens=1, temperature=1.0, top_p=0.6)]
    assert {sample_tokens(logits, params, [generator])[0] for _ in range(500)} == {0, 1}


def test_inverse_cdf_never_picks_a_token_outside_the_nucleus():
    sorted_probs = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    sorted_ids = torch.tensor([[7, 3, 1, 2]])
    picks = inverse_cdf(sorted_probs.expand(3, -1), sorted_ids.expand(3, -1), torch.tensor([0.0, 0.5, 1.0]))
    assert picks.tolist() == [7, 3, 3]


@pytest.mark.parametrize("top_p", [0.5, 0.95, 1.0])
def test_candidate_sampling_with_completion_equals_a_full_sort(top_p, monkeypatch):
    """`sample_tokens` (candidates on the device, the host finishing rows whose candidates miss
    top_p) takes the same token as sorting every row's whole vocabulary with the same uniform;
    greedy rows take the argmax and draw nothing."""
    monkeypatch.setattr(sampling, "NUCLEUS_CANDIDATES", 64)
    torch.manual_seed(0)
    scales = torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 3.0, 0.25]).unsqueeze(-1)  # flat to peaked rows
    logits = torch.randn(8, 5000) * scales
    params = [SamplingParams(max_tokens=1, temperature=0.0 if i == 6 else 0.7, top_p=top_p) for i in range(8)]
    got = sample_tokens(logits, params, [torch.Generator().manual_seed(i) for i in range(8)])
    expected = []
    for i, p in enumerate(params):
        if p.temperature == 0:
            expected.append(int(logits[i].argmax()))
            continue
        uniform = torch.rand(1, generator=torch.Generator().manual_seed(i))
        probs = torch.softmax(logits[i : i + 1] / p.temperature, dim=-1)
        full_sorted, full_ids = probs.sort(dim=-1, descending=True)
        kept = full_sorted.masked_fill(full_sorted.cumsum(-1) - full_sorted >= top_p, 0.0)
        expected.append(int(inverse_cdf(kept, full_ids, uniform)))
    assert got == expected
    candidates = sampling.sample_candidates(logits / 0.7, torch.ones(8), torch.full((8,), top_p), torch.full((8,), 0.5))
    if top_p < 1:  # both paths ran
        assert (candidates < 0).any() and (candidates >= 0).any()
    else:  # 64 candidates never hold all the mass: every row was finished by a full sort
        assert (candidates < 0).all()
