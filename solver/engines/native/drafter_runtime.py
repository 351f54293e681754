"""A trained ReDrafter drafter (`build.drafter.model.Drafter`) as the engine's source of drafts.

Beam width 1: from the token g_0 the model just chose and the model's final-norm hidden state h
at the position that chose it, the drafter runs its recurrence exactly as it was trained
(`Drafter.teacher_forced_states`): s_0 = next_state(0, E(g_0)), draft logits_0 = logits(h, s_0)
give d_1 (the token two positions after h), s_k = next_state(s_{k-1}, E(d_k)), logits_k give
d_{k+1}. E is the base model's own embedding table.

Greedy rows take each draft's argmax; sampled rows draw it from `speculative.draft_nucleus` of
the draft logits at the row's temperature and top-p (the nucleus within the most likely
candidates: cheap, approximate, and enough, see `speculative`), with uniforms from the row's own
generator, and the distributions the drafts were drawn from come back for `speculative.accept`.

On CUDA, `enable_graphs` captures the draft loop once per (batch size, sampled or not) over
static buffers (`DraftGraphs`); a batch is padded up to the next captured size, and runs eagerly
when it is larger than the largest or on the CPU. Graph outputs are static buffers: a step's
drafts and distributions are valid until the next `propose`.

Not done: beams wider than 1 and tree attention.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import torch

from .config import ModelShape
from .speculative import draft_nucleus, sample

# (context [B, H], last token [B], temperature [B], top_p [B], uniforms [B, L] or None) -> (drafts, probs)
DraftFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def check_compatible(drafter, shape: ModelShape) -> None:
    """A drafter must be trained for this model's hidden size and vocabulary."""
    config = drafter.config
    if config.hidden_size != shape.hidden_size or config.vocab_size != shape.vocab_size:
        raise ValueError(
            f"drafter was trained for hidden size {config.hidden_size} and vocabulary {config.vocab_size}; "
            f"the model has {shape.hidden_size} and {shape.vocab_size}"
        )


