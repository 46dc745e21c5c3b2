"""Placement of warm prefixes and calls over engine workers: prefix affinity against load (pure).

Each worker has a simulated cache seeded with what its engine reports resident. A call goes to
the worker minimizing (prompt tokens not cached there) + (work already placed there) /
``batch_capacity``: a worker holding the call's prefix wins until its queue costs more than
recomputing the prefix elsewhere, since a batch runs ``batch_capacity`` calls at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from helium_trt.scheduler.cost import call_block_keys
from helium_trt.scheduler.simulate import SimulatedCache, block_keys
from helium_trt.scheduler.types import CallSpec, SchedulerConfig, WarmPrefix


@dataclass(frozen=True, slots=True)
class Placement:
    workers: dict[str, int]
    warm: tuple[WarmPrefix, ...]
    load: tuple[float, ...]


def place(calls: Mapping[str, CallSpec], order: Sequence[str], warm: Sequence[WarmPrefix],
          caches: Sequence[SimulatedCache], config: SchedulerConfig,
          keys: Mapping[str, Sequence[int]] | None = None) -> Placement:
    """Assign each warm prefix (before its first consumer) and each call to a worker.

    ``keys`` are the calls' ``call_block_keys`` where the caller has them already.
    """
    caches = [c.copy() for c in caches]
    load = [0.0] * len(caches)
    if keys is None:
        keys = call_block_keys(calls, config.block_size)
    first_consumer = {p.consumers[0]: p for p in warm}
    placed_warm: list[WarmPrefix] = []
    workers: dict[str, int] = {}
    for cid in order:
        prefix = first_consumer.get(cid)
        if prefix is not None:
            prefix_keys = block_keys(prefix.tokens, config.block_size)
            w = _best_worker(prefix_keys, len(prefix.tokens), 0, caches, load, config)
            load[w] += len(prefix.tokens) - caches[w].insert_keys(prefix_keys)
            placed_warm.append(WarmPrefix(prefix.prefix_id, prefix.tokens, prefix.consumers, w))
        spec = calls[cid]
        num_tokens = spec.num_prompt_tokens
        w = _best_worker(keys[cid], num_tokens, spec.num_decode_tokens, caches, load, config)
        load[w] += num_tokens - caches[w].insert_keys(keys[cid]) + spec.num_decode_tokens
        workers[cid] = w
    return Placement(workers, tuple(placed_warm), tuple(load))


def _best_worker(keys: Sequence[int], num_tokens: int, num_decode: int,
                 caches: Sequence[SimulatedCache], load: Sequence[float],
                 config: SchedulerConfig) -> int:
    if len(caches) == 1:
        return 0

    def cost(w: int) -> tuple[float, float, int]:
        uncached = num_tokens - caches[w].num_resident_keys(keys)
        return (uncached + num_decode + load[w] / config.batch_capacity, load[w], w)

    return min(range(len(caches)), key=cost)
