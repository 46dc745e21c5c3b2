"""`helium-trt run FILE`: run a workflow on the embedded CPU engine with every optimization on
(or some off with --no-OPT), showing progress on stderr, then print each row's outputs and the
run statistics (``--stats-json PATH`` writes them as JSON). A workflow with tool-call operators
needs ``--tools MODULE:FUNCTION`` (a Python function answering them) and is refused without it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from helium_trt.api.convert import load_request_file, load_rows_file
from helium_trt.api.events import run_request_inputs
from helium_trt.errors import EngineUnavailableError, HeliumError
from helium_trt.runtime.events import OpFinished, OpStarted, RowOutput, RunError, RunStats
from helium_trt.server.commands.engine_flags import add_engine_flags, describe, engine_runtime
from helium_trt.server.commands.security_flags import (
    ClientSecurity, add_client_security_flags, open_client_security,
)
from helium_trt.server.commands.tools import TOOLS_HELP, as_tool_callback, load_tools, require_tools

# --no-X flag -> RunOptions field turned off.
_SWITCHES = {
    "prompt-cache": "prompt_cache",
    "cache-aware-scheduling": "cache_aware_scheduling",
    "proactive-warming": "proactive_warming",
    "retention-priorities": "retention_priorities",
    "kv-prefix-reuse": "kv_prefix_reuse",
}
_RULE_FLAGS = ("eliminate-dead-ops", "merge-identical-ops", "fold-constants", "prune-switches")


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="run a workflow on the embedded engine",
                              description=__doc__)
    p.add_argument("file", help="workflow file (YAML/JSON RunRequest or Workflow)")
    p.add_argument("--rows", help="rows file (YAML/JSON list, or .jsonl); replaces the file's rows")
    p.add_argument("--stats-json", metavar="PATH", help="write the run statistics as JSON")
    p.add_argument("--model", action="append", metavar="[NAME=]DIR",
                   help="[NAME=]DIR: a model directory, by name (repeatable; the first is the "
                   "default, used by LLM operators with no model; a bare DIR is named after the "
                   "directory; default: $HELIUM_MODEL_DIR or ./models/SmolLM2-135M-Instruct)")
    p.add_argument("--naive", action="store_true",
                   help="every optimization off, one call at a time (the baseline)")
    p.add_argument("--max-inflight", type=int, default=16, help="LLM calls in flight (default 16)")
    p.add_argument("--server", metavar="HOST:PORT",
                   help="run on a `helium-trt serve` instance over gRPC instead of in-process "
                   "(with TLS and a bearer token: --tls-ca, --tls-cert/--tls-key, --token-file)")
    add_client_security_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--tools", metavar="MODULE:FUNCTION", help=TOOLS_HELP)
    add_engine_flags(p)
    for flag in (*_SWITCHES, *_RULE_FLAGS):
        p.add_argument(f"--no-{flag}", action="store_true", help=f"turn off {flag}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        request = load_request_file(args.file)
        plan, rows, options = run_request_inputs(request)
        if args.rows:
            rows = load_rows_file(args.rows)
        options = _apply_flags(options, args)
        # Refused before the engine loads: without a callback, the rows would fail only after
        # every LLM call ahead of their first tool call had run.
        require_tools(plan, args.tools)
        tools = load_tools(args.tools) if args.tools else None
        security = open_client_security(args)
        if args.server:
            events = _remote_events(args.server, request, rows, options, tools, security)
        else:
            events = _local_events(plan, rows, options, _open_engine(args), tools)
    except HeliumError as exc:
        print(f"helium-trt run: {exc}", file=sys.stderr)
        return 2
    try:
        stats = asyncio.run(_run(events, args.quiet))
    except HeliumError as exc:
        print(f"helium-trt run: {exc}", file=sys.stderr)
        return 2
    if args.stats_json:
        Path(args.stats_json).write_text(json.dumps(asdict(stats), indent=2) + "\n")
    return 1 if stats.num_rows_failed else 0


def _apply_flags(options, args):
    from helium_trt.runtime.options import naive_options

    if args.naive:
        return naive_options()
    changes = {field: False for flag, field in _SWITCHES.items()
               if getattr(args, "no_" + flag.replace("-", "_"))}
    rules = {flag.replace("-", "_") for flag in _RULE_FLAGS
             if getattr(args, "no_" + flag.replace("-", "_"))}
    if not changes.get("prompt_cache", True):
        rules.add("fetch_cached_results")
    return replace(options, **changes, disabled_rules=options.disabled_rules | rules,
                   max_inflight=args.max_inflight)


def _open_engine(args: argparse.Namespace):
    """One embedded engine per --model, by name (the first is the default)."""
    from helium_trt.engine.config import EngineConfig
    from helium_trt.engine.embedded.engine import EmbeddedEngine
    from helium_trt.runtime.models import ModelSet, ServedModel
    from helium_trt.server.commands.model_flags import parse_models

    served = []
    for flag in parse_models(args.model):
        engine = EmbeddedEngine(EngineConfig(model_dir=str(flag.model_dir),
                                             **engine_runtime(args)))
        served.append(ServedModel(flag.name, (engine,)))
        print(f"helium-trt run: model {flag.name!r}: {describe(engine)}", file=sys.stderr,
              flush=True)
    return ModelSet(served)


async def _local_events(plan, rows, options, models, tools=None):
    from helium_trt.runtime.workflow import run_workflow

    callback = as_tool_callback(tools) if tools is not None else None
    try:
        async for event in run_workflow(plan, models, rows=rows, options=options,
                                        tools=callback):
            yield event
    finally:
        for engine in models.engines:
            await engine.close()


async def _remote_events(address: str, request, rows, options, tools=None,
                         security: ClientSecurity = ClientSecurity()):
    """The run's events from a helium.v1 server, as runtime events (same display as local);
    with ``tools``, over the Session RPC, answering its tool calls with them. ``security``:
    the channel's TLS and the bearer token sent with the call."""
    import grpc

    from helium_trt.api.convert import rows_to_proto
    from helium_trt.api.events import event_from_proto, run_options_to_proto
    from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc
    from helium_trt.errors import EngineUnavailableError, InvalidWorkflowError

    message = service_pb2.RunRequest(workflow=request.workflow, rows=rows_to_proto(rows),
                                     options=run_options_to_proto(options))
    async with security.channel(address) as channel:
        stub = service_pb2_grpc.HeliumServiceStub(channel)
        try:
            stream = stub.Run(message, metadata=security.metadata) if tools is None else \
                _session(stub, message, tools, security.metadata)
            async for proto in stream:
                event = event_from_proto(proto)
                if event is not None:
                    yield event
        except grpc.aio.AioRpcError as exc:
            cls = InvalidWorkflowError if exc.code() in (
                grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.NOT_FOUND) else EngineUnavailableError
            raise cls(f"{address}: {exc.code().name}: {exc.details()}") from None


