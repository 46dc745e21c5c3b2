"""TritonEngine against a real tritonserver: same tokens as the in-process engine, streaming,
prefix reuse reported as cached tokens, warm-up, stops and cancellation."""

from __future__ import annotations

import asyncio
import random

import pytest

from helium_trt.engine.base import EngineRequest, RequestResult, SamplingConfig, TokenDelta
from helium_trt.engine.triton.client import TritonEngine
from engine_helpers import collect

pytestmark = pytest.mark.slow

PROMPTS = (
    "The primary colors are red, blue and yellow. Name three primary colors.",
    "What is the capital of France?",
    "You are a helpful assistant. Answer the question briefly and clearly.",
)


def run_with_engine(deployment, body, **config):
    """Run ``body(engine)`` on a TritonEngine connected inside one event loop."""
    async def main():
        engine = await TritonEngine.connect(deployment.engine_config(**config))
        try:
            return await body(engine)
        finally:
            await engine.close()

    return asyncio.run(main())


def fresh_prompt(engine, text: str, num_random: int = 0) -> tuple[int, ...]:
    """``text``'s tokens after a random prefix, so no other test has cached them."""
    rng = random.Random()
    noise = [rng.randrange(10, engine.info.vocab_size - 10) for _ in range(num_random)]
    return tuple(noise + engine.tokenizer.encode(text))


def without_end(result: RequestResult, eos_ids) -> tuple[int, ...]:
    """Output tokens as TensorRT-LLM reports them: the end token is not part of the output."""
    tokens = result.output_token_ids
    return tokens[:-1] if result.finish_reason == "stop" and tokens and tokens[-1] in eos_ids else tokens


@pytest.mark.parametrize("ignore_eos", [False, True])
def test_greedy_tokens_match_embedded_engine(triton_server, embedded_engine, ignore_eos):
    num_compared = 24 if triton_server.is_standin else 1  # GPU kernels may drift after the first tokens

    async def body(engine):
        pairs = []
        for i, text in enumerate(PROMPTS):
            sampling = SamplingConfig(max_tokens=24, ignore_eos=ignore_eos)
            prompt = tuple(engine.tokenizer.encode(text))
            _, remote = await collect(engine, EngineRequest(f"greedy-{ignore_eos}-{i}", prompt, sampling))
            _, local = await collect(embedded_engine, EngineRequest(f"local-{i}", prompt, sampling))
            pairs.append((remote, local))
        return pairs

    for remote, local in run_with_engine(triton_server, body):
        if triton_server.is_standin:
            assert remote.finish_reason == local.finish_reason
        expected = without_end(local, embedded_engine.info.eos_token_ids)
        assert remote.output_token_ids[:num_compared] == expected[:num_compared]
        if triton_server.is_standin:
            assert remote.text == local.text
            assert remote.num_prompt_tokens == local.num_prompt_tokens


def test_stream_yields_deltas_then_one_result(triton_server):
    async def body(engine):
        prompt = fresh_prompt(engine, PROMPTS[0])
        return [item async for item in engine.generate(
            EngineRequest("stream-1", prompt, SamplingConfig(max_tokens=12, ignore_eos=True)))]

    items = run_with_engine(triton_server, body)
    deltas, result = items[:-1], items[-1]
    assert isinstance(result, RequestResult) and all(isinstance(d, TokenDelta) for d in deltas)
    assert len(deltas) >= 12  # streamed token by token, not one final blob
    assert tuple(t for d in deltas for t in d.token_ids) == result.output_token_ids
    assert "".join(d.text for d in deltas) == result.text
    assert result.finish_reason == "length" and len(result.output_token_ids) == 12


