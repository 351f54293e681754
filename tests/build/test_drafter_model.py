import torch
from torch.nn import functional as F

from build.drafter.model import Drafter, DrafterConfig, num_parameters


def test_recurrent_state_is_silu_of_w_embedding_plus_u_state():
    torch.manual_seed(0)
    drafter = Drafter(DrafterConfig.for_base(hidden_size=8, vocab_size=11))
    state, embeds = torch.randn(8), torch.randn(8)
    expected = F.silu(embeds @ drafter.rnn_w.weight.T + state @ drafter.rnn_u.weight.T + drafter.rnn_u.bias)
    torch.testing.assert_close(drafter.next_state(state, embeds), expected)
    assert drafter.rnn_w.bias is None and drafter.rnn_u.bias is not None


def test_head_is_residual_silu_blocks_over_context_then_state():
    torch.manual_seed(0)
    drafter = Drafter(DrafterConfig.for_base(hidden_size=4, vocab_size=7, num_draft_layers=2))
    context, state = torch.randn(4), torch.randn(4)
    x = torch.cat([context, state])
    for block in drafter.lm_head[:2]:
        x = x + F.silu(block.linear(x))
    torch.testing.assert_close(drafter.logits(context, state), x @ drafter.lm_head[2].weight.T)
    assert drafter.lm_head[2].bias is None and not hasattr(drafter, "input_proj")


def test_teacher_forced_state_k_at_t_has_consumed_tokens_t_plus_1_to_t_plus_1_plus_k():
    torch.manual_seed(0)
    drafter = Drafter(DrafterConfig.for_base(hidden_size=6, vocab_size=5))
    embeds = torch.randn(1, 7, 6)
    states = drafter.teacher_forced_states(embeds, num_draft_tokens=3)
    t = 2
    state = torch.zeros(6)
    for k in range(3):
        state = drafter.next_state(state, embeds[0, t + 1 + k])
        torch.testing.assert_close(states[k][0, t], state)


def test_input_proj_exists_only_when_exit_dim_is_not_twice_hidden():
    assert not hasattr(Drafter(DrafterConfig.for_base(8, 10)), "input_proj")
    assert Drafter(DrafterConfig.for_base(8, 10, exit_dim=12)).input_proj.weight.shape == (12, 16)


def test_qwen25_14b_drafter_size_matches_the_reference_numbers():
    config = DrafterConfig.for_base(hidden_size=5120, vocab_size=152064, num_draft_layers=2)
    assert config.exit_dim == 10240 and not config.has_input_proj
    head = 152064 * 10240
    assert round(head / 1e9, 2) == 1.56  # final projection alone: ~1.56 B parameters, ~3.1 GB bf16
    assert num_parameters(config) == head + 2 * (10240 * 10240 + 10240) + 2 * 5120 * 5120 + 5120
    assert round(num_parameters(config) * 2 / 1e9, 2) == 3.64  # whole drafter in bf16, GB
