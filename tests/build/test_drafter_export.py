import json

import pytest
import torch
from safetensors import safe_open

from build.drafter.export import expected_shapes, load_drafter, save_drafter
from build.drafter.model import Drafter, DrafterConfig
from build.plan import BuildError


@pytest.mark.parametrize(
    "hidden, vocab, exit_dim, layers, rnn, table",
    [
        (64, 261, 128, 2, True, {
            "lm_head.0.linear.weight": (128, 128), "lm_head.0.linear.bias": (128,),
            "lm_head.1.linear.weight": (128, 128), "lm_head.1.linear.bias": (128,),
            "lm_head.2.weight": (261, 128),
            "rnn_u.weight": (64, 64), "rnn_u.bias": (64,), "rnn_w.weight": (64, 64),
        }),
        (32, 100, 48, 3, True, {
            "input_proj.weight": (48, 64), "input_proj.bias": (48,),
            "lm_head.0.linear.weight": (48, 48), "lm_head.0.linear.bias": (48,),
            "lm_head.1.linear.weight": (48, 48), "lm_head.1.linear.bias": (48,),
            "lm_head.2.linear.weight": (48, 48), "lm_head.2.linear.bias": (48,),
            "lm_head.3.weight": (100, 48),
            "rnn_u.weight": (32, 32), "rnn_u.bias": (32,), "rnn_w.weight": (32, 32),
        }),
        (16, 50, 32, 1, False, {
            "lm_head.0.linear.weight": (32, 32), "lm_head.0.linear.bias": (32,), "lm_head.1.weight": (50, 32),
        }),
    ],
)
def test_export_writes_exactly_the_names_and_shapes_trtllm_reads(tmp_path, hidden, vocab, exit_dim, layers, rnn, table):
    config = DrafterConfig(vocab_size=vocab, hidden_size=hidden, exit_dim=exit_dim, num_draft_layers=layers, rnn=rnn, num_draft_tokens=3)
    assert expected_shapes(config) == table
    save_drafter(Drafter(config), tmp_path, torch.bfloat16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    with safe_open(tmp_path / "model.safetensors", framework="pt") as weights:
        assert {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()} == table
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.bfloat16}
    assert json.loads((tmp_path / "config.json").read_text()) == {
        "model_type": "recurrent_drafting_drafter", "hidden_size": hidden, "exit_dim": exit_dim,
        "num_draft_layers": layers, "rnn": rnn, "vocab_size": vocab, "num_lookback_tokens": -1,
        "torch_dtype": "bfloat16", "drafter_predict_n_tokens": 3,
    }


def test_export_round_trips_through_the_loader(tmp_path):
    torch.manual_seed(0)
    drafter = Drafter(DrafterConfig(vocab_size=40, hidden_size=8, exit_dim=12, num_draft_layers=2, num_draft_tokens=3))
    save_drafter(drafter, tmp_path, torch.bfloat16)
    loaded = load_drafter(tmp_path)
    assert loaded.config == drafter.config
    for name, tensor in drafter.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor.to(torch.bfloat16)), name
    context, state = torch.randn(8), torch.randn(8)
    torch.testing.assert_close(loaded.float().logits(context, state), drafter.to(torch.bfloat16).float().logits(context, state))


def test_loader_names_the_file_and_tensor_it_refuses(tmp_path):
    from safetensors.torch import load_file, save_file

    save_drafter(Drafter(DrafterConfig.for_base(8, 20)), tmp_path, torch.float32)
    weights = load_file(tmp_path / "model.safetensors")
    weights["rnn_u.weight"] = torch.zeros(8, 9)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(BuildError) as error:
        load_drafter(tmp_path)
    assert str(error.value) == f"{tmp_path / 'model.safetensors'}: tensor rnn_u.weight has shape (8, 9), expected (8, 8)."
    weights["extra.weight"] = weights.pop("rnn_w.weight")
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(BuildError, match=r"missing: \['rnn_w.weight'\]; unexpected: \['extra.weight'\]"):
        load_drafter(tmp_path)


def test_export_step_casts_a_trained_checkpoint_to_bfloat16(cli, tmp_path):
    torch.manual_seed(0)
    drafter = Drafter(DrafterConfig.for_base(8, 20, num_draft_tokens=3))
    save_drafter(drafter, tmp_path / "ckpt", torch.float32)
    status, out, err = cli("drafter", "export", "--checkpoint", tmp_path / "ckpt", "--output", tmp_path / "drafter")
    assert status == 0, err
    loaded = load_drafter(tmp_path / "drafter")
    assert next(loaded.parameters()).dtype == torch.bfloat16
    assert (tmp_path / "drafter" / "build_manifest.json").is_file()