def test_reused_blocks_become_cached_tokens(triton_server, embedded_engine):
    """The second request over a shared prefix reports what the engine reused, in tokens."""
    async def body(engine):
        shared = fresh_prompt(engine, PROMPTS[2], num_random=40)
        first = EngineRequest("reuse-1", shared + (11, 12), SamplingConfig(max_tokens=2))
        second = EngineRequest("reuse-2", shared + (13, 14, 15), SamplingConfig(max_tokens=2))
        remote = [(await collect(engine, r))[1] for r in (first, second)]
        local = [(await collect(embedded_engine, r))[1] for r in (first, second)]
        return remote, local, engine.info.block_size

    (r1, r2), (l1, l2), block_size = run_with_engine(triton_server, body)
    assert r1.num_cached_tokens == 0
    assert r2.num_cached_tokens > 0 and r2.num_cached_tokens % block_size == 0
    assert r2.num_cached_tokens + r2.num_computed_tokens == r2.num_prompt_tokens
    if triton_server.is_standin:  # reuse travels in whole blocks, as TensorRT-LLM reports it
        aligned = [r.num_cached_tokens // block_size * block_size for r in (l1, l2)]
        assert [r1.num_cached_tokens, r2.num_cached_tokens] == aligned


def test_warm_then_generate_reuses_the_warmed_prefix(triton_server):
    async def body(engine):
        prefix = fresh_prompt(engine, PROMPTS[0], num_random=48)
        warmed = await engine.warm(prefix)
        _, result = await collect(engine, EngineRequest("after-warm", prefix + (21, 22, 23), SamplingConfig(max_tokens=2)))
        return warmed, result, engine.info.block_size, len(prefix)

    warmed, result, block_size, num_prefix = run_with_engine(triton_server, body)
    assert warmed.num_cached_tokens == 0 and warmed.num_computed_tokens == num_prefix
    assert result.num_cached_tokens >= num_prefix // block_size * block_size > 0
    if triton_server.is_standin:  # TensorRT-LLM may also reuse the partly filled last block
        assert result.num_cached_tokens == num_prefix // block_size * block_size


def test_stop_token_and_stop_string_end_like_the_embedded_engine(triton_server, embedded_engine):
    if not triton_server.is_standin:
        pytest.skip("compares exact greedy continuations with the in-process engine")

    async def body(engine):
        prompt = tuple(engine.tokenizer.encode(PROMPTS[1]))
        _, free = await collect(engine, EngineRequest("free", prompt, SamplingConfig(max_tokens=16, ignore_eos=True)))
        stop_token = free.output_token_ids[5]
        stop_string = _clean_substring(free.text[2:])
        results = []
        for rid, sampling in (
            ("stop-token", SamplingConfig(max_tokens=16, ignore_eos=True, stop_token_ids=(stop_token,))),
            ("stop-string", SamplingConfig(max_tokens=16, ignore_eos=True, stop_strings=(stop_string,))),
        ):
            request = EngineRequest(rid, prompt, sampling)
            results.append(((await collect(engine, request))[1], (await collect(embedded_engine, request))[1]))
        return results

    for remote, local in run_with_engine(triton_server, body):
        assert (remote.request_id, remote.finish_reason) == (remote.request_id, "stop")
        assert local.finish_reason == "stop"
        assert remote.output_token_ids == local.output_token_ids
        assert remote.text == local.text


def _clean_substring(text: str) -> str:
    """Two characters of ``text`` that decode cleanly (the tiny model emits partial UTF-8)."""
    for i in range(len(text) - 1):
        candidate = text[i:i + 2]
        if "\ufffd" not in candidate and candidate.strip():
            return candidate
    pytest.skip(f"no clean stop string in {text!r}")


def test_cancel_ends_the_stream_with_cancelled(triton_server):
    async def body(engine):
        prompt = fresh_prompt(engine, PROMPTS[0])
        request = EngineRequest("to-cancel", prompt, SamplingConfig(max_tokens=900, ignore_eos=True))
        num_seen = 0
        async for item in engine.generate(request):
            if isinstance(item, TokenDelta):
                num_seen += 1
                if num_seen == 3:
                    await engine.cancel("to-cancel")
            else:
                result = item
        # The server is still healthy and serves the next request.
        _, after = await collect(engine, EngineRequest("after-cancel", prompt, SamplingConfig(max_tokens=3)))
        return result, after

    result, after = run_with_engine(triton_server, body)
    assert result.finish_reason == "cancelled" and result.error is None
    assert 3 <= len(result.output_token_ids) < 900
    assert after.finish_reason in ("length", "stop") and after.error is None


def test_seeded_sampling_is_reproducible_through_triton(triton_server, embedded_engine):
    async def body(engine):
        prompt = tuple(engine.tokenizer.encode(PROMPTS[0]))
        sampling = SamplingConfig(max_tokens=12, temperature=0.9, top_p=0.95, top_k=50, seed=1234, ignore_eos=True)
        a = (await collect(engine, EngineRequest("seeded-a", prompt, sampling)))[1]
        b = (await collect(engine, EngineRequest("seeded-b", prompt, sampling)))[1]
        local = (await collect(embedded_engine, EngineRequest("seeded-local", prompt, sampling)))[1]
        return a, b, local

    a, b, local = run_with_engine(triton_server, body)
    assert a.output_token_ids == b.output_token_ids
    if triton_server.is_standin:
        assert a.output_token_ids == local.output_token_ids
