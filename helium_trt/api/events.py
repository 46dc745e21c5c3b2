"""Runtime events and options <-> helium.v1 messages (RunEvent, RunOptions), field for field."""

from __future__ import annotations

from dataclasses import asdict

from helium_trt.api.convert import disabled_rules, plan_from_proto, rows_from_proto
from helium_trt.api.helium.v1 import service_pb2
from helium_trt.plan.graph import Plan
from helium_trt.runtime import events as ev
from helium_trt.runtime.options import RunOptions

_ONEOF = {ev.OpStarted: "op_started", ev.TokenDelta: "token_delta", ev.OpFinished: "op_finished",
          ev.RowOutput: "row_output", ev.RunError: "error", ev.RunStats: "run_stats"}


def run_options_from_proto(options: service_pb2.RunOptions) -> RunOptions:
    o = options.optimizations
    return RunOptions(
        disabled_rules=disabled_rules(o), prompt_cache=not o.disable_prompt_cache,
        cache_aware_scheduling=not o.disable_cache_aware_scheduling,
        proactive_warming=not o.disable_proactive_warming,
        retention_priorities=not o.disable_retention_priorities,
        kv_prefix_reuse=not o.disable_kv_prefix_reuse, stream_tokens=options.stream_tokens,
        priority=options.priority, deadline_ms=options.deadline_ms or None,
        tool_call_timeout_s=options.tool_call_timeout_ms / 1000.0 or None)


def run_request_inputs(request: service_pb2.RunRequest) -> tuple[Plan, tuple[dict, ...], RunOptions]:
    """(plan with rows, rows, options) of a RunRequest."""
    rows = rows_from_proto(request.rows)
    return plan_from_proto(request.workflow, rows), rows, run_options_from_proto(request.options)


def event_to_proto(event: ev.Event) -> service_pb2.RunEvent:
    field = _ONEOF[type(event)]
    data = asdict(event)
    if isinstance(event, ev.RunError):
        data["code"] = service_pb2.ErrorCode.Value(f"ERROR_CODE_{event.code}")
    message = getattr(service_pb2, type(getattr(service_pb2.RunEvent(), field)).__name__)(**data)
    return service_pb2.RunEvent(**{field: message})


_FROM_ONEOF = {name: cls for cls, name in _ONEOF.items()}


def event_from_proto(message: service_pb2.RunEvent) -> ev.Event | None:
    """The runtime event of a RunEvent (None for a ToolCall, which has no runtime twin)."""
    field = message.WhichOneof("event")
    cls = _FROM_ONEOF.get(field)
    if cls is None:
        return None
    payload = getattr(message, field)
    data = {f.name: getattr(payload, f.name) for f in payload.DESCRIPTOR.fields}
    if cls is ev.RunError:
        data["code"] = service_pb2.ErrorCode.Name(payload.code).removeprefix("ERROR_CODE_")
    if cls is ev.RowOutput:
        data["outputs"] = dict(payload.outputs)
    return cls(**data)


def run_options_to_proto(options: RunOptions) -> service_pb2.RunOptions:
    """Inverse of ``run_options_from_proto`` (rules map back to their switches)."""
    rules = options.disabled_rules
    return service_pb2.RunOptions(
        optimizations=service_pb2.Optimizations(
            disable_eliminate_dead_ops="eliminate_dead_ops" in rules,
            disable_merge_identical_ops="merge_identical_ops" in rules,
            disable_fold_constants="fold_constants" in rules,
            disable_prune_switches="prune_switches" in rules,
            disable_prompt_cache=not options.prompt_cache or "fetch_cached_results" in rules,
            disable_cache_aware_scheduling=not options.cache_aware_scheduling,
            disable_proactive_warming=not options.proactive_warming,
            disable_retention_priorities=not options.retention_priorities,
            disable_kv_prefix_reuse=not options.kv_prefix_reuse),
        priority=options.priority, deadline_ms=options.deadline_ms or 0,
        stream_tokens=options.stream_tokens,
        tool_call_timeout_ms=round((options.tool_call_timeout_s or 0) * 1000))
