"""BlockPool: exact block ids, reference counting, exhaustion."""

import pytest

from helium_trt.cache.block_pool import BlockPool
from helium_trt.errors import ResourceExhaustedError


def test_fresh_pool_hands_out_ids_in_order():
    pool = BlockPool(4)
    assert pool.allocate(3) == [0, 1, 2]
    assert pool.num_free == 1
    assert pool.num_used == 3


def test_freed_blocks_are_reused_last_in_first_out():
    pool = BlockPool(4)
    pool.allocate(3)
    assert pool.decref([1, 0]) == [1, 0]
    assert pool.allocate(2) == [0, 1]


def test_shared_block_is_freed_by_its_last_holder():
    pool = BlockPool(2)
    [block_id] = pool.allocate(1)
    pool.incref([block_id])
    assert pool.ref_count(block_id) == 2
    assert pool.decref([block_id]) == []
    assert pool.decref([block_id]) == [block_id]
    assert pool.num_free == 2


def test_exhaustion_and_misuse_raise():
    pool = BlockPool(2)
    pool.allocate(2)
    with pytest.raises(ResourceExhaustedError, match="3 blocks requested, 0 free"):
        pool.allocate(3)
    pool.decref([0])
    with pytest.raises(ValueError):
        pool.decref([0])
    with pytest.raises(ValueError):
        pool.incref([0])
