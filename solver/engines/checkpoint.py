"""Loading a causal LM for the torch backends (`hf`, `native`) through transformers' own loaders.

`load_causal_lm(path, device, dtype)` takes an HF model directory or a `.gguf` file (GGUF weights
are dequantized on load) and returns the model on the CPU in the chosen dtype, with the device it
belongs on: by default CUDA when available, bfloat16 there and float32 on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch dtype, or its name ("bfloat16"); None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use a torch dtype name such as 'bfloat16' or 'float32'")
    return resolved


def load_causal_lm(
    path: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None
) -> tuple[PreTrainedModel, torch.device, torch.dtype]:
    from transformers import AutoModelForCausalLM

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = resolve_dtype(dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model, device, dtype
