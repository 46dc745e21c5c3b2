"""Scheduler (pure): exact orders on small DAGs, warm list, retention spans, placement, search."""

from helium_trt.scheduler import (
    DEFAULT_PRIORITY, CallSpec, RetentionSpan, SchedulerConfig, SimulatedCache, build_schedule,
    chain_depths, exhaustive_search, greedy_order, prefill_minimum, retention_spans, simulate,
    trie_size,
)

SYS_A = tuple(range(100, 164))  # 64 tokens = 4 blocks
SYS_B = tuple(range(300, 364))


def spec(cid, known, deps=(), static=None, unknown=0, decode=8):
    return CallSpec(cid, cid.split("#")[0], 0, tuple(known), unknown, decode, tuple(deps),
                    len(known) if static is None else static)


def map_reduce(n=3):
    calls = {f"e{i}": spec(f"e{i}", SYS_A + (i,) * 5, static=len(SYS_A) + 5) for i in range(n)}
    calls["judge"] = spec("judge", range(500, 520), deps=tuple(calls), unknown=24)
    return calls


def test_chain_depths_count_calls_to_a_sink():
    calls = map_reduce()
    assert chain_depths(calls) == {"e0": 2, "e1": 2, "e2": 2, "judge": 1}


def test_critical_path_goes_first():
    calls = {
        "short": spec("short", range(10, 30)),
        "chain1": spec("chain1", range(40, 60)),
        "chain2": spec("chain2", range(70, 90), deps=("chain1",)),
    }
    assert greedy_order(calls) == ("chain1", "short", "chain2")


def test_siblings_sharing_a_prefix_run_together():
    # Plan order interleaves two prefix groups; greedy regroups them.
    calls = {
        "a1": spec("a1", SYS_A + (1,)), "b1": spec("b1", SYS_B + (1,)),
        "a2": spec("a2", SYS_A + (2,)), "b2": spec("b2", SYS_B + (2,)),
    }
    assert greedy_order(calls) == ("a1", "a2", "b1", "b2")


def test_warm_list_holds_shared_static_prefixes_block_aligned():
    schedule = build_schedule(map_reduce())
    [warm] = schedule.warm
    assert warm.tokens == SYS_A  # 69 shared? no: 64 shared tokens, block aligned
    assert warm.consumers == ("e0", "e1", "e2")
    assert schedule.calls["e1"].shared_len == 64 and schedule.calls["judge"].prefix_id is None


def test_warming_switch_empties_the_warm_list_and_fifo_keeps_plan_order():
    calls = {"b1": spec("b1", SYS_B + (1,)), "a1": spec("a1", SYS_A + (1,)),
             "b2": spec("b2", SYS_B + (2,))}
    config = SchedulerConfig(cache_aware=False, proactive_warming=False)
    schedule = build_schedule(calls, config)
    assert schedule.order == ("b1", "a1", "b2") and schedule.warm == ()


def test_retention_spans_hold_shared_prefix_then_release():
    config = SchedulerConfig()
    spans, decode = retention_spans(64, False, config)
    assert spans == (RetentionSpan(0, 64, 90), RetentionSpan(64, None, 10)) and decode == 10
    spans, _ = retention_spans(64, True, config)
    assert spans[0] == RetentionSpan(0, 64, DEFAULT_PRIORITY)
    assert retention_spans(64, False, SchedulerConfig(retention_priorities=False)) == ((), None)


def test_placement_colocates_siblings_and_uses_both_workers():
    calls = {}
    for group, sys_tokens in (("a", SYS_A), ("b", SYS_B)):
        for i in range(3):
            calls[f"{group}{i}"] = spec(f"{group}{i}", sys_tokens + (i,) * 4)
    schedule = build_schedule(calls, SchedulerConfig(num_workers=2, batch_capacity=8))
    workers = {cid: p.worker for cid, p in schedule.calls.items()}
    assert len({workers[f"a{i}"] for i in range(3)}) == 1
    assert len({workers[f"b{i}"] for i in range(3)}) == 1
    assert workers["a0"] != workers["b0"]
    assert {w.worker for w in schedule.warm} == {0, 1}


