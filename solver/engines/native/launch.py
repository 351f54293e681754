"""Programmatic dependent launch for this engine's Triton kernels (Hopper and later).

In a decode step every kernel waits for the one before it to finish, and in a CUDA graph the
next one still takes a few microseconds to start on the multiprocessors: at 16 rows a layer is
about 11 kernels of 2-50 us each, so those gaps are a visible share of the step. Launched
programmatically (`launch_pdl=True`), a kernel's programs may be placed while the kernel before
it is still running; each program first waits (`griddepcontrol.wait`) until that kernel has
finished and its writes are visible, then lets the next kernel be placed. The order of the
computation is unchanged: nothing is read or written before the wait, except that the FP8
product kernel asks the first bytes of its weight rows into L2 (`prefetch_l2`; the weights are
constant, and a prefetch loads nothing into registers).

Guaranteed: a kernel with `PDL=True` calls `wait_for_previous` before any global load or store,
so it sees what every kernel before it wrote and writes nothing a kernel before it still reads
(the one before it has finished; it, in turn, waited for its own predecessor, or was launched
plainly). Not covered: kernels that are not ours (cuBLAS, compiled ops) launch as before.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


def supported(device: torch.device) -> bool:
    """Whether kernels on `device` can be launched programmatically (CUDA, compute capability 9+)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


@triton.jit
def wait_for_previous(PDL: tl.constexpr):
    """With PDL: wait until the kernel before has finished, then let the next one be placed."""
    if PDL:
        gdc_wait()
        gdc_launch_dependents()


@triton.jit
def prefetch_l2(pointers):
    """Ask the cache lines at `pointers` (a tensor of addresses) into L2; nothing is loaded into
    registers and nothing waits for them."""
    tl.inline_asm_elementwise("mov.u32 $0, 0;\n\tprefetch.global.L2 [$1];", "=r,l", [pointers], dtype=tl.int32, is_pure=False, pack=1)
