"""Runs workloads x systems one after another on one engine kind and collects figures.

Engines are built fresh per system (sharing the loaded weights) so no system inherits another's
KV cache, and never run at the same time.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Callable, ContextManager, Protocol, Sequence

from helium_trt.bench.engines import Balancer, CallLog, OpWiseGate, RecordingEngine
from helium_trt.bench.systems import OPWISE, QUERYWISE, System
from helium_trt.bench.workloads import Workload
from helium_trt.engine.base import Engine
from helium_trt.runtime.events import OpFinished, OpStarted, RowOutput, RunError, RunStats, TokenDelta
from helium_trt.runtime.planning import RuntimeCaches
from helium_trt.runtime.workflow import run_workflow
from helium_trt.scheduler import prefill_minimum



class EngineFactory(Protocol):
    """Builds the engine a system runs on; ``session`` brackets every run of one engine kind
    (e.g. starts and stops the vLLM server)."""

    block_size: int

    def session(self, kind: str) -> ContextManager[None]: ...

    def build(self, system: System, kv_blocks: int | None) -> Engine: ...

    def build_workers(self, system: System, kv_blocks: int | None) -> list[Engine]: ...


@dataclass
class SystemRun:
    """Everything measured for one system on one workload."""

    workload: str
    system: str
    wall_ms: float
    num_rows: int
    num_rows_failed: int
    num_llm_calls: int
    prefill_computed: int
    prefill_reused: int
    prefill_minimum: int
    warm_computed: int
    decode_tokens: int
    kv_hit_rate: float
    planning_ms: float
    num_ops_before: int
    num_ops_after: int
    num_result_cache_hits: int
    kv_blocks: int | None
    max_prompt_tokens: int = 0
    # Distinct calls asked for (the runtime's RunStats), calls that joined an identical one in
    # flight, and the engine calls each worker got.
    num_distinct_prompts: int = 0
    num_shared_calls: int = 0
    worker_calls: list[int] = field(default_factory=list)
    wall_ms_all: list[float] = field(default_factory=list)  # every run's, with --repeat
    prefill_computed_all: list[int] = field(default_factory=list)
    ttft_ms: dict[str, float] = field(default_factory=dict)
    outputs: dict[int, dict[str, str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class _Timeline:
    started: dict[tuple[str, int], float] = field(default_factory=dict)
    first: dict[tuple[str, int], float] = field(default_factory=dict)
    outputs: dict[int, dict[str, str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stats: list[RunStats] = field(default_factory=list)

    def observe(self, event, row_offset: int) -> None:
        now = time.perf_counter() * 1000.0
        if isinstance(event, OpStarted):
            self.started.setdefault((event.op_id, event.row + row_offset), now)
        elif isinstance(event, (TokenDelta, OpFinished)):
            self.first.setdefault((event.op_id, event.row + row_offset), now)
        elif isinstance(event, RowOutput):
            self.outputs[event.row + row_offset] = dict(event.outputs)
        elif isinstance(event, RunError):
            self.errors.append(f"row {event.row} {event.op_id}: {event.code} {event.message}")
        elif isinstance(event, RunStats):
            self.stats.append(event)

    def ttft_per_op(self) -> dict[str, float]:
        per_op: dict[str, list[float]] = {}
        for key, start in self.started.items():
            if key in self.first:
                per_op.setdefault(key[0], []).append(self.first[key] - start)
        return {op: sum(v) / len(v) for op, v in sorted(per_op.items())}


async def run_system(workload: Workload, system: System, engine: Engine | Sequence[Engine],
                     kv_blocks: int | None = None) -> SystemRun:
    """Runs ``workload`` once under ``system`` on ``engine`` (or workers; closed afterwards)."""
    try:
        return await run_on_engine(workload, system, engine, RuntimeCaches(), kv_blocks)
    finally:
        for e in _as_list(engine):
            await e.close()


async def run_on_engine(workload: Workload, system: System, engine: Engine | Sequence[Engine],
                        caches: RuntimeCaches, kv_blocks: int | None = None) -> SystemRun:
    """Runs ``workload`` once, leaving ``engine`` open and ``caches`` filled: the cross-batch
    scenario runs a second batch on the same engine and caches. Several engines are workers:
    the runtime places calls on them, or with ``system.balancer`` a load balancer does."""
    log = CallLog()
    wrapped: list[Engine] = [RecordingEngine(e, log, i) for i, e in enumerate(_as_list(engine))]
    if system.balancer is not None:
        wrapped = [Balancer(wrapped, system.balancer)]
    if system.order == OPWISE:
        if len(wrapped) > 1:
            raise ValueError("opwise runs on one worker")
        wrapped = [OpWiseGate(wrapped[0], workload.plan.topo_order)]
    options = _with_streaming(system)
    timeline = _Timeline()
    start = time.perf_counter()
    if system.order == QUERYWISE:
        for index, row in enumerate(workload.rows):
            await _drive(workload, wrapped, (row,), options, caches, timeline, index)
    else:
        await _drive(workload, wrapped, workload.rows, options, caches, timeline, 0)
    wall_ms = (time.perf_counter() - start) * 1000.0
    return _figures(workload, system, wall_ms, log, timeline, kv_blocks)


def _as_list(engine: Engine | Sequence[Engine]) -> list[Engine]:
    return list(engine) if isinstance(engine, (list, tuple)) else [engine]


def _with_streaming(system: System):
    return replace(system.options, stream_tokens=True)


async def _drive(workload, engines, rows, options, caches, timeline: _Timeline, offset: int):
    async for event in run_workflow(workload.plan, engines, rows=rows, options=options,
                                    caches=caches):
        timeline.observe(event, offset)


def _figures(workload: Workload, system: System, wall_ms: float, log: CallLog,
             timeline: _Timeline, kv_blocks: int | None) -> SystemRun:
    stats = timeline.stats
    num_prompt = log.num_computed + log.num_cached
    return SystemRun(
        workload=workload.label, system=system.name, wall_ms=wall_ms,
        num_rows=len(workload.rows), num_rows_failed=sum(s.num_rows_failed for s in stats),
        num_llm_calls=log.num_calls,
        prefill_computed=log.num_computed + log.num_warm_computed,
        prefill_reused=log.num_cached,
        prefill_minimum=prefill_minimum(zip(log.prompts, log.outputs)),
        warm_computed=log.num_warm_computed, decode_tokens=log.num_decoded,
        kv_hit_rate=log.num_cached / num_prompt if num_prompt else 0.0,
        planning_ms=sum(s.planning_ms for s in stats),
        num_ops_before=max((s.num_ops_before for s in stats), default=0),
        num_ops_after=max((s.num_ops_after for s in stats), default=0),
        num_result_cache_hits=sum(s.num_result_cache_hits for s in stats),
        kv_blocks=kv_blocks, max_prompt_tokens=max(map(len, log.prompts), default=0),
        num_distinct_prompts=sum(s.num_distinct_prompts for s in stats),
        num_shared_calls=sum(s.num_shared_calls for s in stats),
        worker_calls=[log.worker_calls.get(w, 0)
                      for w in range(max(log.worker_calls, default=0) + 1)],
        ttft_ms=timeline.ttft_per_op(), outputs=timeline.outputs,
        errors=timeline.errors)


def merge_repeats(runs: Sequence[SystemRun]) -> list[SystemRun]:
    """One SystemRun per system: the median wall time of its runs (of two: their mean), the
    other figures from its first run, and every run's wall time and prefill computed."""
    by_system: dict[str, list[SystemRun]] = {}
    for run in runs:
        by_system.setdefault(run.system, []).append(run)
    merged = []
    for group in by_system.values():
        walls = [r.wall_ms for r in group]
        merged.append(replace(group[0], wall_ms=statistics.median(walls), wall_ms_all=walls,
                              prefill_computed_all=[r.prefill_computed for r in group]))
    return merged


