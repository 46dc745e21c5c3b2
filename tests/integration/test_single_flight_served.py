"""Single flight on the real tiny model: identical deterministic calls in flight, within a run
and across concurrent runs sharing the engine and caches, run once on the engine and are fanned
out; a cancelled waiter leaves the shared call to the others, a failure reaches every waiter."""

import asyncio
from dataclasses import replace

from runtime_helpers import collect, make_engine, workflow

from helium_trt.engine.base import RequestResult
from helium_trt.runtime.events import TokenDelta
from helium_trt.runtime.options import RunOptions
from helium_trt.runtime.planning import RuntimeCaches

SYS = ("You are a careful assistant. Answer the question briefly and clearly. " * 4).strip()
CFG = {"maxTokens": 5}
NO_SHARING = replace(RunOptions(), prompt_cache=False,
                     disabled_rules=frozenset({"fetch_cached_results"}))


def two_step(rows):
    return workflow([
        {"id": "q", "input": {}},
        {"id": "p", "format": {"template": SYS + " Q: {q}\nA:"}},
        {"id": "e", "llm": {"prompt": "p", "config": CFG}},
        {"id": "jp", "format": {"template": "Summarize: {e}\nSummary:"}},
        {"id": "judge", "llm": {"prompt": "jp", "config": CFG}},
        {"id": "out", "output": {"input": "judge", "name": "answer"}},
    ], rows)


ROWS = ({"q": "What is the capital of France?"}, {"q": "What is the capital of France?"},
        {"q": "Name three primary colors."})


class GatedEngine:
    """The real engine behind a gate: each generate waits until the test opens it, so the test
    decides which calls are in flight together. Calls whose prompt contains ``fail_on`` end in
    error (fault injection)."""

    def __init__(self, engine):
        self.inner = engine
        self.info, self.tokenizer = engine.info, engine.tokenizer
        self.waiting: list[asyncio.Event] = []
        self.num_calls = 0
        self.fail_on: str | None = None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def generate(self, request):
        self.num_calls += 1
        gate = asyncio.Event()
        self.waiting.append(gate)
        await gate.wait()
        if self.fail_on and self.fail_on in self.tokenizer.decode(request.prompt_token_ids):
            n = len(request.prompt_token_ids)
            yield RequestResult(request.request_id, (), "", n, 0, 0, "error", "injected fault")
            return
        async for item in self.inner.generate(request):
            yield item

    async def open_when(self, num_waiting: int, timeout_s: float = 30.0):
        """Wait until ``num_waiting`` calls wait at the gate, let a joiner arrive, open them."""
        await until(lambda: len(self.waiting) >= num_waiting, timeout_s)
        await asyncio.sleep(0.05)
        assert len(self.waiting) == num_waiting  # an identical call joined, it did not queue
        for gate in self.waiting:
            gate.set()
        self.waiting.clear()


async def until(condition, timeout_s: float = 30.0):
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def test_identical_calls_of_one_run_are_computed_once(long_tiny_model_dir):
    async def go(options):
        engine = make_engine(long_tiny_model_dir)
        try:
            return await collect(two_step(ROWS), [engine], options=options)
        finally:
            await engine.close()

    shared = asyncio.run(go(replace(RunOptions(), stream_tokens=True)))
    alone = asyncio.run(go(NO_SHARING))
    assert not shared.errors and shared.outputs == alone.outputs
    assert shared.outputs[0] == shared.outputs[1]
    assert alone.stats.num_llm_calls == 6 and alone.stats.num_distinct_prompts == 6
    assert shared.stats.num_llm_calls == shared.stats.num_distinct_prompts == 4
    assert shared.stats.num_shared_calls == 2
    # Every row's operators finished, the joined ones too.
    assert sorted((f.op_id, f.row) for f in shared.finished) == sorted(
        (op, row) for op in ("e", "judge") for row in range(3))
    # A call that joined streams the shared call's text too.
    streamed = {}
    for event in shared.events:
        if isinstance(event, TokenDelta):
            streamed[event.op_id, event.row] = streamed.get((event.op_id, event.row), "") + event.text
    assert streamed == {(f.op_id, f.row): f.output for f in shared.finished}


def test_concurrent_runs_share_a_call_and_a_cancelled_run_leaves_it_to_the_other(
        long_tiny_model_dir):
    plan = two_step(ROWS[:1])

    async def go():
        real = make_engine(long_tiny_model_dir)
        engine, caches = GatedEngine(real), RuntimeCaches()
        try:
            reference = await collect(plan, [real], options=NO_SHARING)
            first = asyncio.ensure_future(collect(plan, [engine], caches=caches))
            await until(lambda: engine.num_calls == 1)
            second = asyncio.ensure_future(collect(plan, [engine], caches=caches))
            await until(lambda: caches.flights.num_waiters() == 2)
            first.cancel()  # it started the shared call; the second run still waits for it
            await engine.open_when(1)
            await engine.open_when(1)  # the judge call, now the second run's own
            result = await second
            return reference, result, engine.num_calls, first.cancelled(), len(caches.flights)
        finally:
            await real.close()

    reference, result, num_calls, cancelled, num_flights = asyncio.run(go())
    assert cancelled and not result.errors
    assert result.outputs == reference.outputs
    assert num_calls == 2  # e once for both runs, then the second run's judge
    assert result.stats.num_shared_calls == 1 and result.stats.num_llm_calls == 1
    assert num_flights == 0


def test_a_failed_shared_call_fails_every_row_waiting_for_it(long_tiny_model_dir):
    async def go():
        real = make_engine(long_tiny_model_dir)
        engine = GatedEngine(real)
        engine.fail_on = "France"
        try:
            run = asyncio.ensure_future(collect(two_step(ROWS), [engine]))
            while not run.done():
                await asyncio.sleep(0.05)
                for gate in engine.waiting:
                    gate.set()
            return await run, engine.num_calls
        finally:
            await real.close()

    result, num_calls = asyncio.run(go())
    assert num_calls == 3  # e once for the two identical rows, e and judge of the third
    failed = sorted((e.row, e.op_id, e.code) for e in result.errors)
    assert failed == [(0, "e", "UNAVAILABLE"), (1, "e", "UNAVAILABLE")]
    assert all("injected fault" in e.message for e in result.errors)
    assert list(result.outputs) == [2]


def test_runs_of_different_tenants_never_share_a_call(long_tiny_model_dir):
    """Runs under two cache salts (two tenants) each make their own engine call."""
    plan = two_step(ROWS[:1])

    async def go():
        real = make_engine(long_tiny_model_dir)
        engine, caches = GatedEngine(real), RuntimeCaches()
        try:
            runs = [asyncio.ensure_future(collect(plan, [engine], caches=caches,
                                                  options=replace(RunOptions(), cache_salt=salt)))
                    for salt in ("tenant-a", "tenant-b")]
            await engine.open_when(2)  # both runs' e: neither joined the other's
            await engine.open_when(2)  # both judges
            return await asyncio.gather(*runs)
        finally:
            await real.close()

    results = asyncio.run(go())
    assert [r.stats.num_shared_calls for r in results] == [0, 0]
    assert [r.stats.num_llm_calls for r in results] == [2, 2]
    assert results[0].outputs == results[1].outputs
