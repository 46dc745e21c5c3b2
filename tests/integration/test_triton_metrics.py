"""Triton's metrics endpoint, scraped over HTTP, shows the tensorrt_llm model's KV-cache block and
request gauges under the TensorRT-LLM backend's names; on the CPU stand-in they move with a request."""

from __future__ import annotations

import asyncio
import random
import re
import urllib.request

import pytest

from helium_trt.engine.base import EngineRequest, SamplingConfig, TokenDelta
from helium_trt.engine.triton.client import TritonEngine

pytestmark = pytest.mark.slow

KV = "nv_trt_llm_kv_cache_block_metrics"
REQUESTS = "nv_trt_llm_request_metrics"
_SAMPLE = re.compile(r'^(nv_trt_llm_\w+)\{([^}]*)\} (\S+)$', re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def scrape(metrics_url: str) -> dict[tuple[str, str], float]:
    """(family, kv_cache_block_type or request_type) -> value, for model tensorrt_llm."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family, label_text, value in _SAMPLE.findall(text):
        labels = dict(_LABEL.findall(label_text))
        category = labels.get("kv_cache_block_type") or labels.get("request_type")
        if labels.get("model") == "tensorrt_llm" and category:
            samples[(family, category)] = float(value)
    return samples


def test_kv_cache_block_metrics_move_with_a_request(triton_server):
    if triton_server.metrics_url is None:
        pytest.skip("this session did not start the server, so it does not know its metrics port")
    before = scrape(triton_server.metrics_url)
    # backends before `reused` and `fraction` were added publish the first four only
    labels = ("max", "free", "used", "tokens_per") + (("reused", "fraction") if triton_server.is_standin else ())
    for label in labels:
        assert (KV, label) in before, sorted(before)
    assert before[(KV, "free")] + before[(KV, "used")] == before[(KV, "max")] > 0
    if not triton_server.is_standin:
        return  # the TensorRT-LLM backend refreshes its gauges on its own schedule
    assert before[(KV, "tokens_per")] == 16  # model_repo/tensorrt_llm/config.pbtxt

    async def body(engine):
        noise = [random.randrange(10, engine.info.vocab_size - 10) for _ in range(40)]
        # NOTE: long enough (seconds) to be surely running when scraped, then cancelled: a short
        # request on the tiny model ends before a scrape after its first token gets through.
        request = EngineRequest(f"metrics-{random.randrange(10**9)}", tuple(noise),
                                SamplingConfig(max_tokens=900, ignore_eos=True))
        during = None
        async for item in engine.generate(request):
            if during is None and isinstance(item, TokenDelta):
                during = await asyncio.to_thread(scrape, triton_server.metrics_url)
                await engine.cancel(request.request_id)
        after_first = await asyncio.to_thread(scrape, triton_server.metrics_url)
        again = EngineRequest(f"{request.request_id}-again", request.prompt_token_ids,
                              SamplingConfig(max_tokens=2, ignore_eos=True))
        [item async for item in engine.generate(again)]
        return during, after_first, await asyncio.to_thread(scrape, triton_server.metrics_url)

    async def main():
        engine = await TritonEngine.connect(triton_server.engine_config())
        try:
            return await body(engine)
        finally:
            await engine.close()

    during, after_first, after_again = asyncio.run(main())
    num_blocks = during[(KV, "max")]
    assert during[(KV, "used")] >= 3  # 40 prompt tokens and the first output in 16-token blocks
    assert during[(KV, "free")] == num_blocks - during[(KV, "used")]
    assert during[(KV, "fraction")] == pytest.approx(during[(KV, "used")] / num_blocks)
    assert during[(REQUESTS, "active")] >= 1 and during[(REQUESTS, "max")] > 0
    assert after_first[(KV, "free")] + after_first[(KV, "used")] == num_blocks
    # the repeated prompt found its two full blocks cached
    assert after_again[(KV, "reused")] - after_first[(KV, "reused")] >= 2
