"""Cross-batch scenario: warm on one day's batch, measure the next day's on the same server.

Day 1 runs batch A of a workflow; day 2 runs batch B (a fraction of A's rows again, the rest
new) on the same engine and, for helium, the same RuntimeCaches (the prompt-result cache kept
across requests), with a Warm(keep=True) of the workflow between the days. Only day 2 is the
measurement. Inside one request a workflow-unaware orchestrator on a radix-cached engine
already computes the trie minimum of prefill; across requests helium answers repeated calls
(and everything downstream of them) from its result cache, and keeps static prefixes resident
with a high retention priority where an LRU cache sized for one day has let them go.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Sequence

from helium_trt.api.helium.v1 import service_pb2
from helium_trt.bench.engines import CallLog, RecordingEngine
from helium_trt.bench.harness import BenchProgress, EngineFactory, SystemRun, half_kv_blocks, \
    run_on_engine
from helium_trt.bench.systems import CALL_LEVEL_OPTIONS, HELIUM, System
from helium_trt.bench.workloads import Workload, WorkloadSize, load_cross_batch, \
    load_workflow_proto, load_workload
from helium_trt.engine.base import Engine
from helium_trt.runtime.options import RunOptions
from helium_trt.runtime.planning import RuntimeCaches
from helium_trt.server.core import HeliumCore

CALL_LEVEL = "call-level"
# Suffix of the systems whose KV cache holds about one day's working set, not two.
DAY_KV = " @day-kv"
DAY_KV_FRACTION = 1.0
INTERLUDE_ROWS = 8
_OTHER_TENANT = System("other tenant", "workflow-unaware client", CALL_LEVEL_OPTIONS)


@dataclass(frozen=True, slots=True)
class CrossBatchSystem:
    """A system and whether a Warm(keep=True) of the workflow runs between the days (a
    workflow-unaware orchestrator has no such call)."""

    system: System
    warm_between_days: bool


def cross_batch_systems() -> tuple[CrossBatchSystem, ...]:
    h = RunOptions()
    full = (
        (System(HELIUM, "all on; prompt-result cache kept across days; Warm(keep) between days",
                h), True),
        (System("helium -prompt-cache", "caches kept, result cache off: the KV effect alone",
                replace(h, prompt_cache=False)), True),
        (System(CALL_LEVEL, "workflow-unaware orchestrator, same engine, LRU prefix cache only",
                CALL_LEVEL_OPTIONS), False),
    )
    day_kv = tuple((replace(s, name=s.name + DAY_KV, kv_fraction=DAY_KV_FRACTION,
                            description=s.description + "; KV cache = one day's working set"),
                    warm) for s, warm in full)
    return tuple(CrossBatchSystem(s, warm) for s, warm in full + day_kv)


def select_cross_batch_systems(names: Sequence[str] | None) -> tuple[CrossBatchSystem, ...]:
    systems = cross_batch_systems()
    if not names:
        return systems
    known = [s.system.name for s in systems]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown cross-batch system(s) {unknown}; known: {known}")
    return tuple(s for s in systems if s.system.name in names)


@dataclass(frozen=True, slots=True)
class CrossBatch:
    """One workload's two batches: day 2 repeats day 1's first ``num_repeated`` rows."""

    name: str
    size: WorkloadSize
    overlap: float
    day1: Workload
    day2: Workload
    num_repeated: int
    workflow: service_pb2.Workflow
    interlude: Workload | None = None  # other tenants' traffic between the days

    @property
    def label(self) -> str:
        fan = f" k={self.size.fan_out}" if self.size.fan_out else ""
        between = f", {self.interlude.label} between" if self.interlude else ""
        return (f"{self.name} ({self.size.num_rows} rows/day{fan}, "
                f"{self.num_repeated} repeated{between})")


def load_batches(name: str, size: WorkloadSize, overlap: float, seed: int = 0,
                 interlude: str | None = None) -> CrossBatch:
    """``interlude``: a workload whose INTERLUDE_ROWS rows run between the days through a
    workflow-unaware client (another tenant), pushing the LRU cache past yesterday's state."""
    day1, day2, num_repeated = load_cross_batch(name, size, overlap, seed)
    workflow = load_workflow_proto(name, size.fan_out).workflow
    other = (load_workload(interlude, WorkloadSize(INTERLUDE_ROWS, size.max_tokens), seed + 1)
             if interlude else None)
    return CrossBatch(name, size, overlap, day1, day2, num_repeated, workflow, other)


