"""The recurrent drafter (ReDrafter, arXiv 2403.09919), in Apple's formulation.

Inputs at a position t of the base model's sequence:
- context h: the base model's last hidden state (after the final norm, the LM head's input), [H];
- recurrent state s over the base model's token embeddings E (the base model's own table, not a
  copy): s_0 = SiLU(rnn_w·E(g) + rnn_u·0) for the guaranteed token g the base model just chose,
  s_k = SiLU(rnn_w·E(g_k) + rnn_u·s_{k-1}) after each draft token g_k. `rnn_w` has no bias,
  `rnn_u` has one. With `rnn=False` the state is the running sum of embeddings instead.
Head: [h ⊕ s] (2H) → `input_proj` (only when exit_dim != 2H) → `num_draft_layers` residual blocks
x + SiLU(Linear(x)) → Linear to the vocabulary, no bias.

Parameter names equal the names TensorRT-LLM's `examples/redrafter/convert_checkpoint.py` reads
(`lm_head.{i}.linear.*`, `lm_head.{N}.weight`, `rnn_u.*`, `rnn_w.weight`, `input_proj.*`), so a
state dict exports unchanged. Not here: beam search over drafts and verification; the engine
does those. Caveat: TensorRT-LLM's engine code, as read, applies no SiLU in the recurrence and
no rnn_u bias at the first step; docs/build.md ("Known gaps") says what to check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

MODEL_TYPE = "recurrent_drafting_drafter"


@dataclass(frozen=True)
class DrafterConfig:
    vocab_size: int
    hidden_size: int  # the base model's hidden size H
    exit_dim: int  # width of the residual blocks; 2H means no input_proj
    num_draft_layers: int = 2
    rnn: bool = True
    num_draft_tokens: int | None = None  # tokens it was trained to predict; None: unknown

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "exit_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"drafter {name} must be >= 1, got {getattr(self, name)}")
        if self.num_draft_tokens is not None and self.num_draft_tokens < 1:
            raise ValueError(f"drafter num_draft_tokens must be >= 1, got {self.num_draft_tokens}")
        if self.num_draft_layers < 0:
            raise ValueError(f"drafter num_draft_layers must be >= 0, got {self.num_draft_layers}")

    @classmethod
    def for_base(cls, hidden_size: int, vocab_size: int, exit_dim: int | None = None, **kwargs) -> DrafterConfig:
        return cls(vocab_size=vocab_size, hidden_size=hidden_size, exit_dim=exit_dim or 2 * hidden_size, **kwargs)

    @property
    def has_input_proj(self) -> bool:
        return self.exit_dim != 2 * self.hidden_size

    def to_dict(self) -> dict:
        return asdict(self)


class ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.silu(self.linear(x))


class Drafter(nn.Module):
    def __init__(self, config: DrafterConfig) -> None:
        super().__init__()
        self.config = config
        hidden, width = config.hidden_size, config.exit_dim
        if config.has_input_proj:
            self.input_proj = nn.Linear(2 * hidden, width, bias=True)
        self.lm_head = nn.Sequential(
            *(ResBlock(width) for _ in range(config.num_draft_layers)),
            nn.Linear(width, config.vocab_size, bias=False),
        )
        if config.rnn:
            self.rnn_w = nn.Linear(hidden, hidden, bias=False)
            self.rnn_u = nn.Linear(hidden, hidden, bias=True)

    def next_state(self, state: torch.Tensor, token_embeds: torch.Tensor) -> torch.Tensor:
        """One recurrence step; both [..., H]. `state` is zeros before the guaranteed token."""
        if self.config.rnn:
            return F.silu(self.rnn_w(token_embeds) + self.rnn_u(state))
        return state + token_embeds

    def logits(self, context: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """[..., H] context and [..., H] state -> [..., V] logits of the next draft token."""
        x = torch.cat([context, state], dim=-1)
        if self.config.has_input_proj:
            x = self.input_proj(x)
        return self.lm_head(x)

    def teacher_forced_states(self, token_embeds: torch.Tensor, num_draft_tokens: int) -> list[torch.Tensor]:
        """States for draft head k = 0..n-1 at every position t, fed the true next tokens.

        token_embeds: [B, T, H], E(x_t). State k at position t has consumed E(x_{t+1}) ..
        E(x_{t+1+k}) (x_{t+1} is the guaranteed token the base model predicts from h_t), so head
        k at t predicts x_{t+2+k}. Positions whose inputs run past the end see zero embeddings;
        the loss never scores them.
        """
        batch, length, hidden = token_embeds.shape
        state = token_embeds.new_zeros(batch, length, hidden)
        states = []
        for k in range(num_draft_tokens):
            shift = 1 + k
            shifted = token_embeds[:, shift:]
            shifted = F.pad(shifted, (0, 0, 0, min(shift, length)))
            state = self.next_state(state, shifted)
            states.append(state)
        return states


def num_parameters(config: DrafterConfig) -> int:
    """Parameter count, computed from the config alone (e.g. for disk estimates)."""
    hidden, width, vocab = config.hidden_size, config.exit_dim, config.vocab_size
    total = config.num_draft_layers * (width * width + width) + width * vocab
    if config.has_input_proj:
        total += 2 * hidden * width + width
    if config.rnn:
        total += 2 * hidden * hidden + hidden
    return total
