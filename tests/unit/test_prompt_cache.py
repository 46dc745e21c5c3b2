"""Prompt-result cache: exact keys, deterministic configs only, LRU bounded by bytes."""

from helium_trt.cache.prompt_cache import PromptResultCache
from helium_trt.optimizer import PromptResultCache as Protocol
from helium_trt.plan.ops import GenerationConfig

GREEDY = GenerationConfig(max_tokens=8)


def test_satisfies_the_optimizer_protocol_and_hits_exactly():
    cache = PromptResultCache()
    assert isinstance(cache, Protocol)
    assert cache.store("m", "Q: 2+2?", GREEDY, "4")
    assert cache.lookup("m", "Q: 2+2?", GREEDY) == "4"
    assert cache.lookup("m", "Q: 2+2? ", GREEDY) is None
    assert cache.lookup("other", "Q: 2+2?", GREEDY) is None
    assert cache.lookup("m", "Q: 2+2?", GenerationConfig(max_tokens=9)) is None
    assert cache.stats().num_hits == 1 and cache.stats().num_misses == 3


def test_sampling_without_seed_is_never_cached_but_seeded_is():
    cache = PromptResultCache()
    assert not cache.store("m", "p", GenerationConfig(temperature=0.7), "x")
    seeded = GenerationConfig(temperature=0.7, seed=3)
    assert cache.store("m", "p", seeded, "y") and cache.lookup("m", "p", seeded) == "y"
    assert cache.lookup("m", "p", GenerationConfig(temperature=0.7, seed=4)) is None


def test_lru_eviction_by_bytes():
    cache = PromptResultCache(max_bytes=3 * (64 + 1 + 100 + 1))
    for i in range(3):
        cache.store("m", f"{i}" + "x" * 99, GREEDY, "y")
    assert len(cache) == 3
    cache.lookup("m", "0" + "x" * 99, GREEDY)  # 0 becomes most recent
    cache.store("m", "3" + "x" * 99, GREEDY, "y")
    assert cache.lookup("m", "1" + "x" * 99, GREEDY) is None
    assert cache.lookup("m", "0" + "x" * 99, GREEDY) == "y"
    assert cache.stats().num_evictions == 1 and cache.stats().num_bytes <= cache.max_bytes
    assert not cache.store("m", "z" * 10_000, GREEDY, "y")


def test_may_hold_follows_stores_and_evictions_per_model_and_config():
    cache = PromptResultCache(max_bytes=2 * (64 + 1 + 100 + 1))
    other = GenerationConfig(max_tokens=9)
    assert not cache.may_hold("m", GREEDY)
    cache.store("m", "0" + "x" * 99, GREEDY, "y")
    cache.store("m", "0" + "x" * 99, GREEDY, "z")  # replacing an entry does not count twice
    assert cache.may_hold("m", GREEDY)
    assert not cache.may_hold("m", other) and not cache.may_hold("n", GREEDY)
    cache.store("m", "1" + "x" * 99, other, "y")
    cache.store("m", "2" + "x" * 99, other, "y")  # evicts the only GREEDY entry
    assert cache.stats().num_evictions == 1
    assert not cache.may_hold("m", GREEDY) and cache.may_hold("m", other)