@dataclass
class CrossBatchRun:
    """Day 1 and day 2 of one system on one workload; the warm-up between them."""

    workload: str
    system: str
    day1: SystemRun
    day2: SystemRun
    warm_ms: float
    warm_tokens_computed: int
    interlude_ms: float
    num_repeated: int
    num_repeated_identical: int  # repeated rows whose day-2 outputs equal day 1's


async def run_days(batch: CrossBatch, entry: CrossBatchSystem, engine: Engine,
                   kv_blocks: int | None = None) -> CrossBatchRun:
    """Day 1, the optional Warm(keep), day 2: one engine and one RuntimeCaches throughout
    (closed afterwards)."""
    system = entry.system
    caches = RuntimeCaches()
    try:
        day1 = await run_on_engine(batch.day1, system, engine, caches, kv_blocks)
        warm_ms, warm_tokens, interlude_ms = 0.0, 0, 0.0
        if entry.warm_between_days:  # registered right after day 1, kept through the interlude
            warm_ms, warm_tokens = await _warm_keep(batch.workflow, engine, caches)
        if batch.interlude is not None:
            other = await run_on_engine(batch.interlude, _OTHER_TENANT, engine, RuntimeCaches(),
                                        kv_blocks)
            interlude_ms = other.wall_ms
        day2 = await run_on_engine(batch.day2, system, engine, caches, kv_blocks)
    finally:
        await engine.close()
    identical = sum(1 for row in range(batch.num_repeated)
                    if row in day2.outputs and day2.outputs[row] == day1.outputs.get(row))
    return CrossBatchRun(batch.label, system.name, day1, day2, warm_ms, warm_tokens,
                         interlude_ms, batch.num_repeated, identical)


async def _warm_keep(workflow: service_pb2.Workflow, engine: Engine,
                     caches: RuntimeCaches) -> tuple[float, int]:
    """The server's own Warm RPC (HeliumCore.warm, keep=True) on this engine."""
    log = CallLog()
    core = HeliumCore([RecordingEngine(engine, log)], caches)
    start = time.perf_counter()
    response = await core.warm(service_pb2.WarmRequest(workflow=workflow, keep=True))
    return (time.perf_counter() - start) * 1000.0, int(response.tokens_computed)


def run_cross_batch(batches: Sequence[CrossBatch], systems: Sequence[CrossBatchSystem],
                    factory: EngineFactory, progress: BenchProgress | None = None,
                    on_workload=None) -> list[CrossBatchRun]:
    """Every system on every workload's two days, one system at a time, each on a fresh engine.
    ``@day-kv`` systems get KV blocks for one day's working set of the first full-KV system."""
    runs: list[CrossBatchRun] = []
    for batch in batches:
        reference: SystemRun | None = None
        for entry in systems:
            system = entry.system
            kv_blocks = None
            if system.kv_fraction is not None:
                if reference is None:
                    continue
                kv_blocks = half_kv_blocks(reference, system.kv_fraction, factory.block_size,
                                           reference.max_prompt_tokens)
            if progress:
                progress.begin(batch.label, system.name)
            run = asyncio.run(run_days(batch, entry, factory.build(system, kv_blocks),
                                       kv_blocks))
            if reference is None and system.kv_fraction is None:
                reference = run.day1
            runs.append(run)
            if progress:
                progress.write(f"    day 1 {run.day1.wall_ms / 1000:7.2f} s, warm "
                               f"{run.warm_ms / 1000:.2f} s ({run.warm_tokens_computed} tokens), "
                               f"interlude {run.interlude_ms / 1000:.2f} s; day 2:")
                progress.end(run.day2)
        if on_workload:
            on_workload(runs)
    return runs
