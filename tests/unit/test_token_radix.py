"""TokenRadixTree: prefix matching, sharing, retention priorities, expiry and LRU eviction."""

import ast
import pathlib

from helium_trt.cache.block_pool import BlockPool
from helium_trt.cache.token_radix import BlockRetention, TokenRadixTree

BS = 4


def _cache(tree: TokenRadixTree, tokens: list[int], now: float, retentions=None) -> list[int]:
    """Allocate blocks for the full blocks of ``tokens``, cache them, drop the request's refs."""
    num_blocks = len(tokens) // BS
    block_ids = tree.pool.allocate(num_blocks)
    tree_ids = tree.insert(tokens, block_ids, now, retentions)
    tree.pool.decref(block_ids)
    return tree_ids


def test_match_is_whole_blocks_plus_partial_next_block():
    tree = TokenRadixTree(BlockPool(8), BS)
    assert _cache(tree, list(range(10)), now=1.0) == [0, 1]
    match = tree.match_prefix([0, 1, 2, 3, 4, 5, 6, 99, 8])
    assert match.block_ids == (0,)
    assert match.num_block_tokens == 4
    assert (match.partial_block_id, match.num_partial_tokens) == (1, 3)
    assert match.num_tokens == 7
    assert tree.match_prefix([5, 6, 7]).num_tokens == 0


def test_duplicate_insert_returns_the_tree_blocks():
    pool = BlockPool(8)
    tree = TokenRadixTree(pool, BS)
    _cache(tree, list(range(8)), now=1.0)
    mine = pool.allocate(3)
    assert mine == [2, 3, 4]
    assert tree.insert(list(range(12)), mine, now=2.0) == [0, 1, 4]
    assert pool.ref_count(2) == 1 and pool.ref_count(4) == 2


def test_referenced_blocks_are_never_evicted():
    pool = BlockPool(4)
    tree = TokenRadixTree(pool, BS)
    held = pool.allocate(2)
    tree.insert(list(range(8)), held, now=1.0)
    assert tree.num_evictable() == 0
    assert tree.evict(2, now=2.0) == []
    pool.decref(held)
    assert tree.num_evictable() == 2
    assert tree.evict(5, now=3.0) == [1, 0]  # leaf first, then its parent
    assert pool.num_free == 4


def test_lowest_priority_then_least_recently_used_is_evicted_first():
    pool = BlockPool(8)
    tree = TokenRadixTree(pool, BS)
    high = _cache(tree, [1] * 4, now=1.0, retentions=[BlockRetention(90)])
    old = _cache(tree, [2] * 4, now=2.0)
    new = _cache(tree, [3] * 4, now=3.0)
    low = _cache(tree, [4] * 4, now=4.0, retentions=[BlockRetention(10)])
    assert (high, old, new, low) == ([0], [1], [2], [3])
    tree.match_prefix([2] * 4, now=5.0)  # touching "old" makes "new" the LRU default block
    assert tree.evict(3, now=6.0) == [3, 2, 1]
    assert tree.match_prefix([1] * 4).block_ids == (0,)


def test_priority_expires_back_to_default():
    pool = BlockPool(8)
    tree = TokenRadixTree(pool, BS)
    _cache(tree, [1] * 4, now=1.0, retentions=[BlockRetention(90, expires_at=10.0)])
    _cache(tree, [2] * 4, now=2.0)
    assert tree.retention_of(0, now=5.0) == 90
    assert tree.evict(1, now=5.0) == [1]
    _cache(tree, [2] * 4, now=6.0)
    assert tree.retention_of(0, now=11.0) == 35
    assert tree.evict(1, now=11.0) == [0]  # expired: now the older default block goes


def test_latest_explicit_priority_wins_and_none_keeps_it():
    pool = BlockPool(8)
    tree = TokenRadixTree(pool, BS)
    _cache(tree, [1] * 8, now=1.0, retentions=[BlockRetention(80), BlockRetention(80)])
    _cache(tree, [1] * 8, now=2.0, retentions=[BlockRetention(20), None])
    assert tree.retention_of(0, now=3.0) == 20
    assert tree.retention_of(1, now=3.0) == 80


def test_cache_package_is_pure():
    allowed = {"__future__", "dataclasses", "heapq", "helium_trt"}
    cache_dir = pathlib.Path(__file__).resolve().parents[2] / "helium_trt" / "cache"
    for path in (cache_dir / "block_pool.py", cache_dir / "token_radix.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] in allowed, f"{path} imports {name}"
