"""A failing embedded engine fails fast and says so: every in-flight request ends at once with an
error naming the engine, the engine reports itself unhealthy and refuses new requests at once,
then rebuilds its state on the weights it already holds, probes it, and serves again."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine_helpers import collect, request, run_all

from helium_trt.engine.base import Engine, EngineHealth, RequestResult
from helium_trt.engine.embedded.runner import ModelRunner
from helium_trt.engine.embedded.scheduler import Scheduler
from helium_trt.errors import EngineUnavailableError


class Fault:
    """Makes ``cls.method`` raise while ``on`` (for every instance: also the rebuilt engine's)."""

    def __init__(self, monkeypatch, cls, method: str, *, on: bool = False, times: int | None = None,
                 exc_type: type[BaseException] = RuntimeError):
        self.on = on
        self.times = times  # None: until switched off
        self.num_raised = 0
        real = getattr(cls, method)

        def faulty(instance, *args, **kwargs):
            if self.on and (self.times is None or self.num_raised < self.times):
                self.num_raised += 1
                raise exc_type(f"injected fault in {cls.__name__}.{method}")
            return real(instance, *args, **kwargs)

        monkeypatch.setattr(cls, method, faulty)


def _prompt(engine, name: str) -> list[int]:
    return engine.tokenizer.encode(f"Request {name}: list three primary colors, then explain why.")


async def _last(stream):
    return [item async for item in stream][-1]


def _wait_health(engine, healthy: bool, timeout_s: float = 30.0) -> EngineHealth:
    deadline = time.monotonic() + timeout_s
    while (health := engine.health()).healthy is not healthy:
        assert time.monotonic() < deadline, f"engine still {health}"
        time.sleep(0.01)
    return health


def test_a_failed_forward_pass_fails_every_request_at_once_then_the_engine_restarts(
        embedded_engine, monkeypatch):
    engine = embedded_engine
    name = engine.info.model_name
    assert isinstance(engine, Engine) and engine.health() == EngineHealth(True)
    model = engine.model
    alone = run_all(engine, [request("alone", _prompt(engine, "z"), max_tokens=6)])[0]
    fault = Fault(monkeypatch, ModelRunner, "run")

    async def in_flight():
        streams = [engine.generate(request(f"r{i}", _prompt(engine, str(i)), max_tokens=200,
                                           ignore_eos=True)) for i in range(3)]
        await asyncio.gather(*(anext(s) for s in streams))  # all three are decoding
        fault.on = True
        return await asyncio.wait_for(asyncio.gather(*(_last(s) for s in streams)), 60)

    results = asyncio.run(in_flight())
    for result in results:
        assert isinstance(result, RequestResult) and result.finish_reason == "error"
        assert len(result.output_token_ids) < 200  # failed mid-way, not after finishing
        assert f"engine {name!r} failed" in result.error and "injected fault" in result.error
    health = _wait_health(engine, False)
    assert name in health.reason and "injected fault" in health.reason
    # While the fault persists the restart probe fails too: still unhealthy, new calls refused.
    deadline = time.monotonic() + 30
    while fault.num_raised < 2:
        assert time.monotonic() < deadline, "no restart probe ran"
        time.sleep(0.01)
    assert not engine.health().healthy
    with pytest.raises(EngineUnavailableError, match=f"engine {name!r}"):
        engine.generate(request("refused", _prompt(engine, "z"), max_tokens=2))

    fault.on = False
    _wait_health(engine, True)
    assert engine.model is model  # rebuilt on the loaded weights, never reloaded
    again = run_all(engine, [request("again", _prompt(engine, "z"), max_tokens=6)])[0]
    assert again.output_token_ids == alone.output_token_ids
    assert engine.num_held_blocks() == 0


def test_a_failure_outside_the_forward_pass_does_not_kill_the_engine(embedded_engine, monkeypatch):
    engine = embedded_engine
    fault = Fault(monkeypatch, Scheduler, "schedule", on=True, times=1)

    async def main():
        return await asyncio.wait_for(
            collect(engine, request("s", _prompt(engine, "s"), max_tokens=4)), 60)

    _, result = asyncio.run(main())
    assert result.finish_reason == "error" and "Scheduler.schedule" in result.error
    assert fault.num_raised == 1
    _wait_health(engine, True)
    after = run_all(engine, [request("after", _prompt(engine, "s"), max_tokens=4)])[0]
    assert after.finish_reason == "length" and after.error is None
    assert engine.num_held_blocks() == 0


class _Fatal(BaseException):
    """Not an Exception: nothing in the engine loop may swallow it."""


def test_an_engine_thread_that_stops_says_so_and_fails_its_requests(embedded_engine, monkeypatch):
    engine = embedded_engine
    name = engine.info.model_name
    Fault(monkeypatch, Scheduler, "schedule", on=True, exc_type=_Fatal)

    async def main():
        return await asyncio.wait_for(
            collect(engine, request("s", _prompt(engine, "s"), max_tokens=4)), 60)

    _, result = asyncio.run(main())
    assert result.finish_reason == "error" and f"engine {name!r} stopped" in result.error
    health = _wait_health(engine, False)
    assert f"engine {name!r} stopped" in health.reason and "_Fatal" in health.reason
    with pytest.raises(EngineUnavailableError, match="stopped"):
        engine.generate(request("refused", _prompt(engine, "s"), max_tokens=2))
