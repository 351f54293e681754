"""Speculative decoding in the native engine (CPU, float32): `speculative.accept` keeps the
model's distribution; with a drafter, greedy output equals plain greedy decoding alone, batched,
across `extend` and aborts; sampled output has the model's distribution; stop tokens inside an
accepted run and `max_tokens` are honoured; block accounting returns to empty.

Two drafters: the real `build.drafter.model.Drafter` with random weights (almost every draft
rejected) and `BigramDrafter`, a stand-in with the same interface that drafts the model's own
greedy bigrams (most drafts accepted, some rejected), so both paths run.

Run: pytest tests/solver/engines/native/test_speculative.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from build.drafter.model import Drafter, DrafterConfig
from solver.engines import sampling
from solver.engines.base import Request, SamplingParams
from solver.engines.native import EngineConfig, NativeEngine
from solver.engines.native.speculative import accept, densify, draft_nucleus, sample, target_nucleus, warp

from tests.solver.engines.engine_testing import PROMPTS, TOKENIZER, Collector, first_new_position, reference, stop_then_extend, tiny_model

VOCAB = len(TOKENIZER)


class BigramDrafter(torch.nn.Module):
    """Drafts `table[previous token]` with logit `sharpness` over the rest (the state is the
    embedding of the previous token; the context is ignored)."""

    def __init__(self, embed: torch.Tensor, table: dict[int, int], sharpness: float = 8.0) -> None:
        super().__init__()
        self.config = DrafterConfig.for_base(embed.shape[1], embed.shape[0], num_draft_tokens=3)
        self.embed = embed
        self.next_of = torch.tensor([table.get(t, 0) for t in range(embed.shape[0])])
        self.sharpness = sharpness

    def next_state(self, state: torch.Tensor, token_embeds: torch.Tensor) -> torch.Tensor:
        return token_embeds

    def logits(self, context: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        previous = torch.cdist(state.float(), self.embed.float()).argmin(dim=-1)
        return torch.nn.functional.one_hot(self.next_of[previous], self.embed.shape[0]).float() * self.sharpness


def bigram_drafter(model) -> BigramDrafter:
    table: dict[int, int] = {}
    for prompt in PROMPTS.values():
        tokens = list(prompt) + reference(model, prompt, 40)
        for a, b in zip(tokens, tokens[1:]):
            table.setdefault(a, b)
    return BigramDrafter(model.get_input_embeddings().weight.detach(), table)


def random_drafter(hidden_size: int) -> Drafter:
    torch.manual_seed(1)
    return Drafter(DrafterConfig.for_base(hidden_size, VOCAB, num_draft_tokens=3)).eval()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request):
    return tiny_model(request.param)


def spec_engine(model, drafter=None, **config) -> NativeEngine:
    return NativeEngine(model, config=EngineConfig(**config), drafter=drafter or bigram_drafter(model))


# -- the acceptance rule alone -----------------------------------------------------------------


def tv_tolerance(probs: list[float], num_samples: int) -> float:
    """4x the bound sum_k sqrt(p_k (1 - p_k) / N) / 2 on the expected total variation between
    N draws from `probs` and `probs` itself (by Jensen; below sqrt(K / N) / 2 for K outcomes).
    With 4x a false alarm is far below 1e-3 (TV concentrates within O(1/sqrt(N)) of its mean)."""
    return 4 * 0.5 * sum(math.sqrt(p * (1 - p) / num_samples) for p in probs)


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9), (1.3, 0.6)])
def test_accept_preserves_the_target_distribution_of_the_first_token(temperature, top_p):
    torch.manual_seed(0)
    vocab, width, n = 8, 3, 60_000
    target = torch.randn(width + 1, vocab) * 2
    draft_logits = torch.randn(width, vocab) * 2
    t, p_ = torch.full((n,), temperature), torch.full((n,), top_p)
    q = warp(draft_logits.expand(n, width, vocab), t.unsqueeze(-1), p_.unsqueeze(-1).expand(n, width))
    drafts = sample(q, torch.rand(n, width))
    accepted, next_token = accept(target.expand(n, width + 1, vocab), drafts, q, torch.full((n,), width), t, p_, torch.rand(n, width + 1))
    first = torch.where(accepted > 0, drafts[:, 0], next_token)
    empirical = torch.bincount(first, minlength=vocab).float() / n
    expected = warp(target[0], torch.tensor(temperature), torch.tensor(top_p))
    tv = 0.5 * (empirical - expected).abs().sum().item()
    assert tv < tv_tolerance(expected.tolist(), n), (tv, empirical, expected)
    assert 0 < accepted.float().mean() < width  # both paths ran


def test_accept_without_drafts_samples_the_target_and_greedy_takes_argmax():
    torch.manual_seed(0)
    n, vocab = 40_000, 6
    target = torch.randn(1, vocab)
    ones = torch.ones(n)
    _, tokens = accept(target.expand(n, 1, vocab), torch.zeros(n, 0, dtype=torch.long), None, torch.zeros(n, dtype=torch.long), ones, ones, torch.rand(n, 1))
    empirical = torch.bincount(tokens, minlength=vocab).float() / n
    expected = torch.softmax(target[0], -1)
    assert 0.5 * (empirical - expected).abs().sum() < tv_tolerance(expected.tolist(), n)


def full_sort_warp(logits: torch.Tensor, temperature: float, top_p: torch.Tensor) -> torch.Tensor:
    """The nucleus by sorting the whole vocabulary: the reference the candidate path must equal."""
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(dim=-1)
    kept = sorted_probs.masked_fill(cumulative - sorted_probs >= top_p.unsqueeze(-1), 0.0)
    return torch.zeros_like(probs).scatter_(-1, order, kept / kept.cumsum(dim=-1)[..., -1:])


@pytest.mark.parametrize("scale, top_p, candidates_hold", [(4.0, 0.8, True), (4.0, 0.95, True), (0.1, 0.9, False), (0.1, 0.05, True)])
def test_target_warp_on_candidates_equals_the_full_sort(monkeypatch, scale, top_p, candidates_hold):
    monkeypatch.setattr(sampling, "NUCLEUS_CANDIDATES", 16)
    torch.manual_seed(0)
    vocab = 300
    logits = torch.randn(5, vocab) * scale
    logits[:, :3] += 3 * scale  # peaked rows: the top 16 hold most of the mass
    top_p_rows = torch.full((5,), top_p)
    probs, ids = target_nucleus(logits, torch.tensor(0.7), top_p_rows)
    assert probs.shape[-1] == (16 if candidates_hold else vocab)
    dense = densify(probs, ids, vocab)
    assert torch.equal(dense, full_sort_warp(logits, 0.7, top_p_rows))
    # `sample_tokens` draws from the full-sort nucleus too (tests/solver/engines/test_sampling.py)
    assert torch.equal(dense > 0, full_sort_warp(logits, 0.7, top_p_rows) > 0)
    torch.testing.assert_close(dense, full_sort_warp(logits, 0.7, top_p_rows), rtol=1e-6, atol=1e-7)
    assert torch.equal(warp(logits, torch.tensor(0.7), top_p_rows), dense)


def test_target_warp_falls_back_to_the_full_sort_when_one_row_needs_it(monkeypatch):
    monkeypatch.setattr(sampling, "NUCLEUS_CANDIDATES", 4)
    torch.manual_seed(0)
    logits = torch.cat([torch.randn(1, 50) * 8, torch.randn(1, 50) * 0.1])  # peaked row, flat row
    top_p = torch.tensor([0.5, 0.9])
    probs, ids = target_nucleus(logits, torch.tensor(1.0), top_p)
    assert probs.shape[-1] == 50
    assert torch.equal(densify(probs, ids, 50), full_sort_warp(logits, 1.0, top_p))
    assert (densify(probs, ids, 50)[1] > 0).sum() > 4  # the flat row's nucleus reaches past 4 candidates


def test_draft_warp_is_the_nucleus_within_the_candidates_renormalised(monkeypatch):
    monkeypatch.setattr(sampling, "NUCLEUS_CANDIDATES", 4)
    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 0.1  # flat: 4 candidates hold far less than top_p
    probs, ids = draft_nucleus(logits, torch.tensor(1.0), torch.tensor(0.9))
    assert probs.shape == ids.shape == (3, 4)
    top, top_ids = torch.softmax(logits, -1).topk(4, dim=-1)
    assert torch.equal(ids, top_ids)
    torch.testing.assert_close(probs, top / top.sum(dim=-1, keepdim=True))
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(3))


def test_greedy_rows_do_not_force_the_full_sort_on_a_sampled_batch(monkeypatch):
    from solver.engines.native import speculative

    monkeypatch.setattr(sampling, "NUCLEUS_CANDIDATES", 4)
    widths = []

    def spy(*args):
        probs, ids = target_nucleus(*args)
        widths.append(probs.shape[-1])
        return probs, ids

    monkeypatch.setattr(speculative, "target_nucleus", spy)
    torch.manual_seed(0)
    logits = torch.stack([torch.randn(3, 50) * 0.1, torch.randn(3, 50) * 10])  # greedy row flat, sampled row peaked
    drafts = logits.argmax(dim=-1)[:, :2]
    q = torch.nn.functional.one_hot(drafts, 50).float()
    k, token = accept(logits, drafts, q, torch.tensor([2, 2]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5]), torch.rand(2, 3))
    assert widths == [4]
    assert (k[0].item(), token[0].item()) == (2, logits[0, 2].argmax().item())


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_accept_keeps_the_target_distribution_with_a_truncated_draft(monkeypatch, temperature, top_p):
    """q from only 3 candidates (so its support misses tokens p keeps, and the target side falls
    back to the full sort): the first emitted token still has the model's distribution."""
    monkeypatch.setattr(sampling, "NUCLEUS_CANDIDATES", 3)
    torch.manual_seed(0)
    vocab, width, n = 8, 3, 60_000
    target = torch.randn(width + 1, vocab)
    draft_logits = torch.randn(width, vocab)
    t, p_ = torch.full((n,), temperature), torch.full((n,), top_p)
    q_probs, q_ids = draft_nucleus(draft_logits, torch.tensor(temperature), torch.tensor(top_p))
    q = densify(q_probs, q_ids, vocab).expand(n, width, vocab)
    drafts = sample(q, torch.rand(n, width))
    accepted, next_token = accept(target.expand(n, width + 1, vocab), drafts, q, torch.full((n,), width), t, p_, torch.rand(n, width + 1))
    first = torch.where(accepted > 0, drafts[:, 0], next_token)
    empirical = torch.bincount(first, minlength=vocab).float() / n
    expected = full_sort_warp(target[0], temperature, torch.tensor(top_p))
    tv = 0.5 * (empirical - expected).abs().sum().item()
    assert tv < tv_tolerance(expected.tolist(), n), (tv, empirical, expected)
    assert (expected > 0).sum() > (q[0, 0] > 0).sum()  # the draft really misses part of the target's support


