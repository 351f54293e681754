import sys, torch
sys.path.insert(0, "bench")
import paged_attention as pa
from solver.engines.native.attention import DecodeMeta
from solver.engines.native.paged_attention import paged_decode_splits
q = torch.randn(16, 40, 128, device="cuda", dtype=torch.bfloat16)
layers = [pa.layer_inputs(torch.bfloat16, 1000) for _ in range(8)]
for _ in range(2):
    for k, v, m in layers:
        paged_decode_splits(q, k, v, DecodeMeta(m.slot_mapping, m.block_tables, m.context_lens), 0.088)
torch.cuda.synchronize()
