"""Engine request ids are unique per run, and an engine never lets a second request take over a
live request's id (its stream, its result): the embedded engine and TritonEngine alike."""

from __future__ import annotations

import asyncio

import pytest

from helium_trt.engine.base import RequestResult
from helium_trt.errors import InvalidRequestError

from engine_helpers import request
from runtime_helpers import collect, make_engine, workflow


def _one_call_plan(rows):
    return workflow([
        {"id": "q", "input": {}},
        {"id": "p", "format": {"template": "Answer briefly: {q}"}},
        {"id": "a", "llm": {"prompt": "p", "config": {"max_tokens": 4}}},
        {"id": "answer", "output": {"input": "a"}},
    ], rows=rows)


def test_two_runs_of_one_workflow_on_one_engine_share_no_request(long_tiny_model_dir):
    # run_workflow called directly (no HeliumCore) gives each run a uuid of its own.
    rows = [[{"q": "What is one plus one?"}], [{"q": "Name a primary color."}]]

    async def main():
        engine = make_engine(long_tiny_model_dir)
        try:
            alone = [(await collect(_one_call_plan(r), [engine], rows=r)).outputs for r in rows]
            engine_rows = [collect(_one_call_plan(r), [engine], rows=r) for r in rows * 3]
            together = await asyncio.gather(*engine_rows)
            return alone, [(t.outputs, t.errors) for t in together]
        finally:
            await engine.close()

    alone, together = asyncio.run(main())
    assert together == [(alone[i % 2], []) for i in range(6)]


async def _refused_while_live(engine, rid: str, prompt) -> tuple[RequestResult, str]:
    # NOTE: long enough that the first request cannot finish between its first token and the
    # second submission (3 tokens sometimes did on the tiny model); it is cancelled afterwards.
    first = engine.generate(request(rid, prompt, max_tokens=400, ignore_eos=True))
    item = await anext(first)  # the first token: the request is live
    with pytest.raises(InvalidRequestError) as info:
        await anext(engine.generate(request(rid, prompt, max_tokens=3, ignore_eos=True)))
    await engine.cancel(rid)
    while not isinstance(item, RequestResult):
        item = await anext(first)
    return item, str(info.value)


def test_embedded_engine_refuses_a_live_request_id(embedded_engine):
    prompt = embedded_engine.tokenizer.encode("What is the capital of France?")
    result, message = asyncio.run(_refused_while_live(embedded_engine, "dup", prompt))
    assert result.finish_reason == "cancelled" and 0 < len(result.output_token_ids) < 400
    assert "'dup' is already running" in message


@pytest.mark.slow
def test_triton_engine_refuses_a_live_request_id(triton_server):
    from helium_trt.engine.triton.client import TritonEngine

    async def main():
        engine = await TritonEngine.connect(triton_server.engine_config())
        try:
            prompt = engine.tokenizer.encode("What is the capital of France?")
            return await _refused_while_live(engine, "dup", prompt)
        finally:
            await engine.close()

    result, message = asyncio.run(main())
    assert result.finish_reason == "cancelled" and 0 < len(result.output_token_ids) < 400
    assert "'dup' is already running" in message