@pytest.mark.parametrize(
    "argmaxes, drafts, num_drafts, expected",
    [
        ([1, 2, 3, 4], [1, 2, 3], 3, (3, 4)),  # all kept, bonus is the last argmax
        ([1, 2, 3, 4], [1, 5, 3], 3, (1, 2)),  # first mismatch: the model's own token
        ([1, 2, 3, 4], [7, 2, 3], 3, (0, 1)),
        ([1, 2, 3, 4], [1, 2, 3], 1, (1, 2)),  # only one draft was real
        ([1, 2, 3, 4], [1, 2, 3], 0, (0, 1)),
    ],
)
def test_greedy_accept_keeps_drafts_while_they_equal_the_argmax(argmaxes, drafts, num_drafts, expected):
    logits = torch.nn.functional.one_hot(torch.tensor([argmaxes]), 8).float()
    drafts = torch.tensor([drafts])
    k, token = accept(logits, drafts, None, torch.tensor([num_drafts]), torch.zeros(1), torch.ones(1), None)
    assert (k.item(), token.item()) == expected
    # A greedy row inside a batch that also samples (uniforms and q present) is decided the same way.
    q = torch.nn.functional.one_hot(drafts, 8).float()
    k, token = accept(logits, drafts, q, torch.tensor([num_drafts]), torch.zeros(1), torch.ones(1), torch.zeros(1, 4))
    assert (k.item(), token.item()) == expected


