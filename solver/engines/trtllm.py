"""TensorRT-LLM backend: prebuilt TRT engines (BF16, FP8, FP8+ReDrafter) through the C++ executor.

Which TensorRT-LLM API, and why. This module drives `tensorrt_llm.bindings.executor.Executor`
directly, the same object `ModelRunnerCpp.from_dir` builds and keeps as `runner.session`
(`tensorrt_llm/runtime/model_runner_cpp.py`), rather than `tensorrt_llm._tensorrt_engine.LLM`:
- It is the path that ran ReDrafter engines in the AIMO-2 pipeline (NeMo-Skills'
  `inference/server/serve_trt.py` enqueued `bindings.executor.Request`s on `runner.session` and
  cancelled them there); ReDrafter through the LLM API's `_TrtLLM` is unverified.
- Its calls match the engine interface one to one: `add`/`extend` -> `enqueue_request`,
  `step` -> `await_responses(timeout=...)` (a poll that returns whatever tokens are ready),
  `abort` -> `cancel_request`. The LLM API would need a thread or event loop per request to turn
  `generate_async(streaming=True)` iterators back into a poll.
- It has no tokenizer, detokenizer or stop-string layer in the way: requests are token ids,
  stop tokens are ids, nothing is decoded (text-level checks live in the solver).

Names used here, and where they come from (TensorRT-LLM source, Python bindings):
`Executor(model_path, model_type, executor_config)`, `.enqueue_request(request)`,
`.await_responses(timeout=...)`, `.cancel_request(id)`, `.can_enqueue_requests()`, `.shutdown()`
in `cpp/tensorrt_llm/nanobind/executor/executor.cpp` (same names in `.../pybind/executor/`);
`ExecutorConfig`, `KvCacheConfig` in `.../executorConfig.cpp`; `Request`, `SamplingConfig`,
`OutputConfig`, `FinishReason`, `Response`, `Result` in `.../request.cpp`; `ModelType` in
`.../bindings.cpp`. Engine `config.json` fields: `tensorrt_llm/builder.py` (`EngineConfig`,
`BuildConfig`), `tensorrt_llm/models/modeling_utils.py` (`PretrainedConfig`),
`examples/redrafter/convert_checkpoint.py` (`redrafter_greedy_search`), `tensorrt_llm/plugin/
plugin.py` (`use_paged_context_fmha`), `tensorrt_llm/commands/build.py` (speculative engines add
`max_draft_len` to `max_seq_len`).

What the backend guarantees (on top of `base.py`):
- A distinct seed per request: `params.seed` becomes `SamplingConfig.seed` (TRT's default is 0
  for every request, which makes N samples of one prompt identical).
- Stops by token id: the tokenizer's EOS is the executor's `end_id`; every other stop id is a
  single-token stop word. The EOS therefore always ends a request, listed or not.
- No logprobs or logits are ever requested (aborting a request that returns them is a known
  crash, TensorRT-LLM issue #10810); `_build_request` asserts it.
- Continuation after a tool call enqueues a new executor request with the full token history
  (prompt + generated + appended) and KV-cache block reuse on, so the cached prefix is reused
  (engines must be built with `--use_paged_context_fmha enable` for reuse to happen).
- Prompt + max new tokens never exceed the engine's usable `max_seq_len`: `max_tokens` is
  clamped to fit (logged once, counted in `stats.extra["num_clamped_requests"]`); a prompt that
  leaves no room at all gets a Delta with finish_reason "error" and a message.

Not covered: beam search, `n > 1` child requests (each sample is its own request), LoRA,
multimodal inputs, orchestrator mode (multi-GPU runs use MPI leader mode, see docs/gpu.md).
Nothing here has run against a real TensorRT-LLM install; the tests use a fake module that
mirrors the calls above.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

from .base import Delta, EngineStats, FinishReason, Request, SamplingParams

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "TensorRT-LLM is not installed: on a CUDA machine with Python 3.10 or 3.12 run "
    "`pip install tensorrt-llm==1.2.1 --extra-index-url https://pypi.nvidia.com` (see docs/gpu.md)."
)

# How long one `step()` waits for the executor when no token is ready yet.
POLL_TIMEOUT = timedelta(milliseconds=20)
# Files of a Hugging Face tokenizer directory, any one of which marks one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class EngineUnavailableError(RuntimeError):
    """TensorRT-LLM cannot be imported on this machine; the message says what to install."""


class TrtllmConfigError(ValueError):
    """A TensorRT-LLM option, engine or launch that cannot work; the message names the fix."""


@dataclass(frozen=True)
class TrtllmOptions:
    """What a user chooses for the `trtllm` backend. Paths may be given as strings.

    `tokenizer_dir` defaults to `engine_dir` (then it must hold the tokenizer files).
    `max_batch_size` and `tensor_parallel_size` default to the engine's own (None); when given
    they must fit the engine, since both are fixed when the engine is built.
    """

    engine_dir: Path
    tokenizer_dir: Path | None = None
    kv_cache_free_gpu_memory_fraction: float = 0.9
    max_batch_size: int | None = None
    enable_chunked_context: bool = True
    tensor_parallel_size: int | None = None
    allow_identical_samples: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "engine_dir", Path(self.engine_dir))
        if not (self.engine_dir / "config.json").is_file():
            raise TrtllmConfigError(
                f"engine_dir {self.engine_dir} has no config.json; point it at the output "
                "directory of trtllm-build."
            )
        if self.tokenizer_dir is None:
            if not any((self.engine_dir / name).is_file() for name in TOKENIZER_FILES):
                raise TrtllmConfigError(
                    f"engine_dir {self.engine_dir} holds no tokenizer; give tokenizer_dir, the Hugging "
                    "Face model directory the engine was built from."
                )
            object.__setattr__(self, "tokenizer_dir", self.engine_dir)
        object.__setattr__(self, "tokenizer_dir", Path(self.tokenizer_dir))
        if not self.tokenizer_dir.is_dir():
            raise TrtllmConfigError(
                f"tokenizer_dir {self.tokenizer_dir} is not a directory; point it at the Hugging "
                "Face model directory the engine was built from."
            )
        if not 0 < self.kv_cache_free_gpu_memory_fraction <= 1:
            raise TrtllmConfigError(
                "kv_cache_free_gpu_memory_fraction must be in (0, 1], got "
                f"{self.kv_cache_free_gpu_memory_fraction}."
            )
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise TrtllmConfigError(f"max_batch_size must be >= 1, got {self.max_batch_size}.")
        if self.tensor_parallel_size is not None and self.tensor_parallel_size < 1:
            raise TrtllmConfigError(
                f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}."
            )


@dataclass(frozen=True)
class EngineSpec:
    """The facts about a built engine this backend relies on, read from its config.json."""

    max_seq_len: int  # usable prompt + generated tokens (draft tokens of speculative engines excluded)
    max_input_len: int
    max_batch_size: int
    tp_size: int
    world_size: int  # GPUs (MPI ranks) the engine needs: tp_size * pp_size
    is_redrafter: bool
    redrafter_greedy_search: bool  # ReDrafter engines only; True makes all samples identical
    paged_context_fmha: bool  # needed for KV-cache block reuse and chunked context


def read_engine_spec(engine_dir: Path) -> EngineSpec:
    """Parse `engine_dir/config.json` as written by trtllm-build (`EngineConfig.to_dict`)."""
    config_path = Path(engine_dir) / "config.json"
    config = json.loads(config_path.read_text())
    try:
        pretrained = config["pretrained_config"]
        build = config["build_config"]
        mapping = pretrained.get("mapping", {})
        tp_size = int(mapping.get("tp_size", 1))
        world_size = int(mapping.get("world_size", tp_size * int(mapping.get("pp_size", 1))))
        is_redrafter = str(pretrained.get("architecture", "")).startswith("ReDrafter") or (
            "redrafter_num_beams" in pretrained
        )
        return EngineSpec(
            max_seq_len=int(build["max_seq_len"]) - int(build.get("max_draft_len") or 0),
            max_input_len=int(build["max_input_len"]),
            max_batch_size=int(build["max_batch_size"]),
            tp_size=tp_size,
            world_size=world_size,
            is_redrafter=is_redrafter,
            # convert_checkpoint.py defaults to greedy search; a missing field means the default.
            redrafter_greedy_search=is_redrafter and bool(pretrained.get("redrafter_greedy_search", True)),
            paged_context_fmha=bool(build.get("plugin_config", {}).get("use_paged_context_fmha", False)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise TrtllmConfigError(
            f"{config_path} lacks the field {error}; is it a TensorRT-LLM engine built by trtllm-build?"
        ) from error


def mpi_world_size(environ: Mapping[str, str]) -> int:
    """Number of MPI ranks this process was launched with (1 without mpirun)."""
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        if name in environ:
            return int(environ[name])
    return 1


def check_launch(spec: EngineSpec, options: TrtllmOptions, environ: Mapping[str, str]) -> None:
    """Raise unless the engine's parallelism, the options and the MPI launch agree."""
    if options.tensor_parallel_size is not None and options.tensor_parallel_size != spec.tp_size:
        raise TrtllmConfigError(
            f"the engine in {options.engine_dir} was built for tensor parallelism {spec.tp_size}, not "
            f"{options.tensor_parallel_size}; rebuild it with --tp_size {options.tensor_parallel_size} "
            "or drop the option."
        )
    if options.max_batch_size is not None and options.max_batch_size > spec.max_batch_size:
        raise TrtllmConfigError(
            f"max_batch_size {options.max_batch_size} exceeds the engine's {spec.max_batch_size}; "
            "lower it or rebuild the engine with a larger --max_batch_size."
        )
    ranks = mpi_world_size(environ)
    if ranks != spec.world_size:
        launch = (
            "without mpirun"
            if spec.world_size == 1
            else f"`mpirun -n {spec.world_size} --allow-run-as-root python submission.py ...`"
        )
        raise TrtllmConfigError(
            f"the engine in {options.engine_dir} runs on {spec.world_size} GPU(s), one MPI process "
            f"each, but this run has {ranks} process(es); launch it {launch}."
        )


