"""Choosing and loading a backend by name: the one place the CLI touches engines.

`load_engine(options)` returns the engine and the tokenizer whose ids it speaks. Backends are
imported lazily, so a missing optional dependency (TensorRT-LLM) matters only when chosen.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from .base import Engine

ENGINE_NAMES = ("hf", "native", "trtllm", "replay")
PROMPT_HEADROOM_TOKENS = 4096  # native on CPU: KV room per sequence beyond max_new_tokens


class EngineLoadError(RuntimeError):
    """The chosen engine cannot be loaded; the message says what to do."""


@dataclass(frozen=True)
class EngineOptions:
    name: str = "hf"
    model: str | None = None  # HF directory or .gguf file; None: the default model
    device: str | None = None  # None: cuda when available, else cpu
    dtype: str | None = None  # None: bfloat16 on cuda, float32 on cpu
    max_batch_size: int | None = None  # None: hf 64, trtllm the engine's own
    replay_file: str | None = None
    replay_tokens_per_step: int = 4
    fp8: bool = False  # native: FP8 weights where faster (Hopper)
    drafter: str | None = None  # native: an exported ReDrafter drafter directory
    kv_cache_dtype: str = "auto"  # native: "fp8" stores K/V in one byte (twice the tokens fit)
    shared_prefix_min_tokens: int | None = None  # native: shortest shared prompt decode reads once per step (None: 2048)
    # trtllm
    engine_dir: str | None = None
    tokenizer_dir: str | None = None
    kv_cache_fraction: float = 0.9
    chunked_context: bool = True
    allow_identical_samples: bool = False

    def __post_init__(self) -> None:
        if self.name not in ENGINE_NAMES:
            raise ValueError(f"unknown engine {self.name!r}; choose one of {', '.join(ENGINE_NAMES)}")
        if self.name == "replay" and not self.replay_file:
            raise ValueError("--engine replay needs --replay-file FILE.jsonl")
        if self.name == "trtllm" and not self.engine_dir:
            raise ValueError("--engine trtllm needs --engine-dir (a TensorRT-LLM engine built by `python -m build.pipeline`)")
        if self.drafter and self.name != "native":
            raise ValueError("--drafter needs --engine native (TensorRT-LLM engines carry their drafter inside)")
        if self.kv_cache_dtype != "auto" and self.name != "native":
            raise ValueError("--kv-cache-dtype needs --engine native (TensorRT-LLM engines fix theirs at build time)")
        if self.shared_prefix_min_tokens is not None and self.name != "native":
            raise ValueError("--shared-prefix-min-tokens needs --engine native")
        if self.shared_prefix_min_tokens is not None and self.shared_prefix_min_tokens < 0:
            raise ValueError(f"--shared-prefix-min-tokens must be >= 0, got {self.shared_prefix_min_tokens}")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ValueError(f"max batch size must be >= 1, got {self.max_batch_size}")
        if not 0 < self.kv_cache_fraction <= 1:
            raise ValueError(f"KV-cache memory fraction must be in (0, 1], got {self.kv_cache_fraction}")


@dataclass(frozen=True)
class RunShape:
    """What some backends check before loading: how the run will sample."""

    num_samples: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 2048


def load_engine(options: EngineOptions, shape: RunShape = RunShape()) -> tuple[Engine, PreTrainedTokenizerBase]:
    loaders = {"hf": _load_hf, "native": _load_native, "trtllm": _load_trtllm, "replay": _load_replay}
    return loaders[options.name](options, shape)


def _model_path(options: EngineOptions) -> Path:
    from ..models import ModelUnavailableError, default_model_path

    try:
        model_path = Path(options.model) if options.model else default_model_path()
    except ModelUnavailableError as exc:
        raise EngineLoadError(str(exc)) from exc
    if not model_path.exists():
        raise EngineLoadError(f"model not found: {model_path}")
    return model_path


def _load_hf(options: EngineOptions, shape: RunShape) -> tuple[Engine, PreTrainedTokenizerBase]:
    from ..tokenizer import load_tokenizer
    from .hf import HFEngine

    model_path = _model_path(options)
    print(f"Loading {model_path} ...", file=sys.stderr)
    engine = HFEngine.from_pretrained(model_path, device=options.device, dtype=options.dtype, max_batch_size=options.max_batch_size or 64)
    return engine, load_tokenizer(model_path)


def _load_native(options: EngineOptions, shape: RunShape) -> tuple[Engine, PreTrainedTokenizerBase]:
    import torch

    from ..tokenizer import load_tokenizer
    from .native import EngineConfig, NativeEngine

    on_gpu = (options.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if options.fp8 and not on_gpu:
        raise EngineLoadError("--fp8 needs a CUDA GPU with FP8 support (Hopper or Ada); drop --fp8 on this machine.")
    model_path = _model_path(options)
    # On a GPU the KV cache is sized from free memory; on the CPU, for the sequences this run needs.
    max_model_len = None if on_gpu else PROMPT_HEADROOM_TOKENS + shape.max_new_tokens
    shared = {} if options.shared_prefix_min_tokens is None else {"shared_prefix_min_tokens": options.shared_prefix_min_tokens}
    config = EngineConfig(max_num_seqs=options.max_batch_size or 64, max_model_len=max_model_len, fp8=options.fp8,
                          kv_cache_dtype=options.kv_cache_dtype, **shared)  # fmt: skip
    drafter_dir = Path(options.drafter) if options.drafter else None
    if drafter_dir is not None and not (drafter_dir / "config.json").is_file():
        raise EngineLoadError(f"{drafter_dir}: not a drafter directory (no config.json); make one with `python -m build.pipeline drafter export`.")
    engine = NativeEngine.from_pretrained(model_path, device=options.device, dtype=options.dtype, config=config, drafter_dir=drafter_dir)
    return engine, load_tokenizer(model_path)


def _load_replay(options: EngineOptions, shape: RunShape) -> tuple[Engine, PreTrainedTokenizerBase]:
    from ..tokenizer import byte_tokenizer, load_tokenizer
    from .replay import ReplayFileError, replay_engine

    tokenizer = load_tokenizer(options.model) if options.model else byte_tokenizer()
    try:
        return replay_engine(options.replay_file, tokenizer, options.replay_tokens_per_step), tokenizer
    except ReplayFileError as exc:
        raise EngineLoadError(str(exc)) from exc


def _load_trtllm(options: EngineOptions, shape: RunShape) -> tuple[Engine, PreTrainedTokenizerBase]:
    from .trtllm import EngineUnavailableError, TrtllmConfigError, TrtllmEngine, TrtllmOptions, executor_module, validate_run

    try:
        executor_module()  # a missing install is said first, before any path checks
        trt_options = TrtllmOptions(
            engine_dir=Path(options.engine_dir),
            tokenizer_dir=Path(options.tokenizer_dir) if options.tokenizer_dir else None,
            kv_cache_free_gpu_memory_fraction=options.kv_cache_fraction,
            max_batch_size=options.max_batch_size,
            enable_chunked_context=options.chunked_context,
            allow_identical_samples=options.allow_identical_samples,
        )
        for warning in validate_run(trt_options, num_samples=shape.num_samples, temperature=shape.temperature, top_p=shape.top_p):
            print(f"warning: {warning}", file=sys.stderr)
        engine = TrtllmEngine(trt_options)
    except (EngineUnavailableError, TrtllmConfigError) as exc:
        raise EngineLoadError(str(exc)) from exc
    if not engine.is_leader:
        # MPI ranks above 0 only serve the leader's executor, then leave.
        engine.serve_as_worker()
        raise SystemExit(0)
    return engine, engine.tokenizer
