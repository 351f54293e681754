"""Tool-integrated reasoning: the model's code runs in the sandbox mid-generation.

Scripted samples (the replay engine's machinery) call code; the real sandbox runs it; the real
output goes back into the sample. Run: python -m pytest tests/solver/test_tool_calls.py -q
"""

import json
import time
from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxLimits
from solver.config import SolverConfig, ToolConfig
from solver.engines.replay import problem_and_index, replay_engine
from solver.engines.scripted import ScriptedEngine
from solver.orchestrator import Orchestrator
from solver.problems import Problem, read_problems
from solver.tokenizer import byte_tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TOKENIZER = byte_tokenizer()
PROBLEM = Problem("p", "What is 6 times 7?", 42)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(max_workers=8, limits=SandboxLimits(timeout_s=5, max_output_chars=200)) as sb:
        yield sb


class RecordingTools:
    """The real sandbox, with a record of the sessions the solver closed."""

    def __init__(self, sandbox):
        self.sandbox, self.closed, self.submitted = sandbox, [], []

    def submit(self, session_id, code, timeout_s):
        self.submitted.append(session_id)
        return self.sandbox.submit(session_id, code, timeout_s)

    def close_session(self, session_id):
        self.closed.append(session_id)
        self.sandbox.close_session(session_id)


def call(code):
    return f"<tool_call>\n{code}\n</tool_call>"


def solve(completions, tools, tokens_per_step=4, limits=None, allowance_s=None, **config):
    config.setdefault("consensus", None)
    config.setdefault("num_samples", len(completions))
    engine = ScriptedEngine(TOKENIZER, lambda r: completions[problem_and_index(r.request_id)[1]], tokens_per_step)
    orchestrator = Orchestrator(engine, TOKENIZER, SolverConfig(tools=ToolConfig(**(limits or {})), **config), tools)
    return orchestrator.solve(PROBLEM, allowance_s), engine


def test_seed_transcript_replays_with_the_code_really_running(sandbox, tmp_path):
    # The file's recorded output is replaced by a wrong one: what the model reads must be the real one.
    record = json.loads((FIXTURES / "seed_bases.jsonl").read_text())
    record["completion"] = record["completion"].replace("Found base: 21\n", "Found base: 13\n")
    replay_file = tmp_path / "replay.jsonl"
    replay_file.write_text(json.dumps(record) + "\n")
    problem = read_problems(FIXTURES / "seed_bases.csv")[0]
    engine = replay_engine(replay_file, TOKENIZER)
    orchestrator = Orchestrator(engine, TOKENIZER, SolverConfig(num_samples=2, consensus=None), sandbox)
    result = orchestrator.solve(problem)
    assert result.answer == 70 and result.is_correct
    for sample in result.record()["samples"]:
        (tool_call,) = sample["tool_calls"]
        assert tool_call["status"] == "ok"
        assert tool_call["output"] == "\n```output\nFound base: 21\nFound base: 49\nSum: 70\nFinal Result: 70\n```\n"
        assert "valid_bases" in tool_call["code"] and tool_call["wall_s"] > 0
        assert "Found base: 13" not in sample["text"]
        assert "</tool_call>\n```output\nFound base: 21\n" in sample["text"]


def test_state_persists_across_calls_of_one_sample(sandbox):
    completion = call("x = 6 * 7") + " then " + call("print(x)") + " so \\boxed{42}"
    result, _ = solve([completion], sandbox)
    outputs = [c.output for c in result.samples[0].tool_calls]
    assert outputs == ["\n```output\n```\n", "\n```output\n42\n```\n"]
    assert result.answer == 42


def test_error_traceback_is_fed_back(sandbox):
    result, _ = solve([call("1 / 0") + " \\boxed{1}"], sandbox)
    (tool_call,) = result.samples[0].tool_calls
    assert tool_call.status == "error"
    assert "Traceback (most recent call last):" in tool_call.output and "ZeroDivisionError: division by zero" in tool_call.output
    assert "sandbox" not in tool_call.output


def test_timeout_inside_a_tool_call_is_reported_and_the_sample_goes_on(sandbox):
    result, _ = solve([call("import time; time.sleep(30)") + " \\boxed{3}"], sandbox, limits={"timeout_s": 0.5})
    (tool_call,) = result.samples[0].tool_calls
    assert tool_call.status == "timeout"
    assert "Execution timed out after 0.5 seconds" in tool_call.output
    assert tool_call.wall_s < 5
    assert result.answer == 3


def test_calls_beyond_the_limit_are_refused_in_the_text_and_the_sample_continues(sandbox):
    completion = call("print('a')") + call("print('b')") + call("print('c')") + " \\boxed{5}"
    result, _ = solve([completion], sandbox, limits={"max_calls": 2})
    calls = result.samples[0].tool_calls
    assert [c.status for c in calls] == ["ok", "ok", "skipped"]
    assert "used all your code executions" in calls[2].output
    assert "c\n" not in calls[2].output
    assert result.samples[0].finish_reason == "stop" and result.answer == 5


def test_output_is_cut_to_the_character_limit(sandbox):
    result, _ = solve([call("print('z' * 100_000)") + " \\boxed{1}"], sandbox)
    output = result.samples[0].tool_calls[0].output
    assert "<output cut>" in output
    assert len(output) < 400