class DraftProposer:
    def __init__(self, drafter, embed: torch.Tensor, num_draft_tokens: int) -> None:
        assert num_draft_tokens >= 1
        self.drafter = drafter.eval()
        self.embed = embed  # [V, H], the base model's table (not a copy)
        self.num_draft_tokens = num_draft_tokens
        self.graphs: DraftGraphs | None = None

    @torch.inference_mode()
    def enable_graphs(self, batch_sizes: tuple[int, ...], capture: bool = True) -> None:
        """Run batches of up to max(batch_sizes) rows padded, as CUDA graphs (capture=False:
        eagerly, for tests of the padding). Call once the model and drafter are on the device."""
        if batch_sizes:
            hidden, dtype, device = self.embed.shape[1], self.embed.dtype, self.embed.device
            self.graphs = DraftGraphs(self._draft, sorted(batch_sizes), hidden, self.num_draft_tokens, dtype, device, capture)

    @torch.inference_mode()
    def propose(
        self,
        context: torch.Tensor,
        last_token: torch.Tensor,
        temperature: torch.Tensor,
        top_p: torch.Tensor,
        uniforms: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """context [rows, H] (final-norm hidden state), last_token [rows] (g_0), temperature and
        top_p [rows], uniforms [rows, L] or None when every row is greedy.
        Returns drafts [rows, L] and, for sampled rows, their distributions [rows, L, V]."""
        if self.graphs is not None and self.graphs.fits(context.shape[0]):
            return self.graphs.run(context, last_token, temperature, top_p, uniforms)
        return self._draft(context, last_token, temperature, top_p, uniforms)

    def _draft(self, context, last_token, temperature, top_p, uniforms):
        """`propose` itself: no host synchronisation and no data-dependent shapes (graph-safe)."""
        rows, width = context.shape[0], self.num_draft_tokens
        sampled = temperature > 0
        safe_t = torch.where(sampled, temperature, torch.ones_like(temperature))
        context = context.to(self.embed.dtype)
        state = torch.zeros_like(context)
        token = last_token
        drafts, probs = [], None
        if uniforms is not None:
            probs = torch.zeros(rows, width, self.embed.shape[0], device=context.device)
        for k in range(width):
            state = self.drafter.next_state(state, self.embed[token])
            logits = self.drafter.logits(context, state).float()
            token = logits.argmax(dim=-1)
            if probs is not None:
                q, ids = draft_nucleus(logits, safe_t, top_p)  # [rows, C]
                drawn = ids.gather(-1, sample(q, uniforms[:, k]).unsqueeze(-1)).squeeze(-1)
                token = torch.where(sampled, drawn, token)
                probs[:, k].scatter_(-1, ids, q)
            drafts.append(token)
        return torch.stack(drafts, dim=1), probs


class DraftGraphs:
    """The draft loop over static input buffers sized for the largest batch: context [B, H],
    last token [B], temperature [B], top_p [B], uniforms [B, L]. `run` copies a step's rows in,
    pads up to the next size and replays that size's graph (greedy or sampled). Padded rows are
    greedy with a zero context and token 0; every operation of the loop works row by row, so
    they cannot change the real rows. With capture=False the padded batch runs eagerly."""

    def __init__(
        self, draft: DraftFn, batch_sizes: list[int], hidden_size: int, num_draft_tokens: int,
        dtype: torch.dtype, device: torch.device, capture: bool,
    ) -> None:  # fmt: skip
        self.draft = draft
        self.batch_sizes = batch_sizes
        largest = batch_sizes[-1]
        self.context = torch.zeros(largest, hidden_size, dtype=dtype, device=device)
        self.last_token = torch.zeros(largest, dtype=torch.int64, device=device)
        self.temperature = torch.zeros(largest, device=device)
        self.top_p = torch.ones(largest, device=device)
        self.uniforms = torch.zeros(largest, num_draft_tokens, device=device)
        self.graphs: dict[tuple[int, bool], torch.cuda.CUDAGraph] = {}
        self.outputs: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor | None]] = {}
        pool = None
        for size in reversed(batch_sizes) if capture else ():
            for sampled in (True, False):
                inputs = self._inputs(size, sampled)
                draft(*inputs)  # warm up: kernels, cuBLAS workspaces
                torch.cuda.synchronize(device)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self.outputs[size, sampled] = draft(*inputs)
                pool = graph.pool()
                self.graphs[size, sampled] = graph

    def fits(self, rows: int) -> bool:
        return rows <= self.batch_sizes[-1]

    def run(self, context, last_token, temperature, top_p, uniforms):
        """As `DraftProposer.propose`; the results are views of static buffers."""
        rows = context.shape[0]
        size = self.batch_sizes[bisect.bisect_left(self.batch_sizes, rows)]
        sampled = uniforms is not None
        _load(self.context, context, size, 0.0)
        _load(self.last_token, last_token, size, 0)
        _load(self.temperature, temperature, size, 0.0)
        _load(self.top_p, top_p, size, 1.0)
        if sampled:
            _load(self.uniforms, uniforms, size, 0.0)
        key = (size, sampled)
        if key in self.graphs:
            self.graphs[key].replay()
            drafts, probs = self.outputs[key]
        else:
            drafts, probs = self.draft(*self._inputs(size, sampled))
        return drafts[:rows], (None if probs is None else probs[:rows])

    def _inputs(self, size: int, sampled: bool) -> tuple:
        uniforms = self.uniforms[:size] if sampled else None
        return self.context[:size], self.last_token[:size], self.temperature[:size], self.top_p[:size], uniforms


def _load(buffer: torch.Tensor, value: torch.Tensor, size: int, pad: float) -> None:
    """`value`'s rows into the start of `buffer`, then `pad` up to row `size`."""
    rows = value.shape[0]
    buffer[:rows].copy_(value, non_blocking=True)
    buffer[rows:size].fill_(pad)
