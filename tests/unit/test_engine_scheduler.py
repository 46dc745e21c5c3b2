"""Scheduler and KV manager without a model: exact block ids, prefix reuse, chunking, preemption."""

from __future__ import annotations

import ast
import pathlib

from helium_trt.engine.base import EngineRequest, SamplingConfig
from helium_trt.engine.embedded.kv_manager import KVManager
from helium_trt.engine.embedded.scheduler import Scheduler, SchedulerConfig
from helium_trt.engine.embedded.sequence import Sequence

BS = 4


def _seq(request_id: str, prompt: list[int], arrival: int, max_tokens: int = 8, priority: int = 0) -> Sequence:
    request = EngineRequest(request_id, tuple(prompt), SamplingConfig(max_tokens=max_tokens), priority=priority)
    return Sequence.from_request(request, arrival)


def _complete_step(sched: Scheduler, out, next_token: int = 7) -> None:
    """What the engine does after a forward pass: advance, sample, cache full blocks."""
    for chunk in out.prefills:
        done = chunk.completes_prompt
        chunk.seq.num_computed_tokens += chunk.num_tokens
        if done:
            chunk.seq.token_ids.append(next_token)
        sched.kv.cache_full_blocks(chunk.seq, now=1.0)
    for seq in out.decodes:
        seq.num_computed_tokens += 1
        seq.token_ids.append(next_token)
        sched.kv.cache_full_blocks(seq, now=1.0)


def test_chunked_prefill_then_batched_decode_with_exact_blocks():
    sched = Scheduler(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=6), KVManager(16, BS))
    a, b = _seq("a", list(range(10)), 0), _seq("b", list(range(100, 105)), 1)
    sched.add(a)
    sched.add(b)
    out = sched.schedule(now=0.0)
    assert [(c.seq.request_id, c.num_tokens) for c in out.prefills] == [("a", 6)]
    assert a.block_table == [0, 1, 2]
    _complete_step(sched, out)
    out = sched.schedule(now=0.0)
    assert [(c.seq.request_id, c.num_tokens) for c in out.prefills] == [("a", 4), ("b", 2)]
    assert b.block_table == [3, 4]
    _complete_step(sched, out)
    out = sched.schedule(now=0.0)
    assert out.decodes == [a]  # a decodes while b's prefill continues
    assert [(c.seq.request_id, c.num_tokens) for c in out.prefills] == [("b", 3)]
    assert a.block_table == [0, 1, 2]  # token 10 fits the third block


def test_shared_prefix_reuses_blocks_and_keeps_the_last_token_to_compute():
    kv = KVManager(16, BS)
    sched = Scheduler(SchedulerConfig(), kv)
    first = _seq("first", list(range(8)) + [50], 0)
    sched.add(first)
    _complete_step(sched, sched.schedule(now=0.0))
    second = _seq("second", list(range(8)) + [60, 61], 1)
    sched.add(second)
    out = sched.schedule(now=0.0)
    assert second.block_table[:2] == first.block_table[:2] == [0, 1]
    assert second.num_cached_tokens == 8
    assert [(c.seq.request_id, c.num_tokens) for c in out.prefills] == [("second", 2)]
    exact = _seq("exact", list(range(8)), 2)
    sched.add(exact)
    out = sched.schedule(now=0.0)
    # The last token is recomputed to get logits: block 1 is copied, not shared.
    assert exact.num_cached_tokens == 7
    assert exact.block_table[0] == 0 and exact.block_table[1] not in (0, 1)
    assert out.block_copies == [(1, exact.block_table[1])]
    assert kv.pool.ref_count(1) == 4  # tree, "first", "second" and the pending copy
    kv.release_copy(out.block_copies[0])
    assert kv.pool.ref_count(1) == 3


