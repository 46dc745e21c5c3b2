"""TokenRadixTree scopes: salted blocks match only the same salt, public blocks match everyone."""

from helium_trt.cache.block_pool import BlockPool
from helium_trt.cache.token_radix import UNSCOPED, CacheScope, TokenRadixTree

BS = 4
A, B = CacheScope("tenant:a"), CacheScope("tenant:b")


def _cache(tree: TokenRadixTree, tokens: list[int], scope: CacheScope) -> list[int]:
    block_ids = tree.pool.allocate(len(tokens) // BS)
    tree_ids = tree.insert(tokens, block_ids, 1.0, scope=scope)
    tree.pool.decref(block_ids)
    return tree_ids


def test_a_salted_prefix_is_invisible_to_other_salts_and_to_no_salt():
    tree = TokenRadixTree(BlockPool(16), BS)
    _cache(tree, list(range(10)), A)  # two whole blocks cached
    assert tree.match_prefix(list(range(10)), scope=A).num_tokens == 8
    for other in (B, UNSCOPED):
        match = tree.match_prefix(list(range(10)), scope=other)
        assert match.num_tokens == 0 and match.partial_block_id is None


def test_the_same_tokens_under_two_salts_are_two_sets_of_blocks():
    tree = TokenRadixTree(BlockPool(16), BS)
    assert _cache(tree, list(range(8)), A) == [0, 1]
    assert _cache(tree, list(range(8)), B) == [2, 3]
    assert tree.match_prefix(list(range(8)), scope=B).block_ids == (2, 3)
    assert tree.num_cached_blocks == 4


def test_a_public_prefix_is_shared_and_the_rest_stays_salted():
    tree = TokenRadixTree(BlockPool(16), BS)
    public = list(range(8))  # two whole blocks
    a_ids = _cache(tree, public + [50, 51, 52, 53], CacheScope("tenant:a", num_public_tokens=8))
    b_scope = CacheScope("tenant:b", num_public_tokens=8)
    match = tree.match_prefix(public + [50, 51, 52, 53], scope=b_scope)
    assert match.block_ids == tuple(a_ids[:2]) and match.num_tokens == 8
    # Without the public marking, tenant b's first blocks are salted: nothing matches.
    assert tree.match_prefix(public, scope=B).num_tokens == 0


def test_a_block_straddling_the_public_boundary_is_salted():
    tree = TokenRadixTree(BlockPool(16), BS)
    _cache(tree, list(range(8)), CacheScope("tenant:a", num_public_tokens=6))
    match = tree.match_prefix(list(range(8)), scope=CacheScope("tenant:b", num_public_tokens=6))
    assert match.num_block_tokens == 4 and match.partial_block_id is None


def test_same_keys_compares_how_two_scopes_key_the_leading_blocks():
    assert A.same_keys(CacheScope("tenant:a"), 3, BS)
    assert not A.same_keys(B, 3, BS) and not A.same_keys(UNSCOPED, 3, BS)
    pa, pb = CacheScope("tenant:a", 8), CacheScope("tenant:b", 8)
    assert pa.same_keys(pb, 2, BS) and not pa.same_keys(pb, 3, BS)
    assert pa.same_keys(UNSCOPED, 2, BS)