def test_resident_prefix_seeds_the_simulation():
    calls = {"x": spec("x", SYS_A + (1,))}
    cold = build_schedule(calls).estimate
    warm = build_schedule(calls, resident=[[SYS_A]]).estimate
    assert cold.prefill_computed - warm.prefill_computed == 64


def test_exhaustive_search_matches_greedy_on_map_reduce():
    calls = map_reduce(4)
    result = exhaustive_search(calls, SchedulerConfig())
    assert result.num_orders == 24
    greedy = simulate(calls, greedy_order(calls), SchedulerConfig())
    assert greedy.total == result.best.total


def test_simulated_cache_is_lru_by_block():
    cache = SimulatedCache(block_size=4, capacity_blocks=2)
    assert cache.insert((1, 2, 3, 4, 5, 6, 7, 8)) == 0
    assert cache.num_resident((1, 2, 3, 4, 5, 6, 7, 8, 9)) == 8
    cache.insert((9, 9, 9, 9))  # evicts the least recently used block
    assert cache.num_resident((1, 2, 3, 4, 5, 6, 7, 8)) == 4


def test_trie_size_counts_each_distinct_prefix_token_once():
    assert trie_size([(1, 2, 3), (1, 2, 4), (5,)]) == 5


def test_prefill_minimum_does_not_count_prompt_tokens_some_call_decoded():
    # Round 2 repeats round 1's prompt and reply: the reply's tokens were computed by decoding,
    # except the last one (sampled, never fed back).
    calls = [((1, 2, 3), (7, 8, 9)), ((1, 2, 3, 7, 8, 9, 4), (5,))]
    assert trie_size(p for p, _ in calls) == 7
    assert prefill_minimum(calls) == 7 - 2
    # Order does not matter; a reply no prompt repeats, or a single-token one, changes nothing.
    assert prefill_minimum(calls[::-1]) == 5
    assert prefill_minimum([((1, 2), (3, 4, 5)), ((1, 2, 3), ())]) == 3 - 1
    assert prefill_minimum([((1, 2), (9,)), ((1, 2, 9, 3), ())]) == 4
    assert prefill_minimum([((1,), (6, 6, 6))]) == 1
    assert prefill_minimum([]) == 0


def _reference_greedy_order(calls):
    """The definition the fast greedy order must reproduce: rescan every ready call each step."""
    from helium_trt.scheduler.prefix_index import common_prefix

    depth, position = chain_depths(calls), {cid: i for i, cid in enumerate(calls)}
    order, previous, pending = [], (), dict(calls)
    while pending:
        ready = [c for c, s in pending.items() if all(d in order or d not in calls for d in s.deps)]
        best = min(ready, key=lambda c: (-depth[c], -common_prefix(previous, calls[c].known_tokens),
                                         position[c]))
        order.append(best)
        previous = calls[best].known_tokens
        del pending[best]
    return tuple(order)


def test_greedy_order_matches_the_rescanning_definition_on_random_dags():
    import random

    rng = random.Random(7)
    for trial in range(200):
        n = rng.randint(1, 30)
        calls = {}
        for i in range(n):
            prefix = rng.choice([(), SYS_A[:rng.randint(0, 64)], SYS_B[:rng.randint(0, 64)]])
            tail = tuple(rng.choice((1, 2, 3)) for _ in range(rng.randint(0, 4)))
            deps = tuple(rng.sample([f"c{j}" for j in range(i)], k=min(i, rng.randint(0, 2))))
            calls[f"c{i}"] = spec(f"c{i}", prefix + tail, deps=deps)
        assert greedy_order(calls) == _reference_greedy_order(calls), trial


def test_adjacent_common_prefixes_match_a_token_by_token_count():
    import random

    from helium_trt.scheduler.prefix_index import adjacent_common_packed, pack

    def naive(a, b):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    rng = random.Random(11)
    for trial in range(300):
        base = tuple(rng.randrange(1 << 32) for _ in range(rng.randint(0, 40)))
        seqs = [base[:rng.randint(0, len(base))] + tuple(rng.choice([(), (7,), (7, 8), (1 << 31,)]))
                for _ in range(rng.randint(1, 12))]
        if trial % 2:
            seqs.sort()  # sorted: mostly prefixes and equals; unsorted: a longer one first too
        got = adjacent_common_packed([pack(s) for s in seqs])
        assert got == [naive(a, b) for a, b in zip(seqs, seqs[1:])]
