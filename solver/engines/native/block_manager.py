"""KV-cache blocks: allocation, reference counts and prefix sharing.

The cache holds `num_blocks` blocks of `block_size` token slots each. Block 0 is reserved as a
scratch block: padded rows of a CUDA-graph batch write there, and no sequence ever owns it.

Sharing: a *full* block whose tokens all lie before the last token of a sequence is shareable.
It is keyed by a hash chained over the whole prefix up to its end (and its tokens are compared
on a hit), so two sequences share a block only when all tokens before it agree too. The last
(partial, or last-token) block of a sequence is always private, so shared blocks are never
written again and no copy-on-write is needed.

A shared block is usable by a second sequence only once the first sequence's prefill of that
block has been scheduled (`commit`): a prefill batch writes every new K/V of a layer before any
attention of that layer reads the cache, so a block computed in the same step is safe to read.
A hit on a block that is allocated but not yet scheduled answers `DEFER`: the caller waits a
step instead of computing the same prefix twice.

Guaranteed: a block's `ref_count` equals the number of sequences whose table lists it; a block
with `ref_count` 0 is free and unkeyed; `num_free_blocks` returns to `num_blocks - 1` when every
sequence is freed. Not done: keeping freed blocks as a prefix cache for later requests.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .sequence import Sequence

DEFER = "defer"


@dataclass(eq=False)
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = ()
    is_committed: bool = False


def _chained_hashes(token_ids: list[int], block_size: int) -> list[tuple[int, tuple[int, ...]]]:
    """(hash, tokens) of each shareable full block: those ending before the last token."""
    out: list[tuple[int, tuple[int, ...]]] = []
    previous = 0
    for i in range((len(token_ids) - 1) // block_size):
        tokens = tuple(token_ids[i * block_size : (i + 1) * block_size])
        previous = hash((previous, tokens))
        out.append((previous, tokens))
    return out


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        assert num_blocks >= 2, "one scratch block plus at least one usable block"
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_ids: deque[int] = deque(range(1, num_blocks))
        self.hash_to_block: dict[int, Block] = {}

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_ids)

    def num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def allocate(self, seq: Sequence) -> bool | str:
        """Give a sequence without blocks a table covering all its tokens, sharing committed
        prefix blocks. Returns True, False (not enough free blocks; nothing changed) or DEFER."""
        assert not seq.block_table and seq.num_cached_tokens == 0
        shared: list[Block] = []
        hashes = _chained_hashes(seq.token_ids, self.block_size)
        for key, tokens in hashes:
            block = self.hash_to_block.get(key)
            if block is None or block.token_ids != tokens:
                break
            if not block.is_committed:
                return DEFER
            shared.append(block)
        num_new = self.num_blocks_for(seq.num_tokens) - len(shared)
        if num_new > self.num_free_blocks:
            return False
        for block in shared:
            block.ref_count += 1
        seq.block_table = [b.block_id for b in shared] + [self._take() for _ in range(num_new)]
        seq.num_cached_tokens = len(shared) * self.block_size
        for i in range(len(shared), len(hashes)):
            self._key(self.blocks[seq.block_table[i]], *hashes[i])
        return True

    def grow(self, seq: Sequence, num_lookahead: int = 0) -> bool:
        """Add blocks so the table covers all of the sequence's tokens plus `num_lookahead` draft
        tokens; False if there are too few free blocks (nothing changed)."""
        num_new = self.num_blocks_for(seq.num_tokens + num_lookahead) - len(seq.block_table)
        if num_new > self.num_free_blocks:
            return False
        seq.block_table += [self._take() for _ in range(max(num_new, 0))]
        return True

    def trim(self, seq: Sequence) -> None:
        """Free the blocks past the sequence's tokens (taken by `grow` for drafts that were
        rejected). They are private: only `grow` adds blocks past the last token."""
        keep = self.num_blocks_for(seq.num_tokens)
        for block_id in seq.block_table[keep:]:
            block = self.blocks[block_id]
            assert block.ref_count == 1 and block.hash is None
            block.ref_count, block.is_committed = 0, False
            self.free_ids.append(block_id)
        del seq.block_table[keep:]

    def commit(self, seq: Sequence, num_tokens: int) -> None:
        """The sequence's tokens up to `num_tokens` are being computed in this step: its keyed
        blocks that end within them become shareable."""
        for block_id in seq.block_table[: num_tokens // self.block_size]:
            self.blocks[block_id].is_committed = True

    def free(self, seq: Sequence) -> None:
        for block_id in seq.block_table:
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0
            if block.ref_count == 0:
                if block.hash is not None and self.hash_to_block.get(block.hash) is block:
                    del self.hash_to_block[block.hash]
                block.hash, block.token_ids, block.is_committed = None, (), False
                self.free_ids.append(block_id)
        seq.block_table = []
        seq.num_cached_tokens = 0

    def _take(self) -> int:
        block_id = self.free_ids.popleft()
        block = self.blocks[block_id]
        assert block.ref_count == 0
        block.ref_count = 1
        return block_id

    def _key(self, block: Block, key: int, tokens: tuple[int, ...]) -> None:
        if key not in self.hash_to_block:
            block.hash, block.token_ids = key, tokens
            self.hash_to_block[key] = block
