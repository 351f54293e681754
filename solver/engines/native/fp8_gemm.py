"""A matrix product for few rows as a Triton kernel: x [rows, in] @ w [out, in]^T, FP8 operands,
float32 out, for the decode step's linears (16-64 rows against a weight of tens of MB).

The step is bound by reading the weight once. The kernel puts the weight's output channels on
the tensor cores' wide side and the few rows on the narrow side: each program takes BLOCK_N
output channels for BLOCK_M rows and walks `in` BLOCK_K at a time through a deep software
pipeline. Each tile's product is added to the float32 total on its own (FP8 tensor cores
accumulate with fewer bits: accumulating a whole row inside them measured 1.5e-3 relative
error against float32 sums, cuBLAS 1.3e-4, this kernel the same as cuBLAS).

Measured on an H100 (`bench/fp8_gemm.py`, Qwen2.5-14B shapes, 16 rows): 85-101% of the memory
floor against cuBLAS's 71-94%; a split of `in` over programs (tried for the small outputs) won
no time in the kernel and cost a kernel to sum the parts, so there is none.

`skinny_silu_mm` is the same product for gate_up with SiLU(gate) * up as its epilogue (the
decode step's SiLU kernel gone), and `skinny_mm` takes an input quantised per group of K
columns too (o_proj after `row_kernels.merge_quantize` per group of heads);
`row_kernels.choose_row_kernels` decides where they are used.

The kernel is dtype-generic (FP8 on the GPU; the tests run it in float32 in Triton's CPU
interpreter, which cannot run FP8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .launch import wait_for_previous


@triton.jit
def _tile_product(x_rows, w_rows, m, n, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  EVEN_K: tl.constexpr, x_scales, GROUP_SCALES: tl.constexpr):  # fmt: skip
    """[BLOCK_N, BLOCK_M] float32: the weight rows at `w_rows` (valid where n < N) times the input
    rows at `x_rows` (valid where m < M), over all of K. With GROUP_SCALES each K tile's product
    is multiplied by the rows' scales of that tile (`x_scales` [BLOCK_M] pointers to each row's
    first; EVEN_K; unused without)."""
    kk = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + kk
        if EVEN_K:
            w = tl.load(w_rows + k[None, :], mask=(n < N)[:, None], other=0.0)
            x = tl.load(x_rows + k[None, :], mask=(m < M)[:, None], other=0.0)
        else:
            w = tl.load(w_rows + k[None, :], mask=(n < N)[:, None] & (k < K)[None, :], other=0.0)
            x = tl.load(x_rows + k[None, :], mask=(m < M)[:, None] & (k < K)[None, :], other=0.0)
        if GROUP_SCALES:
            acc += tl.dot(w, tl.trans(x)) * tl.load(x_scales + k0 // BLOCK_K, mask=m < M, other=0.0)[None, :]
        else:
            acc += tl.dot(w, tl.trans(x))  # summed in float32 per tile, see the module's note
    return acc


@triton.jit
def _skinny_kernel(x_ptr, x_scale_ptr, w_ptr, out_ptr, M, N, K,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
                   GROUP_SCALES: tl.constexpr = False, PDL: tl.constexpr = False):  # fmt: skip
    """out[m, n] = sum over k of x[m, k] * w[n, k] for one tile of BLOCK_N outputs x BLOCK_M rows;
    with GROUP_SCALES (x quantised per row and group of BLOCK_K columns: x_scale [M, K / BLOCK_K])
    each group's product times its scale."""
    wait_for_previous(PDL)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    acc = _tile_product(x_ptr + m.to(tl.int64)[:, None] * K, w_ptr + n.to(tl.int64)[:, None] * K, m, n, M, N, K,
                        BLOCK_M, BLOCK_N, BLOCK_K, EVEN_K, x_scale_ptr + m * (K // BLOCK_K), GROUP_SCALES)  # fmt: skip
    out = out_ptr + m.to(tl.int64)[None, :] * N + n[:, None]
    tl.store(out, acc, mask=(n < N)[:, None] & (m < M)[None, :])


@triton.jit
def _skinny_silu_kernel(x_ptr, w_ptr, x_scale_ptr, w_scale_ptr, h_ptr, chunk_max_ptr, M, WIDTH, K,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
                        CHUNKS: tl.constexpr, PDL: tl.constexpr = False):  # fmt: skip
    """The gate_up product w = [gate; up] ([2 WIDTH, K]) with SiLU(gate) * up as its epilogue:
    the tile's rows alternate gate and up rows of the same BLOCK_N / 2 channels, so one product
    gives both. h[m, c] in float32 (both scales applied) and each row's max |h| over the tile's
    channels at chunk_max[m, tile] (the per-row quantisation's first half, `quantize_chunks`)."""
    wait_for_previous(PDL)
    HALF: tl.constexpr = BLOCK_N // 2
    tile = tl.program_id(0)
    j = tl.arange(0, BLOCK_N)
    c = tile * HALF + j // 2
    n = tl.where(c < WIDTH, c + (j % 2) * WIDTH, 2 * WIDTH)  # gate row c, up row WIDTH + c; past the end: masked
    m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    acc = _tile_product(x_ptr + m.to(tl.int64)[:, None] * K, w_ptr + n.to(tl.int64)[:, None] * K, m, n, M, 2 * WIDTH, K,
                        BLOCK_M, BLOCK_N, BLOCK_K, EVEN_K, x_scale_ptr + m, False)  # fmt: skip
    acc = acc * tl.load(x_scale_ptr + m, mask=m < M, other=0.0)[None, :] * tl.load(w_scale_ptr + n, mask=n < 2 * WIDTH, other=0.0)[:, None]
    gate, up = tl.split(tl.permute(tl.reshape(acc, [HALF, 2, BLOCK_M]), (0, 2, 1)))
    h = gate / (1.0 + tl.exp(-gate)) * up  # [HALF, BLOCK_M]
    cols = tile * HALF + tl.arange(0, HALF)
    tl.store(h_ptr + m.to(tl.int64)[None, :] * WIDTH + cols[:, None], h, mask=(cols < WIDTH)[:, None] & (m < M)[None, :])
    tl.store(chunk_max_ptr + m * CHUNKS + tile, tl.max(tl.abs(h), axis=0), mask=m < M)


MAX_ROWS = 64  # beyond this the weight would be read once per 64 rows: cuBLAS's tiles serve better


@dataclass(frozen=True)
class SkinnyConfig:
    block_n: int = 64
    block_k: int = 256
    num_warps: int = 4
    num_stages: int = 4

    @property
    def name(self) -> str:
        return f"triton/{self.block_n}x{self.block_k}/w{self.num_warps}/s{self.num_stages}"

    @classmethod
    def parse(cls, name: str) -> SkinnyConfig:
        """The config of a `name` ("triton/64x256/w4/s6")."""
        _, tile, warps, stages = name.split("/")
        block_n, block_k = tile.split("x")
        return cls(int(block_n), int(block_k), int(warps[1:]), int(stages[1:]))


# What the engine times for each kind of linear: the fastest at 16 and 64 rows for the
# Qwen2.5-14B shapes on an H100 (`bench/fp8_gemm.py`), and 32-wide tiles for the small outputs
# (o_proj's 5,120 outputs fill only 80 of 132 multiprocessors with 64-wide tiles: 75-80% of the
# floor; in the engine on an H100 the 32-wide tiles were slower for every 14B kind).
CANDIDATES = (
    SkinnyConfig(64, 256, 4, 6), SkinnyConfig(64, 256, 4, 4), SkinnyConfig(64, 256, 4, 3), SkinnyConfig(128, 256, 4, 4),
    SkinnyConfig(32, 256, 4, 4), SkinnyConfig(32, 512, 4, 3),
)  # fmt: skip


def _block_m(rows: int) -> int:
    """Rows per program: the batch's rows padded to a power of two, at least the tensor cores' 16."""
    return max(16, triton.next_power_of_2(min(rows, MAX_ROWS)))


def skinny_mm(x: torch.Tensor, w: torch.Tensor, config: SkinnyConfig = CANDIDATES[0], pdl: bool = False,
              group_scales: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """x [rows, in], w [out, in] (same dtype) -> x @ w.T [rows, out] float32; `pdl`: launched
    programmatically (`launch`). With `group_scales` [rows, in / config.block_k] (x quantised per
    row and group of block_k columns): the sum of each group's product times its scale (the
    weight's own scales not applied)."""
    x, w = x.contiguous(), w.contiguous()
    rows, k = x.shape
    n, k_w = w.shape
    assert k == k_w, (x.shape, w.shape)
    c = config
    if group_scales is not None:
        group_scales = group_scales.contiguous()
        assert k % c.block_k == 0 and group_scales.shape == (rows, k // c.block_k), (x.shape, group_scales.shape, c)
    block_m = _block_m(rows)
    out = torch.empty(rows, n, dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(n, c.block_n), triton.cdiv(rows, block_m))
    _skinny_kernel[grid](x, x if group_scales is None else group_scales, w, out, rows, n, k, BLOCK_M=block_m, BLOCK_N=c.block_n,
                         BLOCK_K=c.block_k, EVEN_K=k % c.block_k == 0, GROUP_SCALES=group_scales is not None, PDL=pdl,
                         num_warps=c.num_warps, num_stages=c.num_stages, launch_pdl=pdl)  # fmt: skip
    return out


def skinny_silu_mm(x: torch.Tensor, x_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, config: SkinnyConfig = CANDIDATES[0],
                   pdl: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:  # fmt: skip
    """SiLU(gate) * up of the gate_up product in one kernel: x [rows, in] with its row scales
    [rows, 1], w = [gate; up] [2 width, in] with its channel scales [1, 2 width] -> (h [rows,
    width] float32, each row's max |h| per tile of channels [rows, chunks padded to a power of
    two], the number of tiles), for `row_kernels.quantize_chunks`."""
    x, w = x.contiguous(), w.contiguous()
    rows, k = x.shape
    width = w.shape[0] // 2
    assert w.shape == (2 * width, k), (x.shape, w.shape)
    c = config
    block_m = _block_m(rows)
    tiles = triton.cdiv(width, c.block_n // 2)
    h = torch.empty(rows, width, dtype=torch.float32, device=x.device)
    chunk_max = torch.empty(rows, triton.next_power_of_2(tiles), dtype=torch.float32, device=x.device)
    _skinny_silu_kernel[(tiles, triton.cdiv(rows, block_m))](
        x, w, x_scale, w_scale, h, chunk_max, rows, width, k, BLOCK_M=block_m, BLOCK_N=c.block_n, BLOCK_K=c.block_k,
        EVEN_K=k % c.block_k == 0, CHUNKS=chunk_max.shape[1], PDL=pdl, num_warps=c.num_warps, num_stages=c.num_stages, launch_pdl=pdl,
    )  # fmt: skip
    return h, chunk_max, tiles
