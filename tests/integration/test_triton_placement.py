"""Placement at dispatch time over Triton endpoints: two TritonEngine clients of the session's
real tritonserver as two workers. Siblings of a shared prefix follow their prefix leader to the
worker its request is in flight on (the Triton client learns residency only from finished
calls: the runtime's board of calls in flight covers the gap); outputs are the embedded
engine's."""

import asyncio

import pytest
from runtime_helpers import collect, make_engine, workflow

from helium_trt.runtime.options import RunOptions

pytest.importorskip("tritonclient.grpc")

SYS_A = ("You are a careful assistant. Answer the question briefly and clearly. " * 5).strip()
SYS_B = ("Summarize the following text in one short sentence for a busy reader. " * 5).strip()


class CountingEngine:
    def __init__(self, engine):
        self.inner, self.info, self.tokenizer = engine, engine.info, engine.tokenizer
        self.prompts: list[str] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, request):
        self.prompts.append(self.tokenizer.decode(request.prompt_token_ids))
        return self.inner.generate(request)


def siblings():
    ops = [{"id": "q", "input": {}}]
    for group, text in (("a", SYS_A), ("b", SYS_B)):
        for i in range(3):
            ops += [{"id": f"{group}p{i}", "format": {"template": f"{text} #{i} {{q}}"}},
                    {"id": f"{group}{i}", "llm": {"prompt": f"{group}p{i}",
                                                 "config": {"maxTokens": 4}}},
                    {"id": f"{group}o{i}", "output": {"input": f"{group}{i}"}}]
    return workflow(ops, [{"q": "colors"}])


def test_two_triton_workers_colocate_siblings_with_their_leader(triton_server):
    from helium_trt.engine.triton.client import TritonEngine

    plan = siblings()

    async def go():
        engines = [CountingEngine(await TritonEngine.connect(triton_server.engine_config()))
                   for _ in range(2)]
        reference = make_engine(triton_server.model_dir, 512)
        try:
            result = await collect(plan, engines, options=RunOptions(max_inflight=8))
            return result, await collect(plan, [reference]), [e.prompts for e in engines]
        finally:
            await reference.close()
            for e in engines:
                await e.inner.close()

    result, expected, prompts = asyncio.run(go())
    assert not result.errors and result.outputs == expected.outputs
    groups = sorted([sum(p.startswith(text[:40]) for p in worker) for worker in prompts]
                    for text in (SYS_A, SYS_B))
    assert groups == [[0, 3], [3, 0]]
