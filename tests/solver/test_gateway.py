"""Gateway mode: one problem per call, shuffled, under a global time budget, logged as it goes.

Run: python -m pytest tests/solver/test_gateway.py -q
"""

import json
import random
import sys
import types

import polars as pl
import pytest

from solver import gateway
from solver.budget import BudgetPolicy
from solver.config import SolverConfig, ToolConfig
from solver.engines.scripted import ScriptedEngine
from solver.gateway import Gateway, GatewayError, make_predict, run_local_gateway, serve
from solver.orchestrator import Orchestrator
from solver.problems import Problem
from solver.runlog import RunLog
from solver.tokenizer import byte_tokenizer

TOKENIZER = byte_tokenizer()
NUM_PROBLEMS = 8


def orchestrator():
    """Every sample answers the number that ends the problem text, times 3."""

    def script(request):
        text = TOKENIZER.decode(request.prompt_token_ids)
        number = int(text.split("problem number ")[-1].split("<")[0].strip())
        return f"so \\boxed{{{3 * number}}}"

    config = SolverConfig(num_samples=2, consensus=None, tools=ToolConfig(enabled=False), fallback_answer=999)
    return Orchestrator(ScriptedEngine(TOKENIZER, script, tokens_per_step=8), TOKENIZER, config)


@pytest.fixture
def problems_csv(tmp_path):
    path = tmp_path / "reference.csv"
    rows = [f"q{i},problem number {i},{3 * i}" for i in range(NUM_PROBLEMS)]
    path.write_text("id,problem,answer\n" + "\n".join(rows) + "\n")
    return path


class Recorder:
    """Wraps predict: the ids in call order, and how many calls ran at once (must stay 1)."""

    def __init__(self, predict):
        self.predict, self.seen, self.active, self.most_active = predict, [], 0, 0

    def __call__(self, id_, question, *others):
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        assert isinstance(id_, pl.Series) and len(id_) == 1 and len(question) == 1
        self.seen.append(id_.item())
        try:
            return self.predict(id_, question, *others)
        finally:
            self.active -= 1


def test_stand_in_serves_a_shuffled_file_one_problem_at_a_time(problems_csv, tmp_path):
    log = RunLog(tmp_path / "gateway.runlog.jsonl")
    predict = Recorder(make_predict(orchestrator(), log, BudgetPolicy(), num_problems=NUM_PROBLEMS))
    submission = run_local_gateway(predict, problems_csv, seed=3, out_dir=tmp_path)

    file_order = [f"q{i}" for i in range(NUM_PROBLEMS)]
    shuffled = list(range(NUM_PROBLEMS))
    random.Random(3).shuffle(shuffled)
    assert predict.seen == [file_order[i] for i in shuffled] != file_order
    assert predict.most_active == 1
    expected = pl.DataFrame({"id": predict.seen, "answer": [3 * int(pid[1:]) for pid in predict.seen]})
    assert submission.equals(expected)
    assert pl.read_csv(tmp_path / "submission.csv", schema_overrides={"id": pl.String}).equals(expected)
    assert pl.read_parquet(tmp_path / "submission.parquet").equals(expected)
    records = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["run"] + ["problem"] * NUM_PROBLEMS
    assert [r["problem_id"] for r in records[1:]] == predict.seen
    assert all(r["is_correct"] for r in records[1:])  # the reference's answer column reached the log


@pytest.mark.parametrize(
    "id_, question",
    [
        ("q5", "problem number 5"),
        (pl.Series("id", ["q5"]), pl.Series("problem", ["problem number 5"])),
        (pl.DataFrame({"id": ["q5"]}), pl.DataFrame({"problem": ["problem number 5"]})),
    ],
    ids=["strings", "series", "dataframes"],
)
def test_predict_accepts_strings_series_and_dataframes(tmp_path, id_, question):
    answer = make_predict(orchestrator(), RunLog(tmp_path / "log.jsonl"), BudgetPolicy())(id_, question)
    assert answer.equals(pl.DataFrame({"id": ["q5"], "answer": [15]}))
    assert answer.schema == {"id": pl.String, "answer": pl.Int64}


def test_predict_rejects_more_than_one_row(tmp_path):
    predict = make_predict(orchestrator(), RunLog(tmp_path / "log.jsonl"), BudgetPolicy())
    with pytest.raises(ValueError, match="one row"):
        predict(pl.Series(["a", "b"]), pl.Series(["x", "y"]))


