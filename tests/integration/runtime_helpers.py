"""Helpers for runtime tests: a tiny model with a long context, engines, and run collection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


from helium_trt.api.convert import plan_from_proto
from helium_trt.api.helium.v1 import workflow_pb2
from helium_trt.engine.config import EngineConfig
from helium_trt.runtime.events import OpFinished, OpStarted, RowOutput, RunError, RunStats
from helium_trt.runtime.workflow import run_workflow
from google.protobuf import json_format


def make_engine(model_dir, num_blocks=1024):
    from helium_trt.engine.embedded.engine import EmbeddedEngine

    # float32: outputs are compared across runs, and bfloat16 ones depend on batch shapes.
    return EmbeddedEngine(EngineConfig(model_dir=str(model_dir), num_blocks=num_blocks,
                                       max_num_batched_tokens=512, dtype="float32"))


@dataclass
class RunResult:
    outputs: dict[int, dict[str, str]] = field(default_factory=dict)
    errors: list[RunError] = field(default_factory=list)
    started: list[OpStarted] = field(default_factory=list)
    finished: list[OpFinished] = field(default_factory=list)
    stats: RunStats | None = None
    events: list = field(default_factory=list)


async def collect(plan, engines, **kwargs) -> RunResult:
    out = RunResult()
    async for event in run_workflow(plan, engines, **kwargs):
        out.events.append(event)
        if isinstance(event, RowOutput):
            out.outputs[event.row] = event.outputs
        elif isinstance(event, RunError):
            out.errors.append(event)
        elif isinstance(event, OpStarted):
            out.started.append(event)
        elif isinstance(event, OpFinished):
            out.finished.append(event)
        elif isinstance(event, RunStats):
            out.stats = event
    return out


def run_on_fresh_engines(model_dir, plan, num_engines=1, **kwargs) -> RunResult:
    async def go():
        engines = [make_engine(model_dir) for _ in range(num_engines)]
        try:
            return await collect(plan, engines, **kwargs)
        finally:
            for e in engines:
                await e.close()

    return asyncio.run(go())


def workflow(ops: list[dict], rows=(), name="inline"):
    """A plan from protobuf-JSON operator dicts (as a workflow file would hold them)."""
    proto = json_format.ParseDict({"name": name, "ops": ops}, workflow_pb2.Workflow())
    return plan_from_proto(proto, tuple(rows))


def outputs_in_process(model_dir, request, num_blocks=1024) -> dict[int, dict[str, str]]:
    """Row outputs of a helium.v1 RunRequest run in-process on a fresh engine (the reference the
    service and Triton tests compare against)."""
    from helium_trt.api.events import run_request_inputs

    async def go():
        engine = make_engine(model_dir, num_blocks)
        plan, rows, options = run_request_inputs(request)
        try:
            return (await collect(plan, [engine], rows=rows, options=options)).outputs
        finally:
            await engine.close()

    return asyncio.run(go())

