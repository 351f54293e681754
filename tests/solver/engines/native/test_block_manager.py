"""BlockManager properties on plain sequences (no model): sharing, deferral, reference counts.

Run: pytest tests/solver/engines/native/test_block_manager.py -q
"""

from __future__ import annotations

from solver.engines.base import SamplingParams
from solver.engines.native.block_manager import DEFER, BlockManager
from solver.engines.native.sequence import Sequence
from solver.engines.sampling import generator_for


def seq(tokens: list[int]) -> Sequence:
    return Sequence("r", SamplingParams(max_tokens=1), generator_for(0), list(tokens))


def test_only_committed_full_blocks_before_the_last_token_are_shared():
    manager = BlockManager(num_blocks=20, block_size=4)
    first, second = seq(list(range(12))), seq(list(range(12)))
    assert manager.allocate(first) is True
    assert manager.allocate(second) == DEFER  # first's blocks are not scheduled yet
    manager.commit(first, 12)
    assert manager.allocate(second) is True
    # 12 tokens: blocks 0 and 1 end before the last token and are shared; block 2 holds it.
    assert second.block_table[:2] == first.block_table[:2] and second.block_table[2] != first.block_table[2]
    assert second.num_cached_tokens == 8
    assert [manager.blocks[b].ref_count for b in first.block_table] == [2, 2, 1]


def test_a_different_earlier_token_prevents_sharing_a_later_block():
    manager = BlockManager(num_blocks=20, block_size=4)
    first, second = seq(list(range(12))), seq([99] + list(range(1, 12)))
    manager.allocate(first)
    manager.commit(first, 12)
    manager.allocate(second)
    assert not set(first.block_table) & set(second.block_table)


def test_freeing_everything_returns_every_block_and_forgets_hashes():
    manager = BlockManager(num_blocks=10, block_size=4)
    seqs = [seq(list(range(9))) for _ in range(3)]
    for s in seqs:
        assert manager.allocate(s) is True
        manager.commit(s, 9)
    assert manager.num_free_blocks == 9 - (3 + 2 * 1)
    for s in seqs:
        manager.free(s)
    assert manager.num_free_blocks == 9 and not manager.hash_to_block
    assert all(b.ref_count == 0 for b in manager.blocks)


def test_allocation_that_does_not_fit_changes_nothing():
    manager = BlockManager(num_blocks=3, block_size=4)
    big = seq(list(range(9)))  # needs 3 blocks; 2 are usable
    assert manager.allocate(big) is False
    assert manager.num_free_blocks == 2 and big.block_table == []