def test_unclosed_tool_call_runs_nothing_and_ends_at_the_token_limit(sandbox):
    result, _ = solve(["<tool_call>\nprint(1)\n" + "x" * 500], sandbox, max_new_tokens=100)
    assert result.samples[0].finish_reason == "length"
    assert result.samples[0].tool_calls == []


@pytest.mark.parametrize("completion", [call("   "), "closing only </tool_call>"])
def test_empty_or_unopened_call_gets_an_explanation_not_a_crash(sandbox, completion):
    result, _ = solve([completion + " \\boxed{2}"], sandbox)
    (tool_call,) = result.samples[0].tool_calls
    assert tool_call.status == "empty" and "No code found" in tool_call.output
    assert result.answer == 2


def test_fences_and_fake_output_inside_the_tags_are_handled(sandbox):
    completion = "<tool_call>\n```python\nprint(6 * 7)\n```\n```output\n41\n```\n</tool_call> \\boxed{42}"
    result, _ = solve([completion], sandbox)
    (tool_call,) = result.samples[0].tool_calls
    assert tool_call.status == "ok" and tool_call.output == "\n```output\n42\n```\n"


def test_fake_output_written_outside_a_call_is_just_text(sandbox):
    result, _ = solve(["I ran it:\n```output\n42\n```\n \\boxed{42}"], sandbox)
    assert result.samples[0].tool_calls == [] and result.answer == 42


def test_tool_tokens_are_counted_apart_from_generated_tokens(sandbox):
    completion = call("print(12345)") + " \\boxed{7}"
    result, engine = solve([completion], sandbox)
    sample = result.samples[0]
    output_tokens = len(TOKENIZER.encode("\n```output\n12345\n```\n", add_special_tokens=False))
    assert sample.num_tool_tokens == output_tokens == sample.tool_calls[0].num_tokens
    assert sample.num_generated_tokens == len(sample.token_ids) - output_tokens
    # the continuation prefilled only the appended output, not the whole text again
    prompt_tokens = len(TOKENIZER.encode(TOKENIZER.apply_chat_template([{"role": "system", "content": ""}, {"role": "user", "content": "x"}], tokenize=False)))
    assert engine.num_prefill_tokens < prompt_tokens + 200 + output_tokens


def test_a_sample_waiting_for_code_does_not_block_the_others(sandbox):
    slow = call("import time; time.sleep(1.0)") + " \\boxed{1}"
    fast = "y" * 400 + " \\boxed{2}"
    result, _ = solve([slow, fast], sandbox, tokens_per_step=1)
    assert result.samples[1].finished_s < result.samples[0].finished_s
    assert result.samples[0].finished_s >= 1.0
    assert result.samples[1].finished_s < 1.0 + 0.5  # it did not wait for the sleep to end


def test_early_stop_cancels_pending_calls_and_closes_their_sessions(sandbox):
    tools = RecordingTools(sandbox)
    slow = call("import time; time.sleep(20)") + " \\boxed{1}"
    fast = "y" * 200 + "\\boxed{2}"  # finishes after the slow samples started their calls
    started = time.monotonic()
    result, engine = solve([fast, slow, slow], tools, stop_after=1)
    assert time.monotonic() - started < 5
    assert result.stop_reason == "first_k"
    assert [s.finish_reason for s in result.samples] == ["stop", "aborted", "aborted"]
    assert set(tools.closed) == {"p#1", "p#2"}
    assert {"p#1", "p#2"} <= set(engine.aborted)
    assert sandbox.execute("p#1", "print('fresh')").stdout == "fresh\n"  # the old session is gone


def test_deadline_cancels_pending_calls(sandbox):
    tools = RecordingTools(sandbox)
    result, _ = solve([call("import time; time.sleep(20)")], tools, allowance_s=0.5)
    assert result.stop_reason == "deadline"
    assert result.wall_s < 3
    assert tools.closed == ["p#0"]


def test_tokenizers_without_a_single_tool_token_turn_tools_off(sandbox):
    tokenizer = byte_tokenizer(tool_tokens=False)
    engine = ScriptedEngine(tokenizer, lambda r: call("print(1)") + " \\boxed{4}")
    orchestrator = Orchestrator(engine, tokenizer, SolverConfig(num_samples=1, consensus=None), sandbox)
    assert not orchestrator.tools_active
    result = orchestrator.solve(PROBLEM)
    assert result.samples[0].tool_calls == [] and result.answer == 4


class FakeToolsLosingState:
    """Fake sandbox (test equipment): every call times out and reports its state lost."""

    def submit(self, session_id, code, timeout_s):
        import concurrent.futures

        from sandbox import ExecutionResult

        future = concurrent.futures.Future()
        future.set_result(ExecutionResult("timeout", stdout="partial\n", wall_s=timeout_s, state_lost=True))
        return future

    def close_session(self, session_id):
        pass


def test_lost_state_is_told_to_the_model():
    result, _ = solve([call("x = 1") + " \\boxed{1}"], FakeToolsLosingState(), limits={"timeout_s": 2})
    output = result.samples[0].tool_calls[0].output
    assert output.startswith("\n```output\npartial\nExecution timed out after 2 seconds\n")
    assert "were lost; define them again" in output
