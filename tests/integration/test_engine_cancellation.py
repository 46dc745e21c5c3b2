"""Cancellation in the embedded engine acts between steps only: a cancel (or a caller that stops
listening) while a forward pass is in flight is applied after that step, the rest of the batch
finishes exactly as it would alone, every cancelled stream gets its final result, no KV block is
left held, and a live request id is never handed to a second stream."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time

import pytest

from engine_helpers import collect, request, run_all

from helium_trt.engine.base import RequestResult
from helium_trt.errors import InvalidRequestError


class StepGate:
    """Holds the first forward pass that prefills ``request_id`` (or the next one, for None)
    before it reads any block table, until released: a test acts while that step is in flight."""

    def __init__(self, runner, request_id: str | None = None) -> None:
        self._run = runner.run
        self._request_id = request_id
        self.armed = request_id is not None
        self.entered = threading.Event()
        self.release = threading.Event()
        runner.run = self

    def __call__(self, sched):
        if self.armed and (self._request_id is None or any(
                chunk.seq.request_id == self._request_id for chunk in sched.prefills)):
            self.armed = False
            self.entered.set()
            self.release.wait(10)
        return self._run(sched)


def _prompt(engine, name: str) -> list[int]:
    return engine.tokenizer.encode(f"Request {name}: list three primary colors, then explain why.")


def test_cancel_during_a_step_waits_for_it_and_spares_the_rest_of_the_batch(embedded_engine):
    engine = embedded_engine
    names = ("a", "b", "c")
    alone = {n: r.output_token_ids for n, r in zip(names, run_all(engine, [
        request(f"alone-{n}", _prompt(engine, n), max_tokens=24, ignore_eos=True) for n in names]))}
    gate = StepGate(engine._core.runner, "a")

    async def main():
        streams = {n: engine.generate(request(n, _prompt(engine, n), max_tokens=24, ignore_eos=True))
                   for n in names}
        await anext(streams["c"])  # c decodes in the held step, in which a prefills
        first_a = asyncio.create_task(anext(streams["a"]))
        first_b = asyncio.create_task(anext(streams["b"]))
        try:
            assert await asyncio.to_thread(gate.entered.wait, 30)
            await engine.cancel("a")
            first_b.cancel()  # the caller of b stops listening
            await asyncio.gather(first_b, return_exceptions=True)
            await streams["b"].aclose()
        finally:
            gate.release.set()
        return [await first_a] + [item async for item in streams["a"]], \
            [item async for item in streams["c"]]

    a_items, c_items = asyncio.run(main())
    # a's prefill completed in the held step (its first token), then the cancel applied.
    assert [type(i).__name__ for i in a_items] == ["TokenDelta", "RequestResult"]
    assert a_items[-1].finish_reason == "cancelled"
    assert c_items[-1].finish_reason == "length" and c_items[-1].error is None
    assert c_items[-1].output_token_ids == alone["c"]
    assert engine.num_held_blocks() == 0


def test_a_live_request_id_is_never_replaced_not_even_while_its_cancel_waits(embedded_engine):
    engine = embedded_engine
    # NOTE: the step that prefills "dup" is held, so the request is live for certain while the
    # test submits the duplicates (unheld, the tiny model sometimes finished all its tokens
    # between its first token and the duplicate's submission).
    gate = StepGate(engine._core.runner, "dup")

    async def main():
        first = engine.generate(request("dup", _prompt(engine, "x"), max_tokens=24, ignore_eos=True))
        first_item = asyncio.create_task(anext(first))
        try:
            assert await asyncio.to_thread(gate.entered.wait, 30)
            with pytest.raises(InvalidRequestError, match="'dup'"):
                await anext(engine.generate(request("dup", _prompt(engine, "y"), max_tokens=2)))
            await engine.cancel("dup")  # deferred: the step is in flight
            with pytest.raises(InvalidRequestError, match="'dup'"):
                await anext(engine.generate(request("dup", _prompt(engine, "y"), max_tokens=2)))
        finally:
            gate.release.set()
        items = [await first_item] + [item async for item in first]
        # Delivered: the id is free again, and the new stream gets its own result.
        _, again = await collect(engine, request("dup", _prompt(engine, "y"), max_tokens=2))
        return items, again

    items, again = asyncio.run(main())
    # The held step completed (dup's first token), then the deferred cancel applied.
    assert [type(i).__name__ for i in items] == ["TokenDelta", "RequestResult"]
    cancelled = items[-1]
    assert cancelled.finish_reason == "cancelled" and cancelled.request_id == "dup"
    assert again.finish_reason in ("length", "stop") and len(again.output_token_ids) <= 2
    assert engine.num_held_blocks() == 0


def test_a_stream_abandoned_after_its_result_arrived_cancels_nothing(embedded_engine):
    """Its id was free once the result was delivered and a new request took it: closing the
    old stream without reading that result must not cancel the new request."""
    engine = embedded_engine

    async def main():
        old = engine.generate(request("reused", _prompt(engine, "x"), max_tokens=2))
        await anext(old)
        while "reused" in engine._streams:  # the result is delivered, and not read
            await asyncio.sleep(0.01)
        new = engine.generate(request("reused", _prompt(engine, "y"), max_tokens=8,
                                      ignore_eos=True))
        await anext(new)
        await old.aclose()  # abandons the delivered result
        return [item async for item in new][-1]

    result = asyncio.run(main())
    assert result.finish_reason == "length" and len(result.output_token_ids) == 8
    assert engine.num_held_blocks() == 0


def _slow_forward(runner, seconds: float) -> None:
    """Make each forward pass last ``seconds`` longer, as a bigger model's would: the tiny
    model's steps are so short that few cancels would land while one is in flight."""
    run = runner.run

    def slow(sched):
        time.sleep(seconds)
        return run(sched)

    runner.run = slow


