"""Frozen configuration of the native engine: the model's shape and the engine's limits."""

from __future__ import annotations

from dataclasses import dataclass

from .attention import DecodeKernel

SUPPORTED_ARCHITECTURES = ("llama", "qwen2")


@dataclass(frozen=True)
class ModelShape:
    architecture: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    max_position_embeddings: int

    def __post_init__(self) -> None:
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(f"native engine supports {', '.join(SUPPORTED_ARCHITECTURES)}; got {self.architecture!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"{self.num_heads} query heads do not divide into {self.num_kv_heads} KV heads")

    @classmethod
    def from_hf_config(cls, config) -> ModelShape:
        config = config.get_text_config()
        num_heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // num_heads
        layer_types = set(getattr(config, "layer_types", None) or ())
        if layer_types - {"full_attention"}:
            raise ValueError(f"native engine supports full-attention models only; this one has {sorted(layer_types)}")
        return cls(
            architecture=config.model_type,
            num_layers=config.num_hidden_layers,
            hidden_size=config.hidden_size,
            num_heads=num_heads,
            num_kv_heads=config.num_key_value_heads or num_heads,
            head_dim=head_dim,
            intermediate_size=config.intermediate_size,
            vocab_size=config.vocab_size,
            rms_norm_eps=config.rms_norm_eps,
            max_position_embeddings=config.max_position_embeddings,
        )

    def kv_bytes_per_token(self, element_size: int) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * element_size


@dataclass(frozen=True)
class EngineConfig:
    """Limits of one engine. `num_kv_blocks` None: size the cache from free GPU memory
    (`gpu_memory_fraction` of the total, after weights) or, on CPU, for `max_num_seqs` full
    sequences of `max_model_len`. `cuda_graph_batch_sizes` () disables graphs."""

    max_num_seqs: int = 64
    max_num_batched_tokens: int = 4096  # tokens of one prefill step (chunked prefill)
    block_size: int = 16
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    num_kv_blocks: int | None = None
    gpu_memory_fraction: float = 0.9
    cuda_graph_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 24, 32, 48, 64)
    attention_backend: str = "auto"  # "torch" (gather), "triton" (paged decode kernel) or "auto"
    fp8: bool = False  # FP8 weights for the linear layers where faster (Hopper only)
    num_draft_tokens: int | None = None  # with a drafter: L per step; None: as it was trained (else 3)
    overlap_decode: bool = True  # queue decode step N+1 before reading step N's tokens (no drafter)
    kv_cache_dtype: str = "auto"  # "auto": the model's dtype; "fp8": e4m3, half the bytes (saturates at +-448)
    # Decode attention reads the blocks all rows share (the prompt of N samples) once per step
    # instead of once per row, where they hold at least `shared_prefix_min_tokens` positions: on
    # CUDA such steps replay a second decode graph whose kernel has `shared_decode_kernel`'s
    # settings. Measured on an H200 (14B shape, 16 samples, same run): an 8,000-token prompt
    # 12.20 -> 10.34 ms per BF16 step; at 1,000 tokens these settings cost 6% (9.42 -> 9.97 ms),
    # hence the threshold and the short prompts' own graph.
    shared_prefix_attention: bool = True
    shared_prefix_min_tokens: int = 2048
    # Hand-written Triton kernels (`row_kernels`) for RoPE + KV store and, with FP8, the
    # quantising steps (add+norm, attention merge, SiLU*up), each kept where it agrees with the
    # compiled ops and times faster at build. Measured on H100s (14B shape, 16 samples), with the
    # prefill kernel, against the previous defaults on another H100: BF16 step 12.80 -> 12.36 ms,
    # FP8 8.17 -> 7.71 ms (bench/NOTES.md).
    row_kernels: bool = True
    # Prefill attention: "torch" gathers each sequence's context and runs SDPA, one sequence at a
    # time; "triton" runs one paged kernel for the whole batch (`paged_prefill`; measured on an
    # H100: the time outside decode steps of 16 samples 0.33 -> 0.08 s in BF16, 0.66 -> 0.08 s in FP8).
    prefill_attention_backend: str = "triton"
    # Our Triton kernels start while the kernel before them finishes (`launch`; CUDA compute
    # capability 9+, elsewhere ignored). Same H100: FP8 step 7.58 -> 7.34 ms, BF16 unchanged.
    programmatic_launch: bool = True
    # Settings of the paged decode kernel (`attention.DecodeKernel`; CUDA only): for steps
    # without a long shared prompt (None: by the cache's dtype, `plain_decode_kernel`), and for
    # those with one.
    decode_kernel: DecodeKernel | None = None
    shared_decode_kernel: DecodeKernel = DecodeKernel(num_stages=3, programs_per_sm=2, prefetch=True)

    def plain_decode_kernel(self) -> DecodeKernel:
        """The decode kernel's settings for steps without a long shared prompt: `decode_kernel`,
        or for an FP8 cache block-table prefetch with 2 programs per multiprocessor (measured on
        an H200, 14B shape, 16 rows, us per layer with the merge: 12,000 positions of each row's
        own 219.7 -> 159.7, a 1,000-token shared prompt + 512 own 34.8 -> 26.3; the engine's FP8
        step, same run, 14.59 -> 12.29 ms and 6.41 -> 5.94 ms); for a bf16 cache the plain
        settings (prefetch measured the same in the engine: 9.43 vs 9.46 ms, 17.02 vs 17.02)."""
        if self.decode_kernel is not None:
            return self.decode_kernel
        return DecodeKernel(prefetch=True, programs_per_sm=2) if self.kv_cache_dtype == "fp8" else DecodeKernel()

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1 or self.block_size < 1:
            raise ValueError("max_num_seqs, max_num_batched_tokens and block_size must be >= 1")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 2:
            raise ValueError(f"num_kv_blocks must be >= 2 (one is scratch), got {self.num_kv_blocks}")
        if not 0 < self.gpu_memory_fraction <= 1:
            raise ValueError(f"gpu_memory_fraction must be in (0, 1], got {self.gpu_memory_fraction}")
        if self.attention_backend not in ("auto", "torch", "triton"):
            raise ValueError(f"attention_backend must be auto, torch or triton; got {self.attention_backend!r}")
        if self.prefill_attention_backend not in ("torch", "triton"):
            raise ValueError(f"prefill_attention_backend must be torch or triton, got {self.prefill_attention_backend!r}")
        if self.kv_cache_dtype not in ("auto", "fp8"):
            raise ValueError(f"kv_cache_dtype must be auto or fp8, got {self.kv_cache_dtype!r}")
        if self.num_draft_tokens is not None and self.num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens must be >= 1, got {self.num_draft_tokens}")
        if self.shared_prefix_min_tokens < 0:
            raise ValueError(f"shared_prefix_min_tokens must be >= 0, got {self.shared_prefix_min_tokens}")
        if any(b < 1 for b in self.cuda_graph_batch_sizes):
            raise ValueError("cuda_graph_batch_sizes must be >= 1")
