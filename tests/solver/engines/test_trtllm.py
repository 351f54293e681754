"""The `trtllm` backend against a FAKE `tensorrt_llm` (tests/solver/engines/fake_tensorrt_llm/).

The fake mirrors the executor bindings the adapter calls, rejects unknown keyword arguments and
streams scripted tokens. These tests show the adapter speaks that API; they do not show it ran
on real TensorRT-LLM.
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from solver.engines.base import Engine, Request, SamplingParams
from solver.engines.trtllm import (
    INSTALL_HINT,
    EngineUnavailableError,
    TrtllmConfigError,
    TrtllmEngine,
    TrtllmOptions,
    clamp_max_tokens,
    final_tokens,
    read_engine_spec,
    sampling_kwargs,
    stop_words,
    validate_run,
)
from solver.tokenizer import TOOL_CALL_END, byte_tokenizer

FAKE_ROOT = Path(__file__).parent / "fake_tensorrt_llm"
REPO_ROOT = Path(__file__).resolve().parents[3]

tokenizer = byte_tokenizer()
EOS = tokenizer.eos_token_id  # <|im_end|>
ENDOFTEXT = tokenizer.convert_tokens_to_ids("<|endoftext|>")
TOOL_END = tokenizer.convert_tokens_to_ids(TOOL_CALL_END)
STOPS = (EOS, ENDOFTEXT, TOOL_END)
PROMPT = tuple(range(10, 30))


# ---- fixtures ------------------------------------------------------------------------------------


def write_engine(
    path: Path,
    *,
    max_seq_len: int = 4096,
    max_input_len: int = 2048,
    max_batch_size: int = 16,
    tp_size: int = 1,
    redrafter: bool = False,
    greedy: bool | None = None,
    paged_context_fmha: bool = True,
    max_draft_len: int = 0,
) -> Path:
    """An engine directory whose config.json has the shape trtllm-build writes."""
    pretrained = {
        "architecture": "ReDrafterForQWenLM" if redrafter else "Qwen2ForCausalLM",
        "dtype": "bfloat16",
        "mapping": {"world_size": tp_size, "tp_size": tp_size, "pp_size": 1, "gpus_per_node": 8},
    }
    if redrafter:
        pretrained.update(redrafter_num_beams=1, redrafter_draft_len_per_beam=3, redrafter_is_rnn=True)
        if greedy is not None:
            pretrained["redrafter_greedy_search"] = greedy
    build = {
        "max_input_len": max_input_len,
        "max_seq_len": max_seq_len + max_draft_len,
        "max_batch_size": max_batch_size,
        "max_beam_width": 1,
        "max_num_tokens": 8192,
        "max_draft_len": max_draft_len,
        "speculative_decoding_mode": 16 if redrafter else 1,
        "plugin_config": {"use_paged_context_fmha": paged_context_fmha, "paged_kv_cache": True},
    }
    path.mkdir(parents=True, exist_ok=True)
    config = {"version": "1.2.1", "pretrained_config": pretrained, "build_config": build}
    (path / "config.json").write_text(json.dumps(config))
    (path / "rank0.engine").write_bytes(b"")
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def fake(monkeypatch):
    """Put the FAKE tensorrt_llm on the path for one test; remove every trace afterwards."""
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(FAKE_ROOT))
    module = importlib.import_module("tensorrt_llm.bindings.executor")
    assert importlib.import_module("tensorrt_llm").IS_FAKE
    module.reset_fake()
    for name in ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK"):
        monkeypatch.delenv(name, raising=False)
    yield module
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        del sys.modules[name]


def make_options(tmp_path: Path, tokenizer_dir: Path, **engine) -> TrtllmOptions:
    return TrtllmOptions(engine_dir=write_engine(tmp_path / "engine", **engine), tokenizer_dir=tokenizer_dir)


def make_engine(tmp_path, tokenizer_dir, fake, **engine) -> tuple[TrtllmEngine, object]:
    engine_ = TrtllmEngine(make_options(tmp_path, tokenizer_dir, **engine))
    return engine_, fake.executors[-1]


def params(**overrides) -> SamplingParams:
    values = dict(max_tokens=64, temperature=0.7, top_p=0.95, seed=0, stop_token_ids=STOPS)
    values.update(overrides)
    return SamplingParams(**values)


def script(fake, outputs: dict[int, list[int]]) -> None:
    """Tokens the fake model generates, by seed."""
    fake.model = lambda request: outputs[request.sampling_config.seed]


def run(engine: TrtllmEngine, max_steps: int = 100) -> dict[str, list]:
    """Step until idle; per request id, the list of deltas received."""
    seen: dict[str, list] = {}
    for _ in range(max_steps):
        if not engine.has_work():
            break
        for delta in engine.step():
            seen.setdefault(delta.request_id, []).append(delta)
    return seen


def tokens_of(deltas) -> list[int]:
    return [token for delta in deltas for token in delta.token_ids]


# ---- options and engine config -------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("kv_cache_free_gpu_memory_fraction", 0.0, "kv_cache_free_gpu_memory_fraction"),
        ("kv_cache_free_gpu_memory_fraction", 1.5, "kv_cache_free_gpu_memory_fraction"),
        ("max_batch_size", 0, "max_batch_size"),
        ("tensor_parallel_size", 0, "tensor_parallel_size"),
    ],
)
def test_options_reject_out_of_range_values(tmp_path, tokenizer_dir, field, value, message):
    with pytest.raises(TrtllmConfigError, match=message):
        TrtllmOptions(engine_dir=write_engine(tmp_path / "e"), tokenizer_dir=tokenizer_dir, **{field: value})


def test_options_need_an_engine_config_and_a_tokenizer(tmp_path, tokenizer_dir):
    with pytest.raises(TrtllmConfigError, match="no config.json; point it at the output directory"):
        TrtllmOptions(engine_dir=tmp_path, tokenizer_dir=tokenizer_dir)
    with pytest.raises(TrtllmConfigError, match="tokenizer_dir"):
        TrtllmOptions(engine_dir=write_engine(tmp_path / "e"), tokenizer_dir=tmp_path / "missing")
    with pytest.raises(TrtllmConfigError, match="holds no tokenizer; give tokenizer_dir"):
        TrtllmOptions(engine_dir=write_engine(tmp_path / "e"))


def test_tokenizer_dir_defaults_to_an_engine_dir_holding_the_tokenizer(tmp_path):
    engine_dir = write_engine(tmp_path / "e")
    tokenizer.save_pretrained(engine_dir)
    assert TrtllmOptions(engine_dir=engine_dir).tokenizer_dir == engine_dir


def test_options_defaults_and_paths(tmp_path, tokenizer_dir):
    options = TrtllmOptions(engine_dir=str(write_engine(tmp_path / "e")), tokenizer_dir=str(tokenizer_dir))
    assert isinstance(options.engine_dir, Path)
    assert options.kv_cache_free_gpu_memory_fraction == 0.9
    assert options.enable_chunked_context is True
    assert options.allow_identical_samples is False


def test_engine_spec_reads_trtllm_build_config(tmp_path):
    plain = read_engine_spec(
        write_engine(tmp_path / "a", max_seq_len=32000, tp_size=2, paged_context_fmha=False)
    )
    assert (plain.max_seq_len, plain.tp_size, plain.world_size) == (32000, 2, 2)
    assert not plain.is_redrafter and not plain.redrafter_greedy_search and not plain.paged_context_fmha
    # Speculative engines store max_seq_len + max_draft_len; only max_seq_len is usable.
    drafter = read_engine_spec(
        write_engine(tmp_path / "b", max_seq_len=32000, redrafter=True, max_draft_len=3)
    )
    assert drafter.max_seq_len == 32000 and drafter.is_redrafter
    assert drafter.redrafter_greedy_search  # field absent: convert_checkpoint.py's default, greedy
    sampling = read_engine_spec(write_engine(tmp_path / "c", redrafter=True, greedy=False))
    assert not sampling.redrafter_greedy_search


def test_engine_spec_names_a_malformed_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"pretrained_config": {}, "build_config": {}}))
    with pytest.raises(TrtllmConfigError, match="max_seq_len"):
        read_engine_spec(tmp_path)


# ---- missing library -----------------------------------------------------------------------------


def test_missing_tensorrt_llm_says_what_to_install(tmp_path, tokenizer_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # import tensorrt_llm now fails
    with pytest.raises(EngineUnavailableError) as caught:
        TrtllmEngine(make_options(tmp_path, tokenizer_dir))
    assert str(caught.value) == INSTALL_HINT
    assert "pip install tensorrt-llm==1.2.1 --extra-index-url https://pypi.nvidia.com" in INSTALL_HINT
    assert "Python 3.10 or 3.12" in INSTALL_HINT


def test_module_imports_without_tensorrt_llm():
    code = "import sys, solver.engines.trtllm; assert 'tensorrt_llm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_fake_rejects_misspelled_keyword(fake):
    with pytest.raises(TypeError):
        fake.Request([1, 2], 4, stop_word=[[3]])
    with pytest.raises(TypeError):
        fake.SamplingConfig(1, random_seed=3)
    with pytest.raises(TypeError):
        fake.KvCacheConfig(enable_kv_cache_reuse=True)


# ---- construction of executor config and requests ------------------------------------------------


def test_executor_config_has_block_reuse_and_chunked_context(tmp_path, tokenizer_dir, fake):
    engine, executor = make_engine(tmp_path, tokenizer_dir, fake)
    config = executor.executor_config
    assert isinstance(engine, Engine)
    assert engine.tokenizer.eos_token_id == engine.end_id == EOS
    assert executor.model_path == tmp_path / "engine"
    assert executor.model_type == fake.ModelType.DECODER_ONLY
    assert config.kv_cache_config.enable_block_reuse is True
    assert config.kv_cache_config.free_gpu_memory_fraction == 0.9
    assert config.enable_chunked_context is True
    assert config.max_beam_width == 1
    assert config.max_batch_size is None  # the engine's own
    assert config.gather_generation_logits is False


def test_requests_carry_seed_stops_budget_and_streaming(tmp_path, tokenizer_dir, fake):
    engine, executor = make_engine(tmp_path, tokenizer_dir, fake)
    for seed in range(4):
        engine.add(Request(f"s{seed}", PROMPT, params(seed=seed, max_tokens=100)))
    built = list(executor.enqueued.values())
    assert [r.sampling_config.seed for r in built] == [0, 1, 2, 3]
    for request in built:
        assert request.input_token_ids == list(PROMPT)
        assert request.max_tokens == 100
        assert request.streaming is True
        assert request.sampling_config.temperature == 0.7 and request.sampling_config.top_p == 0.95
        assert request.end_id == EOS
        assert request.stop_words == [[ENDOFTEXT], [TOOL_END]]
        output = request.output_config
        assert not output.return_log_probs
        assert not (output.return_generation_logits or output.return_context_logits)


@pytest.mark.parametrize(
    "sampling, expected",
    [
        (dict(temperature=0.0, seed=5), {"beam_width": 1, "top_k": 1, "seed": 5}),
        (dict(temperature=0.6, top_p=1.0, seed=3), {"beam_width": 1, "temperature": 0.6, "seed": 3}),
        (
            dict(temperature=1.0, top_p=0.9, seed=-1),
            {"beam_width": 1, "temperature": 1.0, "top_p": 0.9, "seed": 2**64 - 1},
        ),
    ],
)
def test_sampling_kwargs(sampling, expected):
    assert sampling_kwargs(params(**sampling)) == expected


@pytest.mark.parametrize(
    "stop_ids, end_id, expected",
    [
        ((1, 2, 3), 1, [[2], [3]]),
        ((3, 1, 3), 1, [[3]]),
        ((1,), 1, None),
        ((), 1, None),
    ],
)
def test_stop_words_exclude_the_end_id(stop_ids, end_id, expected):
    assert stop_words(stop_ids, end_id) == expected


@pytest.mark.parametrize(
    "prompt_len, max_tokens, max_seq_len, expected",
    [(100, 50, 1000, 50), (990, 50, 1000, 10), (1000, 50, 1000, 0), (1200, 50, 1000, 0)],
)
def test_clamp_max_tokens(prompt_len, max_tokens, max_seq_len, expected):
    assert clamp_max_tokens(prompt_len, max_tokens, max_seq_len) == expected


@pytest.mark.parametrize(
    "tokens, by_end_id, expected",
    [
        ([5, 6, 9], False, [5, 6, 9]),  # stop word kept as the last token
        ([5, 9, 7, 8], False, [5, 9]),  # tokens past the stop (a speculative step) dropped
        ([5, 6], True, [5, 6, 1]),  # EOS left out by the executor: restored
        ([5, 1], True, [5, 1]),
        ([], True, [1]),
    ],
)
def test_final_tokens(tokens, by_end_id, expected):
    assert final_tokens(tokens, by_end_id, frozenset({1, 9}), end_id=1) == expected


# ---- streaming and finishing ---------------------------------------------------------------------


def test_stream_yields_new_tokens_then_stop_with_stop_token(tmp_path, tokenizer_dir, fake):
    engine, _ = make_engine(tmp_path, tokenizer_dir, fake)
    script(fake, {0: [40, 41, 42, TOOL_END, 99], 1: [50, EOS, 98]})
    engine.add(Request("a", PROMPT, params(seed=0)))
    engine.add(Request("b", PROMPT, params(seed=1)))
    seen = run(engine)
    assert [d.token_ids for d in seen["a"]] == [(40,), (41,), (42,), (TOOL_END,)]
    assert [d.finish_reason for d in seen["a"]] == [None, None, None, "stop"]
    assert tokens_of(seen["b"]) == [50, EOS] and seen["b"][-1].finish_reason == "stop"
    assert not engine.has_work()
    assert engine.step() == []


def test_end_id_finish_ends_with_eos_even_if_executor_omits_it(tmp_path, tokenizer_dir, fake):
    fake.end_id_in_output = False
    engine, _ = make_engine(tmp_path, tokenizer_dir, fake)
    script(fake, {0: [40, EOS]})
    engine.add(Request("a", PROMPT, params()))
    seen = run(engine)
    assert tokens_of(seen["a"]) == [40, EOS]
    assert seen["a"][-1].finish_reason == "stop"


def test_length_finish(tmp_path, tokenizer_dir, fake):
    engine, _ = make_engine(tmp_path, tokenizer_dir, fake)
    script(fake, {0: list(range(40, 60))})
    engine.add(Request("a", PROMPT, params(max_tokens=5)))
    seen = run(engine)
    assert tokens_of(seen["a"]) == [40, 41, 42, 43, 44]
    assert seen["a"][-1].finish_reason == "length"
    with pytest.raises(ValueError, match="not paused"):
        engine.extend("a", (1,), params())


def test_multi_token_steps_arrive_in_one_delta(tmp_path, tokenizer_dir, fake):
    fake.tokens_per_step = 3  # like ReDrafter accepting several draft tokens per step
    engine, _ = make_engine(tmp_path, tokenizer_dir, fake)
    script(fake, {0: [40, 41, 42, 43, TOOL_END]})
    engine.add(Request("a", PROMPT, params()))
    seen = run(engine)
    assert [d.token_ids for d in seen["a"]] == [(40, 41, 42), (43, TOOL_END)]


# ---- aborts --------------------------------------------------------------------------------------


def test_abort_cancels_in_executor_and_silences_the_request(tmp_path, tokenizer_dir, fake):
    engine, executor = make_engine(tmp_path, tokenizer_dir, fake)
    script(fake, {0: list(range(40, 100)), 1: list(range(40, 100))})
    engine.add(Request("a", PROMPT, params(seed=0)))
    engine.add(Request("b", PROMPT, params(seed=1)))
    engine.step()
    engine.abort("a")
    assert executor.cancelled_ids == [1]  # the executor id of "a", cancelled at once
    later = [delta for _ in range(3) for delta in engine.step()]
    assert {delta.request_id for delta in later} == {"b"}
    engine.abort("a")  # idempotent
    engine.abort("never-added")
    assert executor.cancelled_ids == [1]


def test_early_stop_aborts_every_running_sample(tmp_path, tokenizer_dir, fake):
    engine, executor = make_engine(tmp_path, tokenizer_dir, fake)
    script(fake, {0: [40, EOS], 1: list(range(40, 100)), 2: list(range(40, 100)), 3: list(range(40, 100))})
    for seed in range(4):
        engine.add(Request(f"s{seed}", PROMPT, params(seed=seed)))
    finished = []
    while not finished:
        finished = [d.request_id for d in engine.step() if d.is_finished]
    assert finished == ["s0"]
    for request_id in ("s0", "s1", "s2", "s3"):  # the solver's early stop (or deadline)
        engine.abort(request_id)
    assert sorted(executor.cancelled_ids) == [2, 3, 4]  # s0 had already stopped: nothing to cancel
    assert not engine.has_work()
    assert engine.step() == []


# ---- continuation after a tool call --------------------------------------------------------------


def test_continuation_sends_full_history_and_reuses_the_prefix(tmp_path, tokenizer_dir, fake):
    engine, executor = make_engine(tmp_path, tokenizer_dir, fake)
    first = [40, 41, TOOL_END]
    tool_output = (60, 61, 62)
    outputs = iter([first + [99], [70, 71, EOS]])
    fake.model = lambda request: next(outputs)
    engine.add(Request("a", PROMPT, params(seed=4)))
    seen = run(engine)
    assert tokens_of(seen["a"]) == first and seen["a"][-1].finish_reason == "stop"
    assert not engine.has_work()  # paused requests do not count

    engine.extend("a", tool_output, params(seed=4, max_tokens=30))
    second_id = max(executor.enqueued)
    second = executor.enqueued[second_id]
    assert second.input_token_ids == list(PROMPT) + first + list(tool_output)
    assert second.max_tokens == 30 and second.sampling_config.seed == 4
    assert executor.executor_config.kv_cache_config.enable_block_reuse
    assert executor.reused_prefix_lengths[second_id] == len(PROMPT) + len(first)
    seen = run(engine)
    assert tokens_of(seen["a"]) == [70, 71, EOS] and seen["a"][-1].finish_reason == "stop"


# ---- failures are deltas -------------------------------------------------------------------------


def test_error_response_becomes_an_error_delta(tmp_path, tokenizer_dir, fake):
    engine, _ = make_engine(tmp_path, tokenizer_dir, fake)
    fake.model = lambda request: RuntimeError("CUDA OOM") if request.sampling_config.seed == 1 else [40, EOS]
    engine.add(Request("ok", PROMPT, params(seed=0)))
    engine.add(Request("bad", PROMPT, params(seed=1)))
    seen = run(engine)
    assert seen["bad"][-1].finish_reason == "error" and "CUDA OOM" in seen["bad"][-1].error
    assert seen["ok"][-1].finish_reason == "stop"


def test_refused_enqueue_becomes_an_error_delta(tmp_path, tokenizer_dir, fake):
    engine, _ = make_engine(tmp_path, tokenizer_dir, fake)
    fake.refuse_enqueue = lambda request: "input too long"
    engine.add(Request("a", PROMPT, params()))
    deltas = engine.step()
    assert len(deltas) == 1 and deltas[0].finish_reason == "error" and "input too long" in deltas[0].error
    assert not engine.has_work()


def test_cancellation_the_solver_did_not_ask_for_reports_aborted(tmp_path, tokenizer_dir, fake):
    engine, executor = make_engine(tmp_path, tokenizer_dir, fake)
    script(fake, {0: list(range(40, 100))})
    engine.add(Request("a", PROMPT, params()))
    engine.step()
    executor.cancel_request(1)  # e.g. the executor's own timeout
    (delta,) = engine.step()
    assert delta.finish_reason == "aborted" and "CANCELLED" in delta.error
    assert not engine.has_work()


def test_failed_executor_ends_every_live_request_without_raising(tmp_path, tokenizer_dir, fake, monkeypatch):
    engine, executor = make_engine(tmp_path, tokenizer_dir, fake)
    engine.add(Request("a", PROMPT, params(seed=0)))
    engine.add(Request("b", PROMPT, params(seed=1)))

    def broken(timeout=None):
        raise RuntimeError("NCCL error")

    monkeypatch.setattr(executor, "await_responses", broken)
    deltas = engine.step()
    assert {(d.request_id, d.finish_reason) for d in deltas} == {("a", "error"), ("b", "error")}
    assert all("NCCL error" in d.error for d in deltas)
    assert not engine.has_work()


def test_prompt_without_room_is_an_error_delta(tmp_path, tokenizer_dir, fake):
    engine, executor = make_engine(tmp_path, tokenizer_dir, fake, max_seq_len=20)
    engine.add(Request("a", PROMPT, params()))  # 20 prompt tokens, max_seq_len 20
    (delta,) = engine.step()
    assert delta.finish_reason == "error" and "max_seq_len of 20" in delta.error
    assert executor.enqueued == {}


def test_max_tokens_clamped_to_fit_max_seq_len(tmp_path, tokenizer_dir, fake, caplog):
    engine, executor = make_engine(tmp_path, tokenizer_dir, fake, max_seq_len=50, max_draft_len=3)
    with caplog.at_level(logging.WARNING, logger="solver.engines.trtllm"):
        engine.add(Request("a", PROMPT, params(max_tokens=100)))
        engine.add(Request("b", PROMPT, params(max_tokens=100, seed=1)))
    assert [r.max_tokens for r in executor.enqueued.values()] == [30, 30]
    assert len([r for r in caplog.records if "clamped" in r.getMessage()]) == 1
    assert engine.stats.extra["num_clamped_requests"] == 2


# ---- guards of a run -----------------------------------------------------------------------------


def test_greedy_redrafter_refuses_many_samples_with_the_rebuild_flag(tmp_path, tokenizer_dir):
    options = make_options(tmp_path, tokenizer_dir, redrafter=True, greedy=True)
    with pytest.raises(TrtllmConfigError, match="--redrafter_no_greedy_search") as caught:
        validate_run(options, num_samples=8, temperature=0.7, top_p=1.0, environ={})
    assert "all 8 samples would be identical" in str(caught.value)
    # one sample, or greedy decoding on purpose, is fine
    assert validate_run(options, num_samples=1, temperature=0.7, top_p=1.0, environ={}) != []
    assert validate_run(options, num_samples=8, temperature=0.0, top_p=1.0, environ={}) == []


def test_greedy_redrafter_allowed_when_user_insists(tmp_path, tokenizer_dir):
    engine_dir = write_engine(tmp_path / "engine", redrafter=True, greedy=True)
    options = TrtllmOptions(engine_dir=engine_dir, tokenizer_dir=tokenizer_dir, allow_identical_samples=True)
    found = validate_run(options, num_samples=8, temperature=0.7, top_p=1.0, environ={})
    assert len(found) == 1 and "every sample of a problem is the same" in found[0]


def test_sampling_redrafter_warns_about_top_p_and_refuses_temperature_zero(tmp_path, tokenizer_dir):
    options = make_options(tmp_path, tokenizer_dir, redrafter=True, greedy=False)
    found = validate_run(options, num_samples=8, temperature=0.7, top_p=0.95, environ={})
    assert found == ["ReDrafter engines ignore top-p (and top-k); top_p 0.95 has no effect."]
    with pytest.raises(TrtllmConfigError, match="temperature 0 cannot be greedy"):
        validate_run(options, num_samples=8, temperature=0.0, top_p=1.0, environ={})


def test_plain_engine_warns_on_batch_size_and_missing_paged_context_fmha(tmp_path, tokenizer_dir):
    options = make_options(tmp_path, tokenizer_dir, max_batch_size=8, paged_context_fmha=False)
    found = validate_run(options, num_samples=12, temperature=0.7, top_p=0.95, environ={})
    assert any("only 8 run at once" in warning for warning in found)
    assert any("--use_paged_context_fmha enable" in warning for warning in found)
    ok = make_options(tmp_path / "ok", tokenizer_dir)
    assert validate_run(ok, num_samples=12, temperature=0.7, top_p=0.95, environ={}) == []


@pytest.mark.parametrize(
    "tp_size, environ, message",
    [
        (2, {}, r"2 GPU\(s\).* has 1 process\(es\); launch it `mpirun -n 2 --allow-run-as-root python"),
        (1, {"OMPI_COMM_WORLD_SIZE": "2"}, r"1 GPU\(s\).* has 2 process\(es\); launch it without mpirun"),
        (2, {"PMI_SIZE": "4"}, r"has 4 process\(es\)"),
    ],
)
def test_launch_must_match_the_engines_parallelism(tmp_path, tokenizer_dir, tp_size, environ, message):
    options = make_options(tmp_path, tokenizer_dir, tp_size=tp_size)
    with pytest.raises(TrtllmConfigError, match=message):
        validate_run(options, num_samples=1, temperature=0.7, top_p=1.0, environ=environ)


def test_options_must_fit_the_engine(tmp_path, tokenizer_dir):
    engine_dir = write_engine(tmp_path / "engine", tp_size=2, max_batch_size=8)
    environ = {"OMPI_COMM_WORLD_SIZE": "2"}
    wrong_tp = TrtllmOptions(engine_dir=engine_dir, tokenizer_dir=tokenizer_dir, tensor_parallel_size=4)
    with pytest.raises(TrtllmConfigError, match="rebuild it with --tp_size 4"):
        validate_run(wrong_tp, num_samples=1, temperature=0.7, top_p=1.0, environ=environ)
    big_batch = TrtllmOptions(engine_dir=engine_dir, tokenizer_dir=tokenizer_dir, max_batch_size=32)
    with pytest.raises(TrtllmConfigError, match="larger --max_batch_size"):
        validate_run(big_batch, num_samples=1, temperature=0.7, top_p=1.0, environ=environ)
    fine = TrtllmOptions(
        engine_dir=engine_dir, tokenizer_dir=tokenizer_dir, tensor_parallel_size=2, max_batch_size=8
    )
    assert validate_run(fine, num_samples=8, temperature=0.7, top_p=1.0, environ=environ) == []


def test_redrafter_engine_warns_once_that_top_p_is_ignored(tmp_path, tokenizer_dir, fake):
    engine, _ = make_engine(tmp_path, tokenizer_dir, fake, redrafter=True, greedy=False, max_draft_len=3)
    with pytest.warns(UserWarning, match="ignore top-p") as caught:
        for seed in range(3):
            engine.add(Request(f"s{seed}", PROMPT, params(seed=seed, top_p=0.9)))
    assert len(caught) == 1


# ---- MPI roles and shutdown ----------------------------------------------------------------------


def test_rank_above_zero_serves_as_worker(tmp_path, tokenizer_dir, fake, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    engine, executor = make_engine(tmp_path, tokenizer_dir, fake, tp_size=2)
    assert not engine.is_leader
    engine.serve_as_worker()
    assert executor.is_shut_down


def test_leader_closes_once(tmp_path, tokenizer_dir, fake, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    engine, executor = make_engine(tmp_path, tokenizer_dir, fake, tp_size=2)
    assert engine.is_leader
    engine.add(Request("a", PROMPT, params()))
    engine.close()
    engine.close()
    engine.abort("a")  # after close: forgotten without calling the shut-down executor
    assert executor.is_shut_down and executor.cancelled_ids == []


# ---- through the solver: early stop and deadline send aborts to the executor ----------------------


def solver_for(engine, **config):
    from solver.config import SolverConfig, ToolConfig
    from solver.orchestrator import Orchestrator

    return Orchestrator(engine, tokenizer, SolverConfig(consensus=None, tools=ToolConfig(enabled=False), **config))


def test_solver_early_stop_cancels_the_running_requests_in_the_executor(tmp_path, tokenizer_dir, fake):
    from solver.problems import Problem

    engine, executor = make_engine(tmp_path, tokenizer_dir, fake)
    boxed = tokenizer.encode("\\boxed{7}", add_special_tokens=False)
    fake.model = lambda request: boxed + [EOS] if len(executor.enqueued) == 1 else list(range(40, 100))
    result = solver_for(engine, num_samples=3, stop_after=1).solve(Problem("p", "What is 3 + 4?"))
    assert result.stop_reason == "first_k" and result.answer == 7
    assert [s.finish_reason for s in result.samples] == ["stop", "aborted", "aborted"]
    assert sorted(executor.cancelled_ids) == [2, 3]  # the two requests still running
    assert not engine.has_work()


def test_solver_deadline_cancels_every_request_in_the_executor(tmp_path, tokenizer_dir, fake):
    from solver.config import SolverConfig, ToolConfig
    from solver.orchestrator import Orchestrator
    from solver.problems import Problem

    engine, executor = make_engine(tmp_path, tokenizer_dir, fake)
    fake.model = lambda request: list(range(40, 100))
    ticks = iter(range(10_000))  # a clock that advances one second per reading
    orchestrator = Orchestrator(engine, tokenizer, SolverConfig(num_samples=2, consensus=None, tools=ToolConfig(enabled=False)), clock=lambda: float(next(ticks)))
    result = orchestrator.solve(Problem("p", "What is 3 + 4?"), allowance_s=5)
    assert result.stop_reason == "deadline"
    assert [s.finish_reason for s in result.samples] == ["deadline", "deadline"]
    assert sorted(executor.cancelled_ids) == [1, 2]
    assert not engine.has_work()
