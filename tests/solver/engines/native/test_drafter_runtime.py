"""The draft loop (`DraftProposer`, CPU, float32): drafts are drawn from the distributions it
returns, which are valid distributions within the nucleus candidates; the padded static-buffer
path (what CUDA graphs replay, here run eagerly) gives the real rows the same drafts and
distributions as the unpadded loop, greedy and sampled, across batch sizes and calls.

Run: pytest tests/solver/engines/native/test_drafter_runtime.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from build.drafter.model import Drafter, DrafterConfig
from solver.engines import sampling
from solver.engines.native.drafter_runtime import DraftProposer

HIDDEN, VOCAB, WIDTH = 16, 50, 3


def proposer(seed: int = 0) -> DraftProposer:
    torch.manual_seed(seed)
    drafter = Drafter(DrafterConfig.for_base(HIDDEN, VOCAB, num_draft_tokens=WIDTH))
    return DraftProposer(drafter, torch.randn(VOCAB, HIDDEN), WIDTH)


def inputs(rows: int, seed: int):
    """context, last token, temperature (every third row greedy), top_p, uniforms."""
    gen = torch.Generator().manual_seed(seed)
    temperature = torch.tensor([0.0 if i % 3 == 0 else 0.5 + 0.5 * (i % 2) for i in range(rows)])
    top_p = torch.tensor([0.9 if i % 2 else 1.0 for i in range(rows)])
    return (torch.randn(rows, HIDDEN, generator=gen), torch.randint(0, VOCAB, (rows,), generator=gen),
            temperature, top_p, torch.rand(rows, WIDTH, generator=gen))  # fmt: skip


def test_drafts_are_drawn_from_the_returned_distributions(monkeypatch):
    monkeypatch.setattr(sampling, "NUCLEUS_CANDIDATES", 8)  # the random drafter is flat: 8 hold less than top_p
    n = 40_000
    drafter = proposer()  # seeds the global generator: the draws below no longer depend on earlier tests
    context = torch.randn(1, HIDDEN).expand(n, HIDDEN)
    last = torch.full((n,), 7)
    drafts, q = drafter.propose(context, last, torch.ones(n), torch.full((n,), 0.95), torch.rand(n, WIDTH))
    torch.testing.assert_close(q.sum(dim=-1), torch.ones(n, WIDTH))
    assert ((q > 0).sum(dim=-1) <= 8).all()
    assert (q.gather(-1, drafts.unsqueeze(-1)) > 0).all()
    # The first draft: every row has the same q_1. The second: rows sharing the likeliest d_1.
    for position, rows in ((0, torch.ones(n, dtype=torch.bool)), (1, drafts[:, 0] == drafts[:, 0].mode().values)):
        expected = q[rows, position][0]
        assert torch.allclose(q[rows, position], expected.expand_as(q[rows, position]))
        count = int(rows.sum())
        empirical = torch.bincount(drafts[rows, position], minlength=VOCAB).float() / count
        tv = 0.5 * (empirical - expected).abs().sum().item()
        assert tv < 2 * sum(math.sqrt(p * (1 - p) / count) for p in expected.tolist()), (position, tv)


def test_greedy_rows_draft_the_argmax_chain():
    drafter = proposer()
    context, last, _, top_p, _ = inputs(4, seed=1)
    drafts, q = drafter.propose(context, last, torch.zeros(4), top_p, None)
    assert q is None
    state, token = torch.zeros(4, HIDDEN), last
    for k in range(WIDTH):
        state = drafter.drafter.next_state(state, drafter.embed[token])
        token = drafter.drafter.logits(context, state).argmax(dim=-1)
        assert torch.equal(drafts[:, k], token)


@pytest.mark.parametrize("sampled", [False, True])
def test_padded_propose_equals_unpadded_for_the_real_rows(sampled):
    eager, padded = proposer(), proposer()
    padded.enable_graphs((2, 4, 8), capture=False)
    for rows, seed in ((5, 1), (1, 2), (8, 3), (3, 4), (11, 5)):  # padded to 8, 2, 8 exactly, 4; 11 runs eagerly
        context, last, temperature, top_p, uniforms = inputs(rows, seed)
        if not sampled:
            temperature, uniforms = torch.zeros(rows), None
        want_drafts, want_q = eager.propose(context, last, temperature, top_p, uniforms)
        got_drafts, got_q = padded.propose(context, last, temperature, top_p, uniforms)
        assert torch.equal(got_drafts, want_drafts), rows
        if sampled:
            assert got_q.shape == want_q.shape == (rows, WIDTH, VOCAB)
            torch.testing.assert_close(got_q, want_q, rtol=0, atol=1e-6)
        else:
            assert got_q is None and want_q is None
