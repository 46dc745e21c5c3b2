"""Token-level prefix reuse: a prompt's partly filled last block is cached and copied, so an
identical prompt computes only the token it samples from, in flight or after, and the outputs
stay those of a cold engine."""

from __future__ import annotations

import asyncio

from engine_helpers import request, run_all

from helium_trt.engine.config import EngineConfig
from helium_trt.engine.embedded.engine import EmbeddedEngine

SAMPLED = dict(max_tokens=6, temperature=0.8, ignore_eos=True)


def _prompt(engine, num_tokens: int, text: str) -> list[int]:
    ids = engine.tokenizer.encode(text * (num_tokens // 4 + 4))[:num_tokens]
    assert len(ids) == num_tokens and num_tokens % engine.info.block_size
    return ids


def _cold(engine, requests):
    """The same requests one at a time on a fresh engine (nothing cached between them)."""
    results = []
    for req in requests:
        cold = EmbeddedEngine(EngineConfig(model_dir=str(engine.config.model_dir), num_blocks=64,
                                           dtype="float32"))
        try:
            results.extend(run_all(cold, [req]))
        finally:
            asyncio.run(cold.close())
    return results


def test_a_repeated_150_token_prompt_computes_one_token(embedded_engine):
    engine = embedded_engine
    prompt = _prompt(engine, 150, "The primary colors are red, blue and yellow. ")
    [first] = run_all(engine, [request("first", prompt, max_tokens=4, ignore_eos=True)])
    [again] = run_all(engine, [request("again", prompt, max_tokens=4, ignore_eos=True)])
    assert (first.num_cached_tokens, first.num_computed_tokens) == (0, 150)
    assert (again.num_cached_tokens, again.num_computed_tokens) == (149, 1)  # was (144, 6)
    assert again.output_token_ids == first.output_token_ids


def test_forks_of_one_prompt_in_flight_compute_it_once(embedded_engine):
    """Four seeded samples of one 150-token prompt sent together (a tree-of-thought fork): the
    prompt is computed once (two chunks), the followers wait and copy the tail block."""
    engine = embedded_engine
    prompt = _prompt(engine, 150, "Paris is the capital of France. ")
    forks = [request(f"fork{i}", prompt, seed=i, **SAMPLED) for i in range(4)]
    results = run_all(engine, forks)
    computed = sum(r.num_computed_tokens for r in results)
    assert computed == 150 + 3
    assert 150 / computed >= 0.95  # prefill efficiency against the trie minimum (was 150 / 168)
    for result, alone in zip(results, _cold(engine, forks)):
        assert result.output_token_ids == alone.output_token_ids


def test_a_reply_repeated_in_the_next_prompt_is_reused_to_its_last_computed_token(embedded_engine):
    engine = embedded_engine
    prompt = _prompt(engine, 37, "What is the capital of France? ")
    [turn] = run_all(engine, [request("turn1", prompt, max_tokens=7, ignore_eos=True)])
    follow_up = prompt + list(turn.output_token_ids) + engine.tokenizer.encode(" And of Spain?")
    assert engine.num_resident_tokens(follow_up) == 37 + 7 - 1  # the last reply token never ran
    nxt = request("turn2", follow_up, max_tokens=5, ignore_eos=True)
    [result] = run_all(engine, [nxt])
    assert result.num_cached_tokens == 43
    assert result.output_token_ids == _cold(engine, [nxt])[0].output_token_ids


def test_tails_are_evicted_like_blocks_when_the_pool_runs_short(tiny_model_dir):
    """A pool of 12 blocks: cached tails give their blocks back to new requests."""
    engine = EmbeddedEngine(EngineConfig(model_dir=str(tiny_model_dir), num_blocks=12, dtype="float32"))
    try:
        prompts = [_prompt(engine, 40, f"Question number {i} about colors. ") for i in range(6)]
        for i, prompt in enumerate(prompts):  # 3 blocks each, 18 in all: evictions needed
            [result] = run_all(engine, [request(f"q{i}", prompt, max_tokens=2, ignore_eos=True)])
            assert result.finish_reason == "length"
        assert engine.num_free_blocks() == 12
        [again] = run_all(engine, [request("again", prompts[-1], max_tokens=2, ignore_eos=True)])
        assert again.num_cached_tokens == 39
    finally:
        asyncio.run(engine.close())
