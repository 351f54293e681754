"""One decode step's attention for ncu (Nsight Compute) to look at: the per-row paged kernel at
the 14B shape, 16 rows of a 1,000-token shared prompt + 512 own positions (as
`bench/paged_attention.py`), launched 16 times over 8 layers' caches.

    ncu --clock-control none -k regex:_decode_kernel -s 10 -c 1 \\
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \\
        --section LaunchStats --section WarpStateStats --section SchedulerStats \\
        python bench/ncu_attention.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paged_attention as bench  # noqa: E402

from solver.engines.native.attention import DecodeMeta  # noqa: E402
from solver.engines.native.paged_attention import paged_decode_splits  # noqa: E402

q = torch.randn(bench.ROWS, bench.HEADS, bench.DIM, device="cuda", dtype=torch.bfloat16)
layers = [bench.layer_inputs(torch.bfloat16, 1000) for _ in range(8)]
for _ in range(2):
    for k, v, meta in layers:  # each row reads the whole prompt itself (no shared-length hint)
        paged_decode_splits(q, k, v, DecodeMeta(meta.slot_mapping, meta.block_tables, meta.context_lens), bench.DIM**-0.5)
torch.cuda.synchronize()