def test_cancel_storm_leaves_the_others_intact_and_frees_every_block(embedded_engine, caplog):
    engine = embedded_engine
    rng = random.Random(10)
    num_requests = 120
    prompts = [_prompt(engine, str(i)) * (1 + i % 3) for i in range(num_requests)]
    sizes = [3 + i % 6 for i in range(num_requests)]
    alone = [r.output_token_ids for r in run_all(engine, [
        request(f"alone{i}", p, max_tokens=n) for i, (p, n) in enumerate(zip(prompts, sizes))])]
    how = {i: rng.choice(("cancel", "abandon")) for i in rng.sample(range(num_requests), 60)}
    _slow_forward(engine._core.runner, 0.005)

    async def one(i: int):
        await asyncio.sleep(rng.random() * 0.5)
        stream = engine.generate(request(f"s{i}", prompts[i], max_tokens=sizes[i]))
        if how.get(i) == "cancel":
            asyncio.get_running_loop().call_later(
                rng.random() * 0.04, asyncio.ensure_future, engine.cancel(f"s{i}"))
        if how.get(i) == "abandon":
            async for _ in stream:
                if rng.random() < 0.5:
                    break
            await stream.aclose()
            return None
        return [item async for item in stream][-1]

    async def main():
        results = await asyncio.gather(*(one(i) for i in range(num_requests)))
        await asyncio.sleep(0.05)  # the last cancels land after their requests ended
        return results

    with caplog.at_level(logging.ERROR, logger="helium_trt"):
        results = asyncio.run(main())
    num_cancelled = 0
    for i, result in enumerate(results):
        if how.get(i) == "abandon":
            continue
        if how.get(i) == "cancel" and result.finish_reason == "cancelled":
            num_cancelled += 1
            continue
        # Never cancelled, or the cancel came after it had finished: exactly its solo output.
        assert result.error is None, result.error
        assert result.output_token_ids == alone[i], i
    assert num_cancelled > 0
    assert engine.num_held_blocks() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