# -- greedy equality through the engine --------------------------------------------------------


@pytest.mark.parametrize("make", ["bigram", "random"])
def test_greedy_with_drafts_equals_generate_alone_and_batched(model, make):
    drafter = bigram_drafter(model) if make == "bigram" else random_drafter(model.config.hidden_size)
    run = Collector(spec_engine(model, drafter))
    run.engine.add(Request("long", PROMPTS["long"], SamplingParams(max_tokens=40, temperature=0.0)))
    run.engine.add(Request("short", PROMPTS["short"], SamplingParams(max_tokens=7, temperature=0.0)))
    for _ in range(3):
        run.step()
    run.engine.add(Request("medium", PROMPTS["medium"], SamplingParams(max_tokens=25, temperature=0.0)))
    run.run()
    assert run.tokens["long"] == reference(model, PROMPTS["long"], 40)
    assert run.tokens["short"] == reference(model, PROMPTS["short"], 7)
    assert run.tokens["medium"] == reference(model, PROMPTS["medium"], 25)
    assert all(reason == "length" for reason in run.finish.values())
    assert run.engine.num_used_blocks() == 0
    extra = run.engine.stats.extra
    assert extra["spec_draft_tokens"] > 0
    if make == "bigram":
        assert extra["spec_tokens_per_step"] > 1.5 and extra["spec_acceptance_rate"] > 0.3


