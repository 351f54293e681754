"""Our own forward pass of a Llama or Qwen2 decoder over the paged KV cache.

Weights come from a transformers model of the same architecture (`from_hf`): q/k/v are fused
into one matrix (with Qwen2's biases), gate/up into another, and the lm_head is the embedding
when the model ties them. The forward takes flattened tokens [tokens] with their positions and
an attention meta (prefill chunks or decode rows) and returns hidden states; `logits` applies
the final norm and head to chosen rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .attention import DecodeMeta, PrefillMeta, Splits, decode_attention, prefill_attention
from .config import ModelShape
from .layers import Linear, Out, rms_norm, rope_table
from .ops import EAGER, Ops

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values)
DecodeAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, DecodeMeta, float], torch.Tensor | Splits]
PrefillAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, PrefillMeta, float], torch.Tensor]


class DecoderLayer(nn.Module):
    def __init__(self, shape: ModelShape, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.shape = shape
        qkv_bias = None
        if "self_attn.q_proj.bias" in weights:
            qkv_bias = torch.cat([weights.pop(f"self_attn.{p}_proj.bias") for p in "qkv"])
        self.qkv = Linear(torch.cat([weights.pop(f"self_attn.{p}_proj.weight") for p in "qkv"]), qkv_bias)
        self.o_proj = Linear(weights.pop("self_attn.o_proj.weight"), weights.pop("self_attn.o_proj.bias", None))
        self.gate_up = Linear(torch.cat([weights.pop("mlp.gate_proj.weight"), weights.pop("mlp.up_proj.weight")]))
        self.down = Linear(weights.pop("mlp.down_proj.weight"))
        self.input_norm = nn.Parameter(weights.pop("input_layernorm.weight"), requires_grad=False)
        self.post_attention_norm = nn.Parameter(weights.pop("post_attention_layernorm.weight"), requires_grad=False)
        assert not weights, f"unused weights: {sorted(weights)}"

    def forward(self, x: Out, residual, cos, sin, kv, meta, decode_attn: DecodeAttention, ops: Ops,
                prefill_attn: PrefillAttention = prefill_attention):  # fmt: skip
        """x: the previous layer's output (a linear's `Out`) and `residual` the stream before it
        (None at layer 0); returns this layer's (output, residual) in the same convention."""
        s = self.shape
        h, residual = ops.add_norm(x, residual, self.input_norm, s.rms_norm_eps, self.qkv.fp8)
        q = ops.rope_store(self.qkv(h), cos, sin, s.num_heads, s.num_kv_heads, s.head_dim, kv[0], kv[1], meta.slot_mapping)
        scale = s.head_dim**-0.5
        if isinstance(meta, PrefillMeta):
            o = prefill_attn(q, kv[0], kv[1], meta, scale)
        else:
            o = decode_attn(q, kv[0], kv[1], meta, scale)
        o = self.o_proj(ops.attention_output(o, q.dtype, self.o_proj.fp8))
        h, residual = ops.add_norm(o, residual, self.post_attention_norm, s.rms_norm_eps, self.gate_up.fp8)
        return self.down(ops.silu_mul(self.gate_up(h), residual.dtype, self.down.fp8)), residual


class CausalLM(nn.Module):
    def __init__(self, shape: ModelShape, weights: dict[str, torch.Tensor], rope: tuple[torch.Tensor, torch.Tensor]) -> None:
        super().__init__()
        self.shape = shape
        self.embed = nn.Parameter(weights.pop("model.embed_tokens.weight"), requires_grad=False)
        lm_head = weights.pop("lm_head.weight", None)  # absent when tied to the embedding
        self.lm_head = Linear(self.embed if lm_head is None else lm_head)
        self.final_norm = nn.Parameter(weights.pop("model.norm.weight"), requires_grad=False)
        layers = []
        for i in range(shape.num_layers):
            prefix = f"model.layers.{i}."
            own = {k[len(prefix) :]: weights.pop(k) for k in [k for k in weights if k.startswith(prefix)]}
            layers.append(DecoderLayer(shape, own))
        self.layers = nn.ModuleList(layers)
        weights.pop("model.rotary_emb.inv_freq", None)
        assert not weights, f"unused weights: {sorted(weights)}"
        self.register_buffer("cos", rope[0], persistent=False)
        self.register_buffer("sin", rope[1], persistent=False)
        self.decode_attn: DecodeAttention = decode_attention
        self.prefill_attn: PrefillAttention = prefill_attention
        self.ops: Ops = EAGER  # `ops.fused()` on CUDA

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: PrefillMeta | DecodeMeta, kv_cache: KVCache) -> torch.Tensor:
        """input_ids, positions [tokens] -> hidden states [tokens, hidden] (before the final norm)."""
        x, residual = Out(self.embed[input_ids]), None
        cos, sin = self.cos[positions], self.sin[positions]
        for layer, kv in zip(self.layers, kv_cache):
            x, residual = layer(x, residual, cos, sin, kv, meta, self.decode_attn, self.ops, self.prefill_attn)
        return self.ops.add(x, residual)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(rms_norm(hidden, self.final_norm, self.shape.rms_norm_eps))

    def head(self, normed: torch.Tensor) -> torch.Tensor:
        """The LM head on final-norm hidden states: logits [rows, vocab] in the model's dtype."""
        return self.ops.dequantize(self.lm_head(self.ops.linear_input(normed, self.lm_head.fp8)), normed.dtype)


def from_hf(
    hf_model: nn.Module,
    max_positions: int,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    consume: bool = False,
) -> CausalLM:
    """Build our model from a transformers Llama/Qwen2 model. With `consume`, the HF model is
    emptied (moved to the meta device) and each of its tensors is dropped as soon as its fused
    copy exists, so peak memory stays near one model plus one layer."""
    shape = ModelShape.from_hf_config(hf_model.config)
    device = device or next(hf_model.parameters()).device
    dtype = dtype or next(hf_model.parameters()).dtype
    tied = hf_model.get_output_embeddings().weight is hf_model.get_input_embeddings().weight
    rope = rope_table(hf_model.model.rotary_emb, max_positions, dtype, device)
    weights = _LazyWeights(hf_model.state_dict(), device, dtype)
    if consume:
        hf_model.to("meta")
    if tied:
        weights.drop("lm_head.weight")
    return CausalLM(shape, weights, rope).eval()


class _LazyWeights(dict):
    """A state dict whose `pop` moves a tensor to the target device/dtype on the way out and
    forgets the source, so the HF model's copy can be freed layer by layer."""

    def __init__(self, state: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(state)
        self.device, self.dtype = device, dtype

    def drop(self, key: str) -> None:
        super().pop(key, None)

    def pop(self, key, *default):
        if key not in self and default:
            return default[0]
        tensor = super().pop(key)
        return tensor.to(device=self.device, dtype=self.dtype)
