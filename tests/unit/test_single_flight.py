"""SingleFlight: one computation per key in flight, fanned out; cancels and failures."""

import asyncio

from helium_trt.plan.ops import GenerationConfig
from helium_trt.runtime.single_flight import FlightKey, SingleFlight


def key(prompt=(1, 2, 3), tenant=""):
    return FlightKey(tenant, "m", tuple(prompt), GenerationConfig(max_tokens=4))


class Computation:
    """Counts how often it ran; publishes two pieces of text, then waits to be released."""

    def __init__(self, fail: bool = False):
        self.runs = 0
        self.cancelled = False
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self, publish):
        self.runs += 1
        try:
            publish("Hel")
            await asyncio.sleep(0)
            publish("lo")
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.fail:
            raise RuntimeError("engine call failed: boom")
        return "Hello"


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


def test_identical_calls_in_flight_run_once_and_all_get_the_text():
    async def go():
        flights, work = SingleFlight(), Computation()
        texts = [[], [], []]
        calls = [asyncio.ensure_future(flights.call(key(), work, texts[i].append))
                 for i in range(2)]
        await settle()
        # A late joiner gets what was streamed so far, then the rest.
        calls.append(asyncio.ensure_future(flights.call(key(), work, texts[2].append)))
        other = asyncio.ensure_future(flights.call(key(prompt=(9,)), Computation()))
        await settle()
        work.release.set()
        results = await asyncio.gather(*calls)
        other.cancel()
        return flights, work, texts, results

    flights, work, texts, results = asyncio.run(go())
    assert work.runs == 1
    assert results == [("Hello", False), ("Hello", True), ("Hello", True)]
    assert ["".join(t) for t in texts] == ["Hello"] * 3
    assert len(flights) == 0  # gone once every waiter took the result


def test_other_tenants_and_configs_do_not_share():
    async def go():
        flights, work = SingleFlight(), Computation()
        work.release.set()
        sampled = FlightKey("", "m", (1, 2, 3), GenerationConfig(max_tokens=4, seed=7))
        return await asyncio.gather(flights.call(key(), work), flights.call(key(tenant="b"), work),
                                    flights.call(sampled, work)), work.runs

    results, runs = asyncio.run(go())
    assert runs == 3 and [joined for _, joined in results] == [False] * 3


def test_a_cancelled_waiter_leaves_the_shared_call_running_for_the_others():
    async def go():
        flights, work = SingleFlight(), Computation()
        first = asyncio.ensure_future(flights.call(key(), work))
        second = asyncio.ensure_future(flights.call(key(), work))
        await settle()
        first.cancel()  # the one that started it
        await settle()
        assert not work.cancelled
        work.release.set()
        return await second, first.cancelled()

    result, first_cancelled = asyncio.run(go())
    assert result == ("Hello", True) and first_cancelled


def test_when_every_waiter_cancels_the_call_is_cancelled():
    async def go():
        flights, work = SingleFlight(), Computation()
        waiters = [asyncio.ensure_future(flights.call(key(), work)) for _ in range(2)]
        await settle()
        for w in waiters:
            w.cancel()
        await settle()
        return flights, work

    flights, work = asyncio.run(go())
    assert work.cancelled and len(flights) == 0


def test_a_failure_reaches_every_waiter_and_the_next_call_retries():
    async def go():
        flights, work = SingleFlight(), Computation(fail=True)
        waiters = [asyncio.ensure_future(flights.call(key(), work)) for _ in range(3)]
        await settle()
        work.release.set()
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        retry = Computation()
        retry.release.set()
        return outcomes, await flights.call(key(), retry)

    outcomes, retried = asyncio.run(go())
    assert all(isinstance(o, RuntimeError) and "boom" in str(o) for o in outcomes)
    assert retried == ("Hello", False)

