"""Placement at dispatch time on two real embedded workers: a call follows what each engine
really holds (not only the static prefixes the plan saw), independent calls spread over the
workers, and the work board is empty after the run."""

import asyncio

from runtime_helpers import collect, make_engine, workflow

from helium_trt.runtime.options import RunOptions
from helium_trt.runtime.planning import RuntimeCaches
from helium_trt.scheduler.dispatch_cost import WorkerQueue

SYS = ("You are a careful assistant. Answer the question briefly and clearly. " * 4).strip()
QUESTION = ("Given the long list of rivers, mountains, lakes and cities that the traveller "
            "wrote down, which one would you visit first and why?")


class CountingEngine:
    """A real engine that counts the calls it gets."""

    def __init__(self, engine):
        self.inner, self.info, self.tokenizer = engine, engine.info, engine.tokenizer
        self.num_calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, request):
        self.num_calls += 1
        return self.inner.generate(request)


def one_call(rows):
    return workflow([
        {"id": "q", "input": {}},
        {"id": "p", "format": {"template": SYS + " Q: {q}\nA:"}},
        {"id": "e", "llm": {"prompt": "p", "config": {"maxTokens": 4}}},
        {"id": "out", "output": {"input": "e"}},
    ], rows)


def test_a_call_goes_where_its_whole_prompt_is_resident(long_tiny_model_dir):
    """Both workers hold the static prefix; only worker 1 holds the row's part too (from an
    earlier run). The plan sees the static prefixes alone (a tie: worker 0); at dispatch time
    the engine's residency sends the call to worker 1, which reuses the whole prompt."""
    plan = one_call([{"q": QUESTION}])

    async def go():
        engines = [CountingEngine(make_engine(long_tiny_model_dir)) for _ in range(2)]
        try:
            await collect(plan, [engines[1]])
            await engines[0].warm(engines[0].tokenizer.encode(SYS))
            before = [e.num_calls for e in engines]
            result = await collect(plan, engines, caches=RuntimeCaches())
            return result, [e.num_calls - b for e, b in zip(engines, before)]
        finally:
            for e in engines:
                await e.inner.close()

    result, calls = asyncio.run(go())
    assert not result.errors and calls == [0, 1]
    [finished] = result.finished
    assert finished.cached_tokens >= finished.prompt_tokens - 16


def test_independent_calls_spread_and_the_board_empties(long_tiny_model_dir):
    topics = ["rivers", "mountains", "lakes", "deserts", "forests", "islands"]
    ops = [{"id": "q", "input": {}}]
    for i, topic in enumerate(topics):  # no shared prefix: placement goes by load alone
        ops += [{"id": f"p{i}", "format": {"template": f"Tell me about {topic}: {{q}}"}},
                {"id": f"e{i}", "llm": {"prompt": f"p{i}", "config": {"maxTokens": 4}}},
                {"id": f"o{i}", "output": {"input": f"e{i}"}}]
    plan = workflow(ops, [{"q": "one short fact"}])

    async def go():
        engines = [CountingEngine(make_engine(long_tiny_model_dir)) for _ in range(2)]
        caches = RuntimeCaches()
        try:
            result = await collect(plan, engines, caches=caches, options=RunOptions(max_inflight=8))
            return result, [e.num_calls for e in engines], caches.loads.queues(engines)
        finally:
            for e in engines:
                await e.inner.close()

    result, calls, queues = asyncio.run(go())
    assert not result.errors and sum(calls) == 6 and abs(calls[0] - calls[1]) <= 1
    assert queues == [WorkerQueue(), WorkerQueue()]
