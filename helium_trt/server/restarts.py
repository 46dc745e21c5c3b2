"""Which engines came back from a failure, so HeliumCore can warm their kept prefixes again.

An engine that restarts (the embedded engine rebuilds its KV pool after a failed step) starts
with an empty prefix cache: the prefixes registered with Warm(keep=true) and the public ones
are no longer warm there. An engine counts as back when its restart counter moved
(``num_restarts``, the embedded engine's) or when it was seen unhealthy and is healthy now (a
Triton server that came back may have lost its cache too).

NOTE: both signals, because polling alone misses a fast restart: the embedded engine fails,
rebuilds and passes its probe in tens of milliseconds, well inside the health watcher's 0.2 s
poll; and not every engine has a counter. Warming a prefix that is still cached computes
nothing, so a false alarm costs a lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from helium_trt.engine.base import Engine


@dataclass(frozen=True, slots=True)
class _Mark:
    num_restarts: int
    healthy: bool


class RestartTracker:
    """Compares each engine's restart counter and health with the last look."""

    def __init__(self, engines: Sequence[Engine]) -> None:
        self._engines = tuple(engines)
        self._marks = [_mark(engine) for engine in self._engines]

    def back_since_last_look(self) -> list[Engine]:
        """Engines healthy now that restarted, or were seen unhealthy, since the last call."""
        back = []
        for index, engine in enumerate(self._engines):
            now, last = _mark(engine), self._marks[index]
            if not now.healthy:  # keep the old count: the move is seen once it is healthy
                self._marks[index] = _Mark(last.num_restarts, False)
                continue
            if now.num_restarts != last.num_restarts or not last.healthy:
                back.append(engine)
            self._marks[index] = now
        return back


def _mark(engine: Engine) -> _Mark:
    return _Mark(getattr(engine, "num_restarts", 0), engine.health().healthy)
