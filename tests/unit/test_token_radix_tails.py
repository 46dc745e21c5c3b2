"""TokenRadixTree tails: partly filled blocks cached below whole ones, matched token by token."""

from helium_trt.cache.block_pool import BlockPool
from helium_trt.cache.token_radix import CacheScope, TokenRadixTree

BS = 4


def _tree(num_blocks: int = 8) -> TokenRadixTree:
    return TokenRadixTree(BlockPool(num_blocks), BS)


def _held(tree: TokenRadixTree, tokens: list[int], now: float = 1.0) -> list[int]:
    """A sequence's blocks for ``tokens``: whole ones cached, the tail block still its own."""
    blocks = tree.pool.allocate(-(-len(tokens) // BS))
    tree.insert(tokens, blocks[:len(tokens) // BS], now)
    return blocks


def test_a_tail_is_matched_as_the_partial_block_and_outlives_its_sequence():
    tree = _tree()
    tokens = list(range(10))
    blocks = _held(tree, tokens)
    assert tree.insert_partial(tokens, blocks[2], now=2.0)
    tree.pool.decref(blocks)  # the sequence ends: the tree keeps all three blocks
    assert tree.pool.num_free == 5
    match = tree.match_prefix(tokens + [50, 51])
    assert match.block_ids == (blocks[0], blocks[1])
    assert (match.partial_block_id, match.num_partial_tokens) == (blocks[2], 2)
    assert tree.match_prefix([0, 1, 2, 3, 4, 5, 6, 7, 8, 99]).num_partial_tokens == 1
    assert tree.num_evictable() == 3
    assert tree.evict(1, now=3.0) == [blocks[2]]  # a leaf, least recently used


def test_a_tail_grows_in_place_and_moves_into_the_whole_block_once_full():
    tree = _tree()
    tokens = list(range(9))
    blocks = _held(tree, tokens)
    assert tree.insert_partial(tokens, blocks[2], now=2.0)
    assert tree.insert_partial(tokens + [9, 10], blocks[2], now=3.0)
    assert tree.pool.ref_count(blocks[2]) == 2  # one sequence, one tree node
    assert not tree.insert_partial(tokens, blocks[2], now=3.5)  # the tree holds more already
    tree.insert(tokens + [9, 10, 11], blocks, now=4.0)  # the block filled up
    assert tree.pool.ref_count(blocks[2]) == 2
    assert tree.num_cached_blocks == 3
    match = tree.match_prefix(tokens + [9, 10, 11, 12])
    assert match.block_ids == tuple(blocks) and match.num_partial_tokens == 0
    tree.pool.decref(blocks)
    assert tree.evict(8, now=5.0) == list(reversed(blocks))
    assert tree.pool.num_free == 8


def test_a_longer_tail_of_another_block_replaces_a_shorter_one_and_different_tails_coexist():
    tree = _tree()
    short = _held(tree, [0, 1, 2, 3, 4])
    assert tree.insert_partial([0, 1, 2, 3, 4], short[1], now=2.0)
    tree.pool.decref(short)
    long = tree.pool.allocate(2)
    tree.insert([0, 1, 2, 3], long[:1], now=3.0)
    assert tree.insert_partial([0, 1, 2, 3, 4, 5, 6], long[1], now=3.0)
    assert tree.pool.ref_count(short[1]) == 0  # replaced: freed
    other = tree.pool.allocate(1)[0]
    assert tree.insert_partial([0, 1, 2, 3, 7], other, now=4.0)  # differs: kept beside it
    assert tree.match_prefix([0, 1, 2, 3, 4, 5, 9]).partial_block_id == long[1]
    assert tree.match_prefix([0, 1, 2, 3, 7, 7]).partial_block_id == other
    assert not tree.insert_partial([0, 1, 2, 3, 4], tree.pool.allocate(1)[0], now=5.0)


def test_no_tail_without_its_whole_blocks_and_tails_keep_to_their_scope():
    tree = _tree()
    block = tree.pool.allocate(1)[0]
    assert not tree.insert_partial([0, 1, 2, 3, 4], block, now=1.0)  # block [0..3] not cached
    scope = CacheScope("tenant-a")
    assert tree.insert_partial([5, 6], block, now=1.0, scope=scope)
    assert tree.match_prefix([5, 6, 7], scope=scope).num_tokens == 2
    assert tree.match_prefix([5, 6, 7]).num_tokens == 0
    assert tree.match_prefix([5, 6, 7], scope=CacheScope("tenant-b")).num_tokens == 0
