"""What each engine worker has been given and not finished, across every run sharing it.

The dispatcher places a ready call on the worker that minimises its uncached prefill plus that
worker's queued work (scheduler.dispatch_cost). The engine reports what it holds now
(``num_resident_tokens``); this board adds what only the runtime knows: the prompts of the calls
in flight on a worker (cached there once their prefill has run, held while they run: an engine
that learns its residency from finished calls, as the Triton client does, cannot know them yet)
and the prefill and decode work still to do.
Every engine kind gets the same board, so placement needs nothing from an engine but residency.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

from helium_trt.engine.base import Engine
from helium_trt.scheduler.dispatch_cost import WorkerQueue, num_pending_tokens


@dataclass(slots=True)
class _Work:
    prompt: tuple[int, ...]
    salt: str | None  # the run's cache salt: only runs with the same one share blocks
    num_prefill: int  # uncached prompt tokens; 0 once the first token came
    num_decode: int  # tokens still expected


@dataclass(slots=True)
class _Board:
    work: dict[int, _Work] = field(default_factory=dict)

    def queue(self) -> WorkerQueue:
        works = self.work.values()
        return WorkerQueue(sum(w.num_prefill for w in works), sum(w.num_decode for w in works),
                           max((w.num_decode for w in works), default=0))

    def prompts(self, salt: str | None) -> list[tuple[int, ...]]:
        return [w.prompt for w in self.work.values() if w.salt == salt]


class WorkTicket:
    """One call's entry on a worker's board; the dispatcher reports its progress here."""

    __slots__ = ("_board", "_id")

    def __init__(self, board: _Board, ticket_id: int) -> None:
        self._board, self._id = board, ticket_id

    def prefilled(self) -> None:
        """The first token came: the prompt is computed (and cached, where the engine caches)."""
        work = self._board.work.get(self._id)
        if work is not None:
            work.num_prefill = 0

    def decoded(self, num_tokens: int) -> None:
        work = self._board.work.get(self._id)
        if work is not None:
            work.num_decode = max(0, work.num_decode - num_tokens)

    def done(self) -> None:
        """Finished, failed or cancelled: nothing of it is left on the worker."""
        self._board.work.pop(self._id, None)


class WorkerLoads:
    """Boards per engine, shared by every run on those engines (kept in RuntimeCaches)."""

    def __init__(self) -> None:
        self._boards: dict[int, tuple[Engine, _Board]] = {}
        self._ids = itertools.count()

    def queues(self, engines: Sequence[Engine]) -> list[WorkerQueue]:
        return [self._board(e).queue() for e in engines]

    def num_cached(self, engine: Engine, prompt: tuple[int, ...], salt: dict | None = None) -> int:
        """Leading tokens of ``prompt`` that ``engine`` holds now, or will once the prompts
        in flight on it are prefilled. ``salt``: the cache-salt keywords of a salted run (the
        engine reports what that salt may reuse, and only prompts in flight with it count).
        """
        resident = engine.num_resident_tokens(prompt, **salt) if salt else \
            engine.num_resident_tokens(prompt)
        in_flight = self._board(engine).prompts(salt.get("cache_salt") if salt else None)
        return max(resident, num_pending_tokens(prompt, in_flight, engine.info.block_size))

    def add(self, engine: Engine, prompt: tuple[int, ...], num_prefill: int, num_decode: int,
            salt: str | None = None) -> WorkTicket:
        board = self._board(engine)
        ticket_id = next(self._ids)
        board.work[ticket_id] = _Work(prompt, salt, num_prefill, num_decode)
        return WorkTicket(board, ticket_id)

    def _board(self, engine: Engine) -> _Board:
        # NOTE: keyed by id() with the engine kept alongside, so an id is never reused while the
        # board lives: engines need not be hashable (dataclass wrappers) nor weak-referenceable.
        entry = self._boards.get(id(engine))
        if entry is None:
            entry = self._boards[id(engine)] = (engine, _Board())
        return entry[1]
