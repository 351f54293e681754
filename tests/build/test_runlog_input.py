"""The solver's run logs train the drafter directly, through the command line, end to end."""

import json

from build.drafter.export import load_drafter


def test_drafter_trains_from_a_run_log_and_exports(cli, jsonl, runlog, tmp_path, model_dir):
    log = jsonl(tmp_path / "submission.csv.runlog.jsonl",
                runlog([(f"What is {i}+{i}?", [f"{i}+{i}={2 * i}, so \\boxed{{{2 * i}}}."] * 2) for i in range(6)]))
    status, out, err = cli("drafter", "train", "--model", model_dir, "--data", log, "--output", tmp_path / "ckpt",
                           "--num-epochs", 2, "--max-steps", 4, "--grad-accum-steps", 1, "--batch-size", 4, "--log-every", 2, "--device", "cpu")
    assert status == 0, err
    assert "drafter train: 12 examples, 4 steps on cpu (torch.float32)" in out
    training = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert training["num_examples"] == 12 and training["final"]["step"] == 4
    assert {"loss", "redrafter0_top1", "redrafter2_top3", "redrafter1_loss"} <= set(training["final"])
    assert [json.loads(line)["step"] for line in (tmp_path / "ckpt" / "metrics.jsonl").read_text().splitlines()] == [2, 4]

    status, _, err = cli("drafter", "export", "--checkpoint", tmp_path / "ckpt", "--output", tmp_path / "drafter")
    assert status == 0, err
    drafter = load_drafter(tmp_path / "drafter")
    assert (drafter.config.hidden_size, drafter.config.vocab_size, drafter.config.num_draft_tokens) == (64, 261, 3)

    status, out, _ = cli("drafter", "train", "--model", model_dir, "--data", log, "--output", tmp_path / "ckpt",
                         "--num-epochs", 2, "--max-steps", 4, "--grad-accum-steps", 1, "--batch-size", 4, "--log-every", 2, "--device", "cpu")
    assert status == 0 and "skipping" in out