async def _session(stub, message, tools, metadata=None):
    """RunEvents of a Session running ``message``, each ToolCall answered by ``tools``."""
    from helium_trt.api.helium.v1 import service_pb2

    callback = as_tool_callback(tools)
    outbox: asyncio.Queue = asyncio.Queue()
    outbox.put_nowait(service_pb2.SessionMessage(run=message))

    async def answer(call) -> None:
        try:
            result = service_pb2.ToolResult(call_id=call.call_id, output=await callback(call))
        except HeliumError as exc:
            result = service_pb2.ToolResult(call_id=call.call_id, error=str(exc))
        outbox.put_nowait(service_pb2.SessionMessage(tool_result=result))

    async def requests():
        while (item := await outbox.get()) is not None:
            yield item

    call = stub.Session(requests(), metadata=metadata)
    pending = set()
    try:
        async for proto in call:
            if proto.WhichOneof("event") == "tool_call":
                task = asyncio.ensure_future(answer(proto.tool_call))
                pending.add(task)
                task.add_done_callback(pending.discard)
            yield proto
    finally:
        outbox.put_nowait(None)
        for task in pending:
            task.cancel()


async def _run(events, quiet: bool) -> RunStats:
    progress = _Progress(quiet)
    stats = None
    try:
        async for event in events:
            progress.update(event)
            if isinstance(event, RowOutput):
                progress.clear()
                print(f"row {event.row}:")
                for name, text in event.outputs.items():
                    print(f"  {name}: {text}")
            elif isinstance(event, RunError):
                progress.clear()
                print(f"row {event.row}: error in {event.op_id or '-'}: {event.message}",
                      file=sys.stderr)
            elif isinstance(event, RunStats):
                stats = event
    finally:
        progress.clear()
    if stats is None:
        raise EngineUnavailableError("the run ended without statistics")
    print("stats:")
    for key, value in asdict(stats).items():
        print(f"  {key}: {round(value, 2) if isinstance(value, float) else value}")
    return stats


class _Progress:
    """One self-rewriting stderr line: LLM calls done/started and output tokens per second."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet or not sys.stderr.isatty()
        self.started = self.done = self.tokens = 0
        self.t0 = time.perf_counter()

    def update(self, event) -> None:
        if isinstance(event, OpStarted):
            self.started += 1
        elif isinstance(event, OpFinished):
            self.done += 1
            self.tokens += event.output_tokens
        else:
            return
        if not self.quiet:
            rate = self.tokens / max(time.perf_counter() - self.t0, 1e-6)
            sys.stderr.write(f"\r  calls {self.done}/{self.started}  {rate:,.0f} tok/s ")
            sys.stderr.flush()

    def clear(self) -> None:
        if not self.quiet:
            sys.stderr.write("\r\033[K")
