"""Single flight: identical deterministic LLM calls in flight are computed once and shared.

Two calls with the same key (tenant, model, prompt token ids, generation config), greedy or
seeded, give the same text: the second one to arrive, in the same run or in another run of the
same tenant, waits for the first one's result instead of asking an engine again. The
prompt-result cache answers the same calls once they have finished; this covers the time
they are running.

The first caller starts the computation as a task of its own, and every caller (the first
included) awaits it shielded: a waiter's cancel never reaches it while other waiters remain.
When the last waiter leaves by cancel before the result, the computation is cancelled too. A
failure reaches every waiter. Text streamed so far is replayed to a caller that joins late,
then each new piece goes to every waiter.

NOTE: a flight leaves the table when its last waiter has taken the result, not when the
computation ends: a waiter resumes and stores the result in the prompt cache without another
await in between, so no identical call slips between the flight and the cache.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

from helium_trt.plan.ops import GenerationConfig

T = TypeVar("T")
TextSink = Callable[[str], None]
DEFAULT_TENANT_KEY = ""


@dataclass(frozen=True, slots=True)
class FlightKey:
    """What makes two LLM calls the same call (``config`` must be deterministic)."""

    tenant: str
    model: str
    prompt: tuple[int, ...]
    config: GenerationConfig


@dataclass(eq=False)
class _Flight:
    task: asyncio.Future | None = None
    num_waiters: int = 0
    pieces: list[str] = field(default_factory=list)
    sinks: list[TextSink] = field(default_factory=list)

    def publish(self, text: str) -> None:
        self.pieces.append(text)
        for sink in list(self.sinks):
            sink(text)


class SingleFlight:
    """The calls in flight, keyed by FlightKey; shared by the runs of a server."""

    def __init__(self) -> None:
        self._flights: dict[FlightKey, _Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def num_waiters(self) -> int:
        """Callers waiting for a call in flight, those that started one included."""
        return sum(f.num_waiters for f in self._flights.values())

    async def call(self, key: FlightKey, compute: Callable[[TextSink], Awaitable[T]],
                   on_text: TextSink | None = None) -> tuple[T, bool]:
        """(result, joined): ``compute(publish)`` runs once for every caller with ``key`` while
        it is in flight; ``joined`` is True for every caller but the one that started it.
        ``on_text`` gets the streamed text (what was published before this caller came first).
        """
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            flight = self._flights[key] = _Flight()
            flight.task = asyncio.ensure_future(compute(flight.publish))
            flight.task.add_done_callback(_retrieve)
        elif on_text is not None and flight.pieces:
            on_text("".join(flight.pieces))
        if on_text is not None:
            flight.sinks.append(on_text)
        flight.num_waiters += 1
        try:
            return await asyncio.shield(flight.task), joined
        except asyncio.CancelledError:
            if flight.num_waiters == 1 and not flight.task.done():
                flight.task.cancel()  # nobody else waits for it
            raise
        finally:
            flight.num_waiters -= 1
            if on_text is not None:
                flight.sinks.remove(on_text)
            if flight.num_waiters == 0 and self._flights.get(key) is flight:
                del self._flights[key]


def _retrieve(task: asyncio.Future) -> None:
    """Mark a failed computation's exception as seen: its waiters may all have left."""
    if not task.cancelled():
        task.exception()
