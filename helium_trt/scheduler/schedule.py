"""The scheduler's entry point: order, warm list, placement and estimate in one pass (pure)."""

from __future__ import annotations

from typing import Mapping, Sequence

from helium_trt.scheduler.cost import call_block_keys, simulate
from helium_trt.scheduler.order import fifo_order, greedy_order
from helium_trt.scheduler.placement import place
from helium_trt.scheduler.prefix_index import pack
from helium_trt.scheduler.simulate import SimulatedCache
from helium_trt.scheduler.types import CallPlan, CallSpec, Schedule, SchedulerConfig
from helium_trt.scheduler.warm import warm_prefixes


def build_schedule(calls: Mapping[str, CallSpec], config: SchedulerConfig = SchedulerConfig(),
                   resident: Sequence[Sequence[tuple[int, ...]]] | None = None,
                   with_estimate: bool = True,
                   packed: Mapping[str, bytes] | None = None) -> Schedule:
    """Schedule ``calls`` (listed in plan order) on ``config.num_workers`` workers.

    ``resident[w]`` lists token prefixes engine ``w`` reports cached now (seeding the
    simulation). Cache-aware scheduling off gives FIFO order on worker 0..n round robin;
    proactive warming off gives no warm list (shared ranges still get retention).
    ``with_estimate`` off leaves ``Schedule.estimate`` None: it replays the whole schedule on
    the simulated caches once more, and only reports (Explain) read it. ``packed`` holds each
    call's known tokens ``pack``ed, where the caller has them already.
    """
    # Known tokens packed once, shared by the greedy order's index, warm list and block keys.
    if packed is None:
        packed = {cid: pack(spec.known_tokens) for cid, spec in calls.items()}
    order = greedy_order(calls, packed) if config.cache_aware else fifo_order(calls)
    warm = warm_prefixes(calls, order, config.block_size, packed)
    shared = {cid: p for p in warm for cid in p.consumers}
    # NOTE: one worker leaves placement no choice (every call and warm prefix on worker 0),
    # so only several workers or the estimate simulate; they share block keys hashed once.
    can_place = config.cache_aware and config.num_workers > 1
    keys = (call_block_keys(calls, config.block_size, packed)
            if can_place or with_estimate else None)
    caches = _seeded_caches(config, resident)
    if can_place:
        placement = place(calls, order, warm, caches, config, keys)
        workers, warm = placement.workers, placement.warm
    else:
        workers = {cid: i % config.num_workers for i, cid in enumerate(order)}
    if not config.proactive_warming:
        warm = ()
    plans = {cid: CallPlan(cid, rank, workers[cid],
                           shared[cid].prefix_id if cid in shared else None,
                           len(shared[cid].tokens) if cid in shared else 0)
             for rank, cid in enumerate(order)}
    estimate = (simulate(calls, order, config, workers, warm, [c.copy() for c in caches], keys)
                if with_estimate else None)
    return Schedule(order, plans, tuple(warm), estimate, config)


def _seeded_caches(config: SchedulerConfig,
                   resident: Sequence[Sequence[tuple[int, ...]]] | None) -> list[SimulatedCache]:
    caches = [SimulatedCache(config.block_size, config.worker_capacity_blocks)
              for _ in range(config.num_workers)]
    for cache, prefixes in zip(caches, resident or ()):
        for tokens in prefixes:
            cache.insert(tokens)
    return caches