def validate_run(
    options: TrtllmOptions,
    *,
    num_samples: int,
    temperature: float,
    top_p: float,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Check a planned run before any model loads: raise `TrtllmConfigError` on a refusal,
    return warnings (one sentence each) for things that work but not as the user may expect."""
    spec = read_engine_spec(options.engine_dir)
    check_launch(spec, options, os.environ if environ is None else environ)
    found: list[str] = []
    if spec.is_redrafter and spec.redrafter_greedy_search and temperature > 0:
        if num_samples > 1 and not options.allow_identical_samples:
            raise TrtllmConfigError(
                f"the ReDrafter engine in {options.engine_dir} was converted with greedy search, so "
                f"all {num_samples} samples would be identical; rebuild it with "
                "`convert_checkpoint.py --redrafter_no_greedy_search` or pass allow_identical_samples."
            )
        found.append(
            f"the ReDrafter engine in {options.engine_dir} decodes greedily: temperature {temperature} "
            "is ignored and every sample of a problem is the same."
        )
    if spec.is_redrafter and not spec.redrafter_greedy_search and temperature == 0:
        raise TrtllmConfigError(
            f"the ReDrafter engine in {options.engine_dir} samples and ignores top-k, so temperature 0 "
            "cannot be greedy; use a temperature above 0 or an engine converted with greedy search."
        )
    if spec.is_redrafter and top_p < 1:
        found.append(f"ReDrafter engines ignore top-p (and top-k); top_p {top_p} has no effect.")
    batch = options.max_batch_size or spec.max_batch_size
    if num_samples > batch:
        found.append(
            f"{num_samples} samples exceed the batch size {batch}: only {batch} run at once, the rest wait."
        )
    if not spec.paged_context_fmha:
        found.append(
            "the engine was built without --use_paged_context_fmha enable, so the KV cache is not "
            "reused after tool calls (each continuation re-reads its prefix) and chunked context may fail."
        )
    return found


def executor_module() -> ModuleType:
    """Import `tensorrt_llm.bindings.executor`, or raise `EngineUnavailableError` saying why."""
    try:
        return importlib.import_module("tensorrt_llm.bindings.executor")
    except ImportError as error:
        if (error.name or "").startswith("tensorrt_llm"):
            raise EngineUnavailableError(INSTALL_HINT) from error
        raise EngineUnavailableError(
            f"TensorRT-LLM is installed but failed to import ({error}); it needs an NVIDIA GPU "
            "driver and the CUDA, TensorRT and torch versions it was built for (see docs/gpu.md)."
        ) from error
    except OSError as error:
        raise EngineUnavailableError(
            f"TensorRT-LLM is installed but its native libraries failed to load ({error}); it needs "
            "an NVIDIA GPU driver and matching CUDA libraries (see docs/gpu.md)."
        ) from error


# ---- small pure pieces of request translation -------------------------------------------------


def sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Keyword arguments of the executor's `SamplingConfig` for one request."""
    seed = params.seed % 2**64  # the executor's seed is an unsigned 64-bit integer
    if params.temperature == 0:
        return {"beam_width": 1, "top_k": 1, "seed": seed}
    kwargs: dict[str, Any] = {"beam_width": 1, "temperature": params.temperature, "seed": seed}
    if params.top_p < 1:
        kwargs["top_p"] = params.top_p
    return kwargs


def stop_words(stop_token_ids: Sequence[int], end_id: int) -> list[list[int]] | None:
    """Every stop id except the end id, each as a one-token stop word (None when empty)."""
    words = [[token] for token in dict.fromkeys(stop_token_ids) if token != end_id]
    return words or None


def clamp_max_tokens(prompt_len: int, max_tokens: int, max_seq_len: int) -> int:
    """New tokens the request may have so prompt + new fits `max_seq_len` (0: no room)."""
    return max(0, min(max_tokens, max_seq_len - prompt_len))


def final_tokens(
    tokens: Sequence[int], stopped_by_end_id: bool, stop_ids: frozenset[int], end_id: int
) -> list[int]:
    """Tokens of a request's last delta when it stopped: cut after the first stop id (a
    speculative step may carry tokens past it), and end with the EOS when the end id stopped it
    but the executor left the EOS out."""
    kept = list(tokens)
    for index, token in enumerate(kept):
        if token in stop_ids:
            kept = kept[: index + 1]
            break
    if stopped_by_end_id and (not kept or kept[-1] != end_id):
        kept.append(end_id)
    return kept


# ---- the engine ----------------------------------------------------------------------------------


@dataclass
class _Sample:
    """One solver request: its full token history and the executor request serving it, if any."""

    request_id: str
    tokens: list[int]  # prompt + generated + appended, in order
    stop_ids: frozenset[int]
    executor_id: int | None = None  # None while paused after a "stop" (resumable via extend)


@dataclass
class _StepUpdate:
    tokens: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    error: str | None = None


class TrtllmEngine:
    """The `Engine` interface over TensorRT-LLM's C++ executor (see the module docstring).

    `tokenizer` is the model's tokenizer (loaded from `options.tokenizer_dir`); its EOS is the
    executor's end id. Under MPI (tensor parallelism), every rank constructs the engine; only
    rank 0 is the leader (`is_leader`) and runs the solver. Other ranks call
    `serve_as_worker()`, which returns when the leader closes its engine.
    """

    def __init__(self, options: TrtllmOptions, *, environ: Mapping[str, str] | None = None) -> None:
        self.options = options
        self.spec = read_engine_spec(options.engine_dir)
        check_launch(self.spec, options, os.environ if environ is None else environ)
        trtllm = executor_module()
        self._trtllm = trtllm
        from ..tokenizer import load_tokenizer  # transformers: imported only when the engine is built

        self.tokenizer = load_tokenizer(options.tokenizer_dir)
        if self.tokenizer.eos_token_id is None:
            raise TrtllmConfigError(
                f"the tokenizer in {options.tokenizer_dir} has no EOS token; point tokenizer_dir at the "
                "model's Hugging Face directory."
            )
        self.end_id = int(self.tokenizer.eos_token_id)
        self._finish_reasons = {
            trtllm.FinishReason.END_ID: "stop",
            trtllm.FinishReason.STOP_WORDS: "stop",
            trtllm.FinishReason.LENGTH: "length",
            trtllm.FinishReason.CANCELLED: "aborted",
            trtllm.FinishReason.TIMED_OUT: "aborted",
        }
        kv_cache_config = trtllm.KvCacheConfig(
            enable_block_reuse=True,
            free_gpu_memory_fraction=options.kv_cache_free_gpu_memory_fraction,
        )
        executor_config = trtllm.ExecutorConfig(
            max_beam_width=1,
            kv_cache_config=kv_cache_config,
            enable_chunked_context=options.enable_chunked_context,
            max_batch_size=options.max_batch_size,
            gather_generation_logits=False,
        )
        self._executor = trtllm.Executor(options.engine_dir, trtllm.ModelType.DECODER_ONLY, executor_config)
        self._samples: dict[str, _Sample] = {}
        self._live: dict[int, str] = {}  # executor request id -> solver request id
        self._pending: list[Delta] = []  # failures found while adding, reported by the next step
        self._warned_top_p = False
        self._closed = False
        self.stats = EngineStats(extra={"num_clamped_requests": 0.0})

    # -- MPI roles --------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True on the process that may enqueue requests (rank 0 in MPI leader mode)."""
        return bool(self._executor.can_enqueue_requests())

    def serve_as_worker(self) -> None:
        """On ranks above 0: take part in the engine until the leader closes it, then return."""
        assert not self.is_leader, "serve_as_worker() is for MPI ranks above 0"
        self.close()  # a worker's shutdown waits for the leader's terminate message

    # -- Engine interface -------------------------------------------------------------------------

    def add(self, request: Request) -> None:
        assert request.request_id not in self._samples, f"request id {request.request_id} in use"
        sample = _Sample(
            request_id=request.request_id,
            tokens=list(request.prompt_token_ids),
            stop_ids=frozenset(request.params.stop_token_ids) | {self.end_id},
        )
        self._samples[sample.request_id] = sample
        self._enqueue(sample, request.params)

    def extend(self, request_id: str, token_ids: tuple[int, ...], params: SamplingParams) -> None:
        sample = self._samples.get(request_id)
        if sample is None or sample.executor_id is not None:
            raise ValueError(f"request {request_id} is not paused after a stop, so it cannot be extended")
        sample.tokens.extend(token_ids)
        sample.stop_ids = frozenset(params.stop_token_ids) | {self.end_id}
        self._enqueue(sample, params)

    def step(self) -> list[Delta]:
        deltas, self._pending = self._pending, []
        if not self._live:
            return deltas
        try:
            responses = self._executor.await_responses(timeout=POLL_TIMEOUT)
        except RuntimeError as error:  # the executor itself failed: every live request ends
            log.error("TensorRT-LLM executor failed: %s", error)
            message = f"TensorRT-LLM executor failed: {error}"
            return deltas + [self._fail(request_id, message) for request_id in list(self._live.values())]
        updates: dict[str, _StepUpdate] = {}
        for response in responses:
            request_id = self._live.get(response.request_id)
            if request_id is None:
                continue  # a request we aborted (its cancellation still reports) or already ended
            update = updates.setdefault(request_id, _StepUpdate())
            self._apply(self._samples[request_id], response, update)
        for request_id, update in updates.items():
            deltas.append(Delta(request_id, tuple(update.tokens), update.finish_reason, update.error))
        return deltas

    def abort(self, request_id: str) -> None:
        sample = self._samples.pop(request_id, None)
        self._pending = [delta for delta in self._pending if delta.request_id != request_id]
        if sample is None or sample.executor_id is None:
            return
        del self._live[sample.executor_id]
        if not self._closed:
            self._executor.cancel_request(sample.executor_id)

    def has_work(self) -> bool:
        return bool(self._live or self._pending)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._executor.shutdown()

    # -- internals --------------------------------------------------------------------------------

    def _enqueue(self, sample: _Sample, params: SamplingParams) -> None:
        assert not self._closed, "engine is closed"
        max_tokens = clamp_max_tokens(len(sample.tokens), params.max_tokens, self.spec.max_seq_len)
        if max_tokens == 0:
            self._pending.append(
                self._fail(
                    sample.request_id,
                    f"the prompt of {len(sample.tokens)} tokens leaves no room in the engine's "
                    f"max_seq_len of {self.spec.max_seq_len}; rebuild with a larger --max_seq_len "
                    "or give the problem fewer tokens.",
                )
            )
            return
        if max_tokens < params.max_tokens:
            if self.stats.extra["num_clamped_requests"] == 0:
                log.warning(
                    "max_tokens %d of request %s clamped to %d to fit the engine's max_seq_len %d "
                    "(logged once; counted in stats)",
                    params.max_tokens, sample.request_id, max_tokens, self.spec.max_seq_len,
                )
            self.stats.extra["num_clamped_requests"] += 1
        if self.spec.is_redrafter and params.top_p < 1 and not self._warned_top_p:
            self._warned_top_p = True
            warnings.warn(
                "ReDrafter engines ignore top-p and top-k; only temperature and seed apply.", stacklevel=3
            )
        request = self._build_request(sample, params, max_tokens)  # a mistake here is a bug: raise
        try:
            executor_id = self._executor.enqueue_request(request)
        except RuntimeError as error:  # the executor refused this request (C++ checks surface as this)
            self._pending.append(self._fail(sample.request_id, f"TensorRT-LLM refused the request: {error}"))
            return
        sample.executor_id = executor_id
        self._live[executor_id] = sample.request_id

    def _build_request(self, sample: _Sample, params: SamplingParams, max_tokens: int) -> Any:
        trtllm = self._trtllm
        request = trtllm.Request(
            list(sample.tokens),
            max_tokens,
            streaming=True,
            sampling_config=trtllm.SamplingConfig(**sampling_kwargs(params)),
            output_config=trtllm.OutputConfig(
                return_log_probs=False,
                return_context_logits=False,
                return_generation_logits=False,
                exclude_input_from_output=True,
            ),
            end_id=self.end_id,
            stop_words=stop_words(params.stop_token_ids, self.end_id),
        )
        output = request.output_config
        asks_logits = output.return_generation_logits or output.return_context_logits
        assert not (output.return_log_probs or asks_logits), (
            "logprobs must never be requested: aborting such a request crashes TensorRT-LLM (#10810)"
        )
        return request

    def _apply(self, sample: _Sample, response: Any, update: _StepUpdate) -> None:
        """Fold one executor response into this step's update for its request."""
        if response.has_error():
            self._end(sample)
            update.finish_reason, update.error = "error", f"TensorRT-LLM: {response.error_msg}"
            return
        result = response.result
        new_tokens = list(result.output_token_ids[0]) if result.output_token_ids else []
        if not result.is_final:
            update.tokens.extend(new_tokens)
            sample.tokens.extend(new_tokens)
            return
        reason = result.finish_reasons[0] if result.finish_reasons else None
        finish = self._finish_reasons.get(reason)
        if finish == "stop":
            stopped_by_end_id = reason == self._trtllm.FinishReason.END_ID
            new_tokens = final_tokens(new_tokens, stopped_by_end_id, sample.stop_ids, self.end_id)
        update.tokens.extend(new_tokens)
        sample.tokens.extend(new_tokens)
        if finish == "stop":
            del self._live[sample.executor_id]
            sample.executor_id = None  # paused: resumable through extend()
            update.finish_reason = "stop"
            return
        self._end(sample)
        if finish is None:
            update.finish_reason, update.error = "error", f"TensorRT-LLM ended the request with {reason}"
        else:
            update.finish_reason = finish
            if finish == "aborted":
                update.error = f"TensorRT-LLM ended the request ({reason})"

    def _end(self, sample: _Sample) -> None:
        """Forget a request that cannot be resumed."""
        if sample.executor_id is not None:
            self._live.pop(sample.executor_id, None)
        self._samples.pop(sample.request_id, None)

    def _fail(self, request_id: str, message: str) -> Delta:
        sample = self._samples.get(request_id)
        if sample is not None:
            self._end(sample)
        return Delta(request_id, (), "error", message)