def test_max_tokens_is_never_exceeded_by_an_accepted_run(model):
    run = Collector(spec_engine(model))
    for n in range(1, 9):
        run.engine.add(Request(f"n{n}", PROMPTS["long"], SamplingParams(max_tokens=n, temperature=0.0)))
    run.run()
    for n in range(1, 9):
        assert run.tokens[f"n{n}"] == reference(model, PROMPTS["long"], n) and run.finish[f"n{n}"] == "length"
    assert run.engine.num_used_blocks() == 0


def test_stop_token_inside_an_accepted_run_stops_there_and_extend_is_exact(model):
    """Also: rejected drafts' KV is never counted as cached (the prefill count after `extend`)."""
    prompt = PROMPTS["medium"]
    stop_at = first_new_position(reference(model, prompt, 30)[3:]) + 3  # late enough to fall inside a verify step
    engine = spec_engine(model)

    def draft_blocks_released() -> None:
        assert len(engine._seqs["a"].block_table) == engine.block_manager.num_blocks_for(len(prompt) + stop_at + 1)

    stop_then_extend(engine, model, stop_at, 30, SamplingParams(max_tokens=20, temperature=0.0), on_pause=draft_blocks_released)
    assert engine.num_used_blocks() == 0


def test_aborts_mid_flight_free_everything_and_others_stay_exact(model):
    engine = spec_engine(model)
    run = Collector(engine)
    for name, prompt in PROMPTS.items():
        for i in range(2):
            engine.add(Request(f"{name}{i}", prompt, SamplingParams(max_tokens=30, temperature=0.0)))
    run.step()
    run.step()
    engine.abort("long0")
    engine.abort("short1")
    run.step()
    engine.abort("medium0")
    run.run()
    assert run.tokens["long1"] == reference(model, PROMPTS["long"], 30)
    assert run.tokens["medium1"] == reference(model, PROMPTS["medium"], 30)
    assert run.tokens["short0"] == reference(model, PROMPTS["short"], 30)
    assert engine.num_used_blocks() == 0
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks - 1