def half_kv_blocks(reference: SystemRun, fraction: float, block_size: int,
                   max_prompt_tokens: int) -> int:
    """KV blocks for ``fraction`` of the working set (prefill minimum + decode: every distinct
    token once, a decoded reply that later prompts repeat counted once), never
    below what a few of the longest calls need to run side by side."""
    working = reference.prefill_minimum + reference.decode_tokens
    floor = 4 * math.ceil(max_prompt_tokens / block_size) + 8
    return max(math.ceil(fraction * working / block_size), floor)


@dataclass
class BenchProgress:
    """Progress lines on a stream: which run, how far, how long so far."""

    total: int
    write: Callable[[str], None]
    done: int = 0
    started: float = field(default_factory=time.perf_counter)

    def begin(self, workload: str, system: str) -> None:
        elapsed = time.perf_counter() - self.started
        self.write(f"[{self.done + 1}/{self.total} {elapsed:6.0f}s] {workload}: {system} ...")

    def end(self, run: SystemRun) -> None:
        self.done += 1
        failed = f", {run.num_rows_failed} rows FAILED" if run.num_rows_failed else ""
        self.write(f"    {run.wall_ms / 1000:7.2f} s, {run.num_llm_calls} calls, "
                   f"prefill {run.prefill_computed} computed / {run.prefill_reused} reused{failed}")


def run_all(workloads: Sequence[Workload], systems: Sequence[System], factory: EngineFactory,
            progress: BenchProgress | None = None,
            on_workload: Callable[[list[SystemRun]], None] | None = None,
            warm_up: bool = True, repeat: int = 1) -> list[SystemRun]:
    """Every system on every workload, one at a time: all embedded-engine systems workload by
    workload (in the order given), then each other engine kind in one session.

    ``warm_up``: each workload first runs once untimed under the kind's first system. The
    first run of a workload's shapes in a process was ~0.7 s slower (Trading, 1 row: 6.3 s, then
    5.4-5.6 s for any system), a cost that otherwise always fell on the first system listed.
    ``repeat``: the systems run in turn that many times (A B A B); each system's wall time is
    the median of its runs, with every run's wall time and prefill kept (``merge_repeats``).
    """
    runs: list[SystemRun] = []
    kinds = list(dict.fromkeys(s.engine for s in systems))
    for kind in kinds:
        with factory.session(kind):
            for workload in workloads:
                reference: SystemRun | None = None
                kind_systems = [s for s in systems if s.engine == kind]
                if warm_up:
                    first = next(s for s in kind_systems if s.kv_fraction is None)
                    if progress:
                        progress.write(f"  {workload.label}: untimed warm-up ({first.name})")
                    asyncio.run(run_system(workload, first, factory.build_workers(first, None)))
                done: list[SystemRun] = []
                for system in [s for _ in range(repeat) for s in kind_systems]:
                    kv_blocks = None
                    if system.kv_fraction is not None:
                        if reference is None:
                            continue  # sized from this workload's first full-KV run
                        kv_blocks = half_kv_blocks(reference, system.kv_fraction,
                                                   factory.block_size, reference.max_prompt_tokens)
                    if progress:
                        progress.begin(workload.label, system.name)
                    engines = factory.build_workers(system, kv_blocks)
                    run = asyncio.run(run_system(workload, system, engines, kv_blocks))
                    if reference is None and system.kv_fraction is None:
                        reference = run
                    done.append(run)
                    if progress:
                        progress.end(run)
                runs.extend(merge_repeats(done))
                if on_workload:  # partial reports survive an interrupted run
                    on_workload(runs)
    return runs
