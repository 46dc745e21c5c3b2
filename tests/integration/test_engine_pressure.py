"""KV pressure: mass cancellation frees everything, retention priorities decide what stays,
preempted requests are recomputed and finish exactly as they would have without pressure."""

from __future__ import annotations

import asyncio

from engine_helpers import request, run_all

from helium_trt.engine.base import EngineRequest, RetentionRange, SamplingConfig, TokenDelta
from helium_trt.engine.config import EngineConfig
from helium_trt.engine.embedded.engine import EmbeddedEngine


def test_cancel_a_thousand_requests_mid_flight_frees_every_block(embedded_engine):
    engine = embedded_engine
    prompts = [engine.tokenizer.encode(f"Request number {i}: name three primary colors.") for i in range(1000)]
    first_token = asyncio.Event

    async def main():
        started = first_token()

        async def consume(i):
            final = None
            async for item in engine.generate(request(f"c{i}", prompts[i], max_tokens=200, ignore_eos=True)):
                if isinstance(item, TokenDelta):
                    started.set()
                final = item
            return final

        tasks = [asyncio.create_task(consume(i)) for i in range(1000)]
        await started.wait()
        await asyncio.gather(*(engine.cancel(f"c{i}") for i in range(1000)))
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    assert len(results) == 1000
    assert all(r.finish_reason == "cancelled" for r in results)
    assert sum(len(r.output_token_ids) for r in results) > 0  # some were mid-decode
    assert engine.num_held_blocks() == 0
    assert engine.num_free_blocks() == engine.info.num_blocks


def _prefix(engine, index: int) -> list[int]:
    """Exactly four blocks; prefixes differ from their first token so none shares a block."""
    ids = engine.tokenizer.encode(f"Shared context {index}: " + "the primary colors are red, blue and yellow. " * 8)
    return [100 + index] + ids[:63]


def _run_traffic(engine, high_priority: int | None) -> tuple[list[int], list[int]]:
    """16 prefixes of 4 blocks (64 blocks of working set) through a 16-block pool.

    Prefixes 0 and 1 are tagged ``high_priority`` (when given); the others get priority 10.
    Returns how many leading tokens of each prefix are resident afterwards, and the cached
    tokens seen when the two tagged prefixes are requested again at the end.
    """
    prefixes = [_prefix(engine, i) for i in range(16)]
    suffix = engine.tokenizer.encode(" Question?")
    for i, prefix in enumerate(prefixes):
        priority = high_priority if (i < 2 and high_priority is not None) else 10
        req = EngineRequest(f"t{i}", tuple(prefix + suffix), SamplingConfig(max_tokens=4, ignore_eos=True),
                            retention_ranges=(RetentionRange(0, 64, priority),), decode_retention_priority=0)
        run_all(engine, [req])
    resident = [engine.num_resident_tokens(p) for p in prefixes]
    again = run_all(engine, [request(f"again{i}", prefixes[i] + suffix, max_tokens=2) for i in range(2)])
    return resident, [r.num_cached_tokens for r in again]


def test_high_retention_prefixes_survive_pressure(tiny_model_dir):
    engine = EmbeddedEngine(EngineConfig(model_dir=str(tiny_model_dir), num_blocks=16))
    try:
        resident, cached_again = _run_traffic(engine, high_priority=90)
    finally:
        asyncio.run(engine.close())
    assert resident[:2] == [64, 64]
    assert resident[2:10] == [0] * 8  # early low-priority prefixes were evicted
    assert sum(resident[2:]) <= 16 * 16 - 2 * 64
    assert cached_again == [64, 64]


def test_without_priorities_old_prefixes_are_evicted(tiny_model_dir):
    engine = EmbeddedEngine(EngineConfig(model_dir=str(tiny_model_dir), num_blocks=16))
    try:
        resident, cached_again = _run_traffic(engine, high_priority=None)
    finally:
        asyncio.run(engine.close())
    assert resident[:2] == [0, 0]
    assert cached_again == [0, 0]


def test_priority_expires_after_its_duration(tiny_model_dir):
    engine = EmbeddedEngine(EngineConfig(model_dir=str(tiny_model_dir), num_blocks=16))
    try:
        prefix = _prefix(engine, 0)
        asyncio.run(engine.warm(prefix, [RetentionRange(0, None, 100, duration_ms=1)]))
        asyncio.run(asyncio.sleep(0.01))
        for i in range(1, 6):
            run_all(engine, [request(f"x{i}", _prefix(engine, i), max_tokens=2)])
        assert engine.num_resident_tokens(prefix) == 0
    finally:
        asyncio.run(engine.close())


def test_preempted_requests_are_recomputed_not_lost(tiny_model_dir, embedded_engine):
    prompts = [embedded_engine.tokenizer.encode(f"Story {i}: once upon a time") for i in range(8)]
    reqs = [request(f"p{i}", p, max_tokens=100, ignore_eos=True) for i, p in enumerate(prompts)]
    roomy = run_all(embedded_engine, reqs)
    tight = EmbeddedEngine(EngineConfig(model_dir=str(tiny_model_dir), num_blocks=24, dtype="float32"))
    try:
        squeezed = run_all(tight, reqs)
        assert tight.num_preemptions > 0
        assert tight.num_held_blocks() == 0
    finally:
        asyncio.run(tight.close())
    for a, b in zip(roomy, squeezed):
        assert b.finish_reason == "length"
        assert b.output_token_ids == a.output_token_ids
        assert b.num_cached_tokens + b.num_computed_tokens == b.num_prompt_tokens