def test_memory_pressure_and_context_limit_with_drafts(model):
    engine = spec_engine(model, num_kv_blocks=10)
    run = Collector(engine)
    prompts = {f"p{i}": PROMPTS["long"][i:] + (i,) for i in range(3)}
    for name, prompt in prompts.items():
        engine.add(Request(name, prompt, SamplingParams(max_tokens=30, temperature=0.0)))
    run.run()
    for name, prompt in prompts.items():
        assert run.tokens[name] == reference(model, prompt, 30), name
    assert engine.num_used_blocks() == 0
    short = tiny_model("llama", max_position_embeddings=16)
    run = Collector(NativeEngine(short, drafter=bigram_drafter(short)))
    run.engine.add(Request("fits", tuple(range(40, 50)), SamplingParams(max_tokens=100, temperature=0.0)))
    run.run()
    assert run.finish["fits"] == "length" and len(run.tokens["fits"]) == 7


# -- sampling through the engine ---------------------------------------------------------------


def sampled_tokens(model, drafter, extra_requests: int, seed: int) -> list[int]:
    engine = NativeEngine(model, drafter=drafter)
    for i in range(extra_requests):
        engine.add(Request(f"other-{i}", list(PROMPTS.values())[i % 3] + (i,), SamplingParams(max_tokens=8 + i, temperature=1.0, seed=100 + i)))
    engine.add(Request("x", PROMPTS["medium"], SamplingParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=seed)))
    run = Collector(engine)
    run.run()
    return run.tokens["x"]


def test_sampled_seed_gives_the_same_tokens_alone_or_in_a_batch(model):
    drafter = bigram_drafter(model)
    alone = sampled_tokens(model, drafter, 0, seed=7)
    assert sampled_tokens(model, drafter, 8, seed=7) == alone
    assert sampled_tokens(model, drafter, 0, seed=8) != alone


def exact_joint(model, prompt: tuple[int, ...], params: SamplingParams, depth: int) -> dict[tuple[int, ...], float]:
    """P(first `depth` generated tokens) under the model's warped distribution, by enumeration."""
    t, p = torch.tensor(params.temperature), torch.tensor(params.top_p)
    joint: dict[tuple[int, ...], float] = {(): 1.0}
    for _ in range(depth):
        grown = {}
        for prefix, mass in joint.items():
            with torch.inference_mode():
                logits = model(torch.tensor([prompt + prefix])).logits[0, -1]
            probs = warp(logits, t, p)
            for token in probs.nonzero().flatten().tolist():
                grown[prefix + (token,)] = mass * probs[token].item()
        joint = grown
    return joint


def test_sampled_output_has_the_models_distribution():
    model = tiny_model("qwen2")
    prompt = PROMPTS["short"]
    params = dict(max_tokens=3, temperature=0.8, top_p=0.7)
    expected = exact_joint(model, prompt, SamplingParams(**params), 3)
    # The bigram drafter proposes the greedy continuation with q(draft) about 0.97: wrong
    # acceptance (e.g. always keeping drafts) would move most of the mass onto it.
    n = 6000
    engine = NativeEngine(model, config=EngineConfig(max_num_seqs=n, max_model_len=32), drafter=bigram_drafter(model))
    for i in range(n):
        engine.add(Request(str(i), prompt, SamplingParams(**params, seed=i)))
    run = Collector(engine)
    run.run()
    counts: dict[tuple[int, ...], int] = {}
    for tokens in run.tokens.values():
        counts[tuple(tokens)] = counts.get(tuple(tokens), 0) + 1
    support = set(expected) | set(counts)
    tv = 0.5 * sum(abs(counts.get(k, 0) / n - expected.get(k, 0.0)) for k in support)
    assert tv < tv_tolerance(list(expected.values()), n), (tv, len(expected))
    assert engine.stats.extra["spec_accepted_tokens"] > 0.2 * n  # drafts were kept, not only rejected
    assert engine.num_used_blocks() == 0
