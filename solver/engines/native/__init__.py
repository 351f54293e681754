"""The native PyTorch engine: paged KV cache with prefix sharing, in-flight batching, CUDA-graph
decode and FP8 weights, behind the solver's engine interface. See `docs/native_engine.md`."""

from .config import EngineConfig
from .engine import NativeEngine

__all__ = ["EngineConfig", "NativeEngine"]