class FakeOrchestrator:
    """Records the allowances it is given; each solve takes `cost_s` on a fake clock."""

    def __init__(self, clock, cost_s, fail_on=()):
        self.clock, self.cost_s, self.fail_on, self.allowances = clock, cost_s, fail_on, []
        self.config = SolverConfig(fallback_answer=999)

    def solve(self, problem, allowance_s):
        self.allowances.append(allowance_s)
        self.clock.now += self.cost_s
        if problem.id in self.fail_on:
            raise RuntimeError("engine exploded")
        return types.SimpleNamespace(record=lambda: {"kind": "problem", "problem_id": problem.id, "answer": 1, "error": None})


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_time_budget_is_shared_over_the_announced_problems_and_then_falls_back(tmp_path):
    clock = FakeClock()
    clock.now = 10.0  # the model took 10 s to load
    fake = FakeOrchestrator(clock, cost_s=20.0)
    policy = BudgetPolicy(time_limit_s=110.0, margin_s=0.0, max_extra_s=0.0)
    serving = Gateway(fake, RunLog(tmp_path / "log.jsonl"), policy, num_problems=4, start_s=0.0, clock=clock)
    answers = [serving.solve(Problem(f"q{i}", "text")) for i in range(6)]
    assert fake.allowances == [25.0, 25.0, 25.0, 25.0, 20.0]  # (110 - 10) / 4 each, then what is left
    assert answers == [1, 1, 1, 1, 1, 999]  # the limit passed at 110 s: fallback without solving


def test_a_solver_failure_is_logged_and_answered_with_the_fallback(tmp_path):
    clock = FakeClock()
    log = RunLog(tmp_path / "log.jsonl")
    serving = Gateway(FakeOrchestrator(clock, 1.0, fail_on={"bad"}), log, BudgetPolicy(), clock=clock)
    assert serving.predict("bad", "text")["answer"].item() == 999
    failed = log.read()[-1]
    assert failed["problem_id"] == "bad" and "engine exploded" in failed["error"]


def test_stand_in_rejects_a_wrong_response(problems_csv, tmp_path):
    with pytest.raises(GatewayError, match="answered for id"):
        run_local_gateway(lambda id_, question, *others: pl.DataFrame({"id": ["nope"], "answer": [1]}), problems_csv, seed=0, out_dir=tmp_path)
    with pytest.raises(GatewayError, match="one-row polars DataFrame"):
        run_local_gateway(lambda id_, question, *others: 5, problems_csv, seed=0, out_dir=tmp_path)
    assert not (tmp_path / "submission.csv").exists()


def test_stand_in_enforces_the_run_deadline(problems_csv, tmp_path):
    clock = FakeClock()

    def slow_predict(id_, question, *others):
        clock.now += 100.0
        return pl.DataFrame({"id": [id_.item()], "answer": [0]})

    with pytest.raises(GatewayError, match="over its 250 s limit"):
        run_local_gateway(slow_predict, problems_csv, seed=0, out_dir=tmp_path, time_limit_s=250.0, clock=clock)


def test_serve_uses_the_stand_in_without_kaggle_evaluation(problems_csv, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaggle_evaluation", None)  # import fails
    serve(make_predict(orchestrator(), RunLog(tmp_path / "log.jsonl"), BudgetPolicy()), problems_csv, seed=1, out_dir=tmp_path)
    assert pl.read_csv(tmp_path / "submission.csv").height == NUM_PROBLEMS


@pytest.mark.parametrize("rerun, expected_call", [(None, ("run_local_gateway", ("reference.csv",))), ("1", ("serve",))])
def test_serve_uses_kaggles_inference_server_when_present(monkeypatch, rerun, expected_call):
    calls = []

    class AIMO2InferenceServer:
        def __init__(self, predict):
            calls.append(("init", predict))

        def serve(self):
            calls.append(("serve",))

        def run_local_gateway(self, data_paths):
            calls.append(("run_local_gateway", data_paths))

    package = types.ModuleType("kaggle_evaluation")
    module = types.ModuleType("kaggle_evaluation.aimo_2_inference_server")
    module.AIMO2InferenceServer = AIMO2InferenceServer
    monkeypatch.setitem(sys.modules, "kaggle_evaluation", package)
    monkeypatch.setitem(sys.modules, "kaggle_evaluation.aimo_2_inference_server", module)
    if rerun is None:
        monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    else:
        monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", rerun)
    predict = object()
    gateway.serve(predict, "reference.csv")
    assert calls == [("init", predict), expected_call]