def test_decode_without_blocks_preempts_the_latest_lowest_priority():
    kv = KVManager(4, BS)
    sched = Scheduler(SchedulerConfig(), kv)
    old, new = _seq("old", [1, 2, 3], 0, priority=1), _seq("new", [4, 5, 6], 1)
    sched.add(old)
    sched.add(new)
    for _ in range(6):  # prefill (4 tokens each), then decode up to 9 tokens: 2 full blocks each
        out = sched.schedule(now=0.0)
        assert not out.preempted
        _complete_step(sched, out)
    assert kv.pool.num_free == 0 and len(old.token_ids) == len(new.token_ids) == 9
    out = sched.schedule(now=0.0)  # both need a third block; "new" makes way
    assert out.preempted == [new] and out.decodes == [old]
    assert old.block_table == [0, 2, 3]  # new's second block was cached, then evicted for old
    assert sched.num_waiting == 1 and sched.num_preemptions == 1
    assert new.block_table == [] and new.token_ids[3:] == [7] * 6


def test_prompt_filling_the_pool_skips_the_partial_copy_instead_of_waiting_forever():
    # Regression: a cached prefix matching one whole block and part of the next made admission
    # count the copy's source block as well, one more than the pool has, so the request waited
    # with nothing running to free a block.
    kv = KVManager(8, BS)
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=64), kv)
    warm = _seq("warm", list(range(12)), 0, max_tokens=0)
    sched.add(warm)
    _complete_step(sched, sched.schedule(now=0.0))
    sched.remove(warm)
    assert kv.num_obtainable_blocks() == 8 and kv.tree.num_cached_blocks == 3
    big = _seq("big", list(range(6)) + list(range(100, 125)), 1, max_tokens=1)  # 31 tokens: 8 blocks
    sched.add(big)
    out = sched.schedule(now=0.0)
    assert [(c.seq.request_id, c.num_tokens) for c in out.prefills] == [("big", 27)]
    assert out.block_copies == [] and not out.rejected
    assert big.num_cached_tokens == 4 and len(big.block_table) == 8


def test_a_request_that_cannot_fit_an_idle_pool_is_rejected_not_left_waiting():
    sched = Scheduler(SchedulerConfig(), KVManager(4, BS))
    too_big = _seq("too_big", list(range(20)), 0)  # 5 blocks, the pool has 4
    after = _seq("after", [1, 2, 3], 1)
    sched.add(too_big)
    sched.add(after)
    out = sched.schedule(now=0.0)
    assert out.rejected == [too_big]
    assert [c.seq.request_id for c in out.prefills] == ["after"]
    assert sched.num_waiting == 0


def test_a_request_waits_for_a_running_prefill_of_its_prefix_instead_of_computing_it_twice():
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=8), KVManager(32, BS))
    shared = list(range(12))  # three whole blocks
    a, b = _seq("a", shared + [50, 51], 0), _seq("b", shared + [60, 61, 62], 1)
    c = _seq("c", [90, 91, 92], 2)
    for seq in (a, b, c):
        sched.add(seq)
    out = sched.schedule(now=0.0)
    assert [(ch.seq.request_id, ch.num_tokens) for ch in out.prefills] == [("a", 8)]
    _complete_step(sched, out)
    out = sched.schedule(now=0.0)
    # a has yet to compute its third block, which b shares: b is held back, c (behind it) goes.
    assert [(ch.seq.request_id, ch.num_tokens) for ch in out.prefills] == [("a", 6), ("c", 2)]
    _complete_step(sched, out)
    out = sched.schedule(now=0.0)  # a's prompt is computed: b reuses all three shared blocks
    assert [ch.seq.request_id for ch in out.prefills] == ["c", "b"]
    assert b.num_cached_tokens == 12 and b.block_table[:3] == a.block_table[:3]


def test_engine_core_logic_imports_no_torch():
    engine_dir = pathlib.Path(__file__).resolve().parents[2] / "helium_trt" / "engine" / "embedded"
    for name in ("scheduler.py", "kv_manager.py", "sequence.py"):
        tree = ast.parse((engine_dir / name).read_text())
        modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        modules += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        assert not any(m.split(".")[0] in ("torch", "numpy") for m in modules), name
