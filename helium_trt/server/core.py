"""HeliumCore: the server's state behind HeliumService and the Triton `helium` model.

Owns the engines, the cross-request caches (prompt results, observed output lengths), the
registered (warm) workflows and the counters, all kept per tenant (server.tenant_state), and the
prefixes the operator made public; turns helium.v1 requests into runtime calls and runtime
events into helium.v1 events.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import AsyncIterator, Awaitable, Callable, Sequence

from helium_trt.api.convert import plan_from_proto
from helium_trt.api.events import event_to_proto, run_request_inputs
from helium_trt.api.helium.v1 import service_pb2
from helium_trt.cache.public_prefixes import PublicPrefixes
from helium_trt.engine.base import (
    DEFAULT_RETENTION_PRIORITY, Engine, EngineHealth, RetentionRange,
)
from helium_trt.errors import InvalidWorkflowError, ResourceExhaustedError
from helium_trt.optimizer import OptimizeContext, optimize
from helium_trt.cache.trt import build_trt
from helium_trt.optimizer.explain import Explanation, explain, to_json, to_text
from helium_trt.plan.ops import LlmOp
from helium_trt.plan.prompt import llm_prompt_template
from helium_trt.runtime.calls import PromptTokenizer
from helium_trt.runtime.cancel import CancelToken, run_cancellable
from helium_trt.runtime.events import RunError, RunStats
from helium_trt.runtime.models import ModelSet, as_models, bind_models
from helium_trt.runtime.patterns import RE2
from helium_trt.runtime.planning import RuntimeCaches, chat_format_of, prepare_run
from helium_trt.runtime.workflow import ToolCall, ToolError, planning_executor, run_workflow
from helium_trt.server.restarts import RestartTracker
from helium_trt.server.run_record import RunRecord, RunTally
from helium_trt.server.status import grpc_code
from helium_trt.server.tenant_state import TenantState, TenantStates
from helium_trt.server.tenants import DEFAULT_TENANT, Tenant

ProtoToolCallback = Callable[[service_pb2.ToolCall], Awaitable[service_pb2.ToolResult]]
log = logging.getLogger(__name__)

# Prefixes registered with Warm(keep=true) outrank every per-run priority but the maximum.
KEEP_WARM_PRIORITY = 90


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Requests past these are refused with RESOURCE_EXHAUSTED before any work starts."""

    max_rows: int = 1024
    max_ops: int = 2048
    max_message_bytes: int = 64 << 20
    # One LLM call's prompt; None leaves only the engine's context window. Checked at plan time
    # for what is known then, and per call once prompts built from LLM outputs are complete.
    max_prompt_tokens: int | None = None
    # How long a Session's tool call waits for the client's result (None: forever); a request's
    # own RunOptions.tool_call_timeout_ms may only shorten it.
    tool_call_timeout_s: float | None = 300.0
    # Bytes of one row value (a string, or a list's strings together) and of all of a request's
    # rows: checked on the protobuf message, before any value becomes Python text or tokens.
    max_value_bytes: int = 1 << 20
    max_rows_bytes: int = 16 << 20
    # Bytes of one rendered prompt (or formatted value), checked before it is tokenized.
    max_prompt_bytes: int = 4 << 20
    # LLM calls one request may make, list fan-out included; checked at plan time.
    max_calls: int = 4096


def check_limits(request: service_pb2.RunRequest, limits: ServerLimits) -> None:
    """Refuse a request with no workflow, or past ``limits``, before any planning (shared by
    the gRPC service and the Triton `helium` model)."""
    if not request.HasField("workflow"):
        raise InvalidWorkflowError("the request has no workflow", field="workflow")
    if len(request.rows) > limits.max_rows:
        raise ResourceExhaustedError(
            f"{len(request.rows)} rows exceed the server's limit of {limits.max_rows}")
    num_ops = len(request.workflow.ops) + sum(
        len(op.loop.body) * max(op.loop.max_iterations, 1)
        for op in request.workflow.ops if op.WhichOneof("kind") == "loop")
    if num_ops > limits.max_ops:
        raise ResourceExhaustedError(
            f"{num_ops} operators (loops unrolled) exceed the server's limit of {limits.max_ops}")
    _check_row_bytes(request, limits)


def _check_row_bytes(request: service_pb2.RunRequest, limits: ServerLimits) -> None:
    num_bytes = 0
    for i, row in enumerate(request.rows):
        for column, value in row.fields.items():
            size = value.ByteSize()
            if size > limits.max_value_bytes:
                raise ResourceExhaustedError(
                    f"field 'rows[{i}].{column}': {size:,} bytes exceed the server's limit of "
                    f"{limits.max_value_bytes:,} bytes per row value")
        num_bytes += row.ByteSize()
    if num_bytes > limits.max_rows_bytes:
        raise ResourceExhaustedError(
            f"field 'rows': {num_bytes:,} bytes exceed the server's limit of "
            f"{limits.max_rows_bytes:,} bytes of rows per request")


class HeliumCore:
    """Runs, explains and warms helium.v1 requests on ``engines`` (one per worker).

    Every method acts for a ``tenant`` (DEFAULT_TENANT when the server has no auth): it sees
    only that tenant's cached results, cached KV blocks (its cache salt) and registrations, plus
    the public prefixes. ``caches`` are the default tenant's.
    """

    def __init__(self, engines: Sequence[Engine] | ModelSet, caches: RuntimeCaches | None = None,
                 limits: ServerLimits = ServerLimits()):
        if not engines:
            raise ValueError("HeliumCore needs at least one engine")
        # The served models by name (a plain engine list: one model); ``engines`` all workers.
        self.models = as_models(engines)
        self.engines = self.models.engines
        self.limits = limits
        self.caches = caches if caches is not None else RuntimeCaches()
        self.tenants = TenantStates(self.caches)
        self.public_prefixes = PublicPrefixes()
        self._public: list[tuple[str, tuple[int, ...]]] = []  # (model, tokens), kept warm
        self._publishing = asyncio.Lock()
        self._restarts = RestartTracker(self.engines)
        self._rewarming: dict[int, asyncio.Task] = {}  # by engine index
        # Called with each run's RunRecord when it ends (serve adds its log line and metrics).
        self.observers: list[Callable[[RunRecord], None]] = []
        # Run ids: this core's random tag and a count, unique across the cores (helium-trt
        # serve processes, Triton `helium` model instances) that may share one LLM engine.
        self._run_tag = uuid.uuid4().hex[:8]
        self._run_ids = itertools.count(1)

    async def run(self, request: service_pb2.RunRequest, tools: ProtoToolCallback | None = None,
                  tenant: Tenant = DEFAULT_TENANT) -> AsyncIterator[service_pb2.RunEvent]:
        """Stream the run's events; a deadline ends it with a DEADLINE_EXCEEDED error event.

        Raises InvalidWorkflowError before any event for a malformed request, and
        PermissionDeniedError / ResourceExhaustedError past the tenant's quotas. Closing the
        iterator (client cancel) cancels the run, which cancels its engine requests. However it
        ends, each of ``observers`` gets the run's RunRecord.
        """
        tally = RunTally(tenant.name, request.workflow.name, self.engines[0].info.model_name,
                         len(request.rows))
        started, failure, error = time.perf_counter(), None, ""
        events = self._run_events(request, tools, self.tenants.get(tenant))
        try:
            async for event in events:
                tally.see(event)
                yield event
        except BaseException as exc:
            failure = _status_of(exc)
            error = "" if failure == "cancelled" else str(exc) or type(exc).__name__
            raise
        finally:
            await events.aclose()
            self._notify(tally.record((time.perf_counter() - started) * 1000.0, failure, error))

    def _notify(self, record: RunRecord) -> None:
        for observer in self.observers:
            try:
                observer(record)
            except Exception:  # noqa: BLE001 - metrics or logging must never fail a run
                log.exception("run observer %r failed", observer)

    async def _run_events(self, request: service_pb2.RunRequest,
                          tools: ProtoToolCallback | None,
                          state: TenantState) -> AsyncIterator[service_pb2.RunEvent]:
        tenant = state.tenant
        plan, rows, options = run_request_inputs(request)
        tool_timeouts = (options.tool_call_timeout_s, self.limits.tool_call_timeout_s)
        options = replace(self._server_options(options, tenant),
                          max_prompt_tokens=self.limits.max_prompt_tokens,
                          tool_call_timeout_s=min(filter(None, tool_timeouts), default=None))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.deadline_ms / 1000.0 if options.deadline_ms else None
        state.admit_run(options.priority)
        events = run_workflow(plan, self.models, rows=rows, options=options, caches=state.caches,
                              tools=_adapt_tools(tools),
                              run_id=f"{self._run_tag}-{next(self._run_ids)}")
        try:
            while True:
                # NOTE: the timeout covers only the wait for the next event, never a ``yield``:
                # a deadline firing while the consumer (gRPC writing the last event) held control
                # cancelled the consumer instead, and the stream never ended.
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(events)
                except StopAsyncIteration:
                    break
                if isinstance(event, RunStats):
                    state.counters.add(event)
                yield event_to_proto(event)
        except TimeoutError:
            yield event_to_proto(RunError(
                "DEADLINE_EXCEEDED", f"the run passed its deadline of {options.deadline_ms} ms"))
        finally:
            state.counters.inflight_runs -= 1
            await events.aclose()

    def _server_options(self, options, tenant: Tenant):
        """``options`` with what the server decides: its limits and the tenant's cache scope."""
        return replace(options, max_calls=self.limits.max_calls,
                       max_prompt_bytes=self.limits.max_prompt_bytes,
                       cache_salt=tenant.cache_salt, public_prefixes=self.public_prefixes)

    async def explain(self, request: service_pb2.ExplainRequest,
                      tenant: Tenant = DEFAULT_TENANT) -> service_pb2.ExplainResponse:
        # Planning tokenizes every prompt it knows: a thread of the planning pool keeps the event
        # loop free (and the default executor's short jobs unqueued), and stops planning when the
        # Explain is cancelled.
        return await run_cancellable(planning_executor(), self._explain, request, tenant)

    def _explain(self, request: service_pb2.ExplainRequest, tenant: Tenant,
                 cancel: CancelToken) -> service_pb2.ExplainResponse:
        plan, rows, options = run_request_inputs(request.request)
        options = self._server_options(options, tenant)
        caches = self.tenants.get(tenant).caches
        fmt = chat_format_of(self.engines[0])
        prepared = None
        if rows:  # the run's own planning, once: its optimize already consulted the result cache
            prepared = prepare_run(plan, rows, self.models, options, caches,
                                   with_estimate=True, cancel=cancel)
            ex = Explanation(prepared.optimized, build_trt(prepared.optimized.plan, fmt),
                             prepared.planning_ms, fmt.source)
        else:
            ctx = OptimizeContext(chat_format=fmt, patterns=RE2,
                                  prompt_cache=caches.prompt_cache
                                  if options.prompt_cache else None)
            ex = explain(bind_models(plan, self.models), disabled=options.disabled_rules, ctx=ctx)
        tok = PromptTokenizer(self.engines[0].tokenizer)
        body = to_json(ex)
        for entry in body["shared_prefixes"]:
            entry["num_tokens"] = len(tok.stable_prefix(entry["text"]))
        text = to_text(ex, verbose=request.verbose)
        if prepared is not None:
            body["schedule"] = _schedule_json(prepared)
            text += "\n== schedule\n" + _schedule_text(body["schedule"])
        return service_pb2.ExplainResponse(
            text=text, json=json.dumps(body), planning_ms=ex.planning_ms,
            rules=[service_pb2.RuleChange(rule=r["name"], removed=r["removed"], added=r["added"],
                                          changed=r["changed"], ms=r["elapsed_ms"])
                   for r in body["rules"]],
            shared_prefixes=[service_pb2.SharedPrefix(text=p["text"], num_tokens=p["num_tokens"],
                                                      consumers=p["consumers"])
                             for p in body["shared_prefixes"]])

    async def warm(self, request: service_pb2.WarmRequest,
                   tenant: Tenant = DEFAULT_TENANT) -> service_pb2.WarmResponse:
        """Prefill every LLM operator's static prefix on every engine, in ``tenant``'s cache.

        With ``keep`` the prefixes hold KEEP_WARM_PRIORITY with no expiry, so per-run traffic
        with default priority evicts around them, and the workflow counts as one of the
        tenant's registrations (ResourceExhaustedError past its quota); without it they get the
        default priority.
        """
        if not request.workflow.ops:
            raise InvalidWorkflowError("the workflow has no operators", field="workflow.ops")
        state = self.tenants.get(tenant)
        name = request.workflow.name or f"workflow-{len(state.registered)}"
        is_new = name not in state.registered
        if request.keep:
            state.check_registration(name)
            state.registered.setdefault(name, ())  # held while warming: no race past the quota
        try:
            prefixes = await asyncio.to_thread(self._static_prefixes, request.workflow)
            priority = KEEP_WARM_PRIORITY if request.keep else DEFAULT_RETENTION_PRIORITY
            response = await self._warm_prefixes(prefixes, priority, tenant.cache_salt)
        except BaseException:
            if request.keep and is_new:
                state.registered.pop(name, None)
            raise
        if request.keep:
            state.registered[name] = tuple(prefixes)  # warmed again after an engine restart
        return response

    async def publish(self, workflows: Sequence) -> list[service_pb2.WarmResponse]:
        """Make exactly ``workflows``' static prefixes public (replacing the previous set):
        every tenant's prompts share their KV blocks (keyed without salt) from now on; they are
        warmed and kept like Warm(keep). Every workflow is planned before anything changes, so
        an error (InvalidWorkflowError, ModelNotFoundError) keeps the previous set. Only the
        operator calls this (`serve --public-workflow FILE`, again on SIGHUP), never a client.

        NOTE: a prefix no longer public is keyed with salt from now on, but its unsalted blocks
        keep their priority until evicted: no engine call lowers a cached block's retention.
        """
        async with self._publishing:
            found = []
            for workflow in workflows:
                if not workflow.ops:
                    raise InvalidWorkflowError("the workflow has no operators",
                                               field="workflow.ops")
                found.append(await asyncio.to_thread(self._static_prefixes, workflow))
            self.public_prefixes.replace(t for prefixes in found for _, t in prefixes)
            self._public = list(dict.fromkeys(p for prefixes in found for p in prefixes))
            return [await self._warm_prefixes(prefixes, KEEP_WARM_PRIORITY, None)
                    for prefixes in found]

    def rewarm_restarted(self) -> None:
        """Start warming the kept prefixes (public ones, every tenant's Warm(keep)
        registrations) again on each engine that came back from a failure since the last call:
        it restarted with an empty prefix cache. The health watcher calls this on every poll."""
        for engine in self._restarts.back_since_last_look():
            index = self.engines.index(engine)
            running = self._rewarming.get(index)
            if running is not None and not running.done():
                running.cancel()  # it failed again meanwhile: start over on the new cache
            self._rewarming[index] = asyncio.create_task(self._rewarm(engine),
                                                         name=f"helium-rewarm-{index}")

    async def _rewarm(self, engine: Engine) -> None:
        model = next(n for n in self.models.names if engine in self.models[n].engines)
        kept = [(tokens, None) for name, tokens in self._public if name == model]
        for state in self.tenants.all():
            kept += [(tokens, state.tenant.cache_salt)
                     for prefixes in list(state.registered.values())
                     for name, tokens in prefixes if name == model]
        computed = 0
        try:
            for tokens, salt in kept:
                computed += (await self._warm_one(engine, tokens, KEEP_WARM_PRIORITY, salt)
                             ).num_computed_tokens
        except Exception as exc:  # noqa: BLE001 - a task's error would go unseen: log it
            # Down again (its next restart warms them again), or an engine that cannot warm.
            log.warning("re-warming %d kept prefix(es) on a restarted engine of model %r "
                        "failed: %s", len(kept), model, exc)
            return
        if kept:
            log.warning("re-warmed %d kept prefix(es) (%d tokens computed) on a restarted "
                        "engine of model %r", len(kept), computed, model)

    async def _warm_prefixes(self, prefixes: list[tuple[str, tuple[int, ...]]], priority: int,
                             cache_salt: str | None) -> service_pb2.WarmResponse:
        computed = cached = 0
        for model, tokens in prefixes:  # each on every worker of its own model
            for engine in self.models[model].engines:
                result = await self._warm_one(engine, tokens, priority, cache_salt)
                computed += result.num_computed_tokens
                cached += result.num_cached_tokens
        return service_pb2.WarmResponse(num_prefixes=len(prefixes), tokens_computed=computed,
                                        tokens_already_cached=cached)

    async def _warm_one(self, engine: Engine, tokens: tuple[int, ...], priority: int,
                        cache_salt: str | None):
        scope = {} if cache_salt is None else {
            "cache_salt": cache_salt,
            "num_public_tokens": self.public_prefixes.num_public_tokens(tokens)}
        return await engine.warm(tokens, (RetentionRange(0, None, priority, None),), **scope)

    def health(self) -> EngineHealth:
        """Healthy while every engine is; else each unhealthy engine's reason (with its worker
        index when there are several, and its model's name when several are served)."""
        workers = [(m, i, e) for m in self.models.names
                   for i, e in enumerate(self.models[m].engines)]
        several_models = len(self.models) > 1

        def prefix(model: str, i: int) -> str:
            where = (f"model {model!r} " if several_models else "") + \
                (f"worker {i}" if len(workers) > 1 else "")
            return f"{where.strip()}: " if where else ""

        healths = [(prefix(m, i), e.health()) for m, i, e in workers]
        reasons = [where + (h.reason or "unhealthy") for where, h in healths if not h.healthy]
        return EngineHealth(not reasons, "; ".join(reasons) or None)

    def stats(self, tenant: Tenant = DEFAULT_TENANT) -> service_pb2.StatsResponse:
        """``tenant``'s own figures; the KV block counts are the engines' (shared capacity)."""
        state = self.tenants.get(tenant)
        c = state.counters
        total = c.prefill_tokens_computed + c.prefill_tokens_reused
        cache = state.caches.prompt_cache.stats()
        return service_pb2.StatsResponse(
            num_runs=c.num_runs, num_llm_calls=c.num_llm_calls,
            prefill_tokens_computed=c.prefill_tokens_computed,
            prefill_tokens_reused=c.prefill_tokens_reused,
            kv_hit_rate=c.prefill_tokens_reused / total if total else 0.0,
            result_cache_hits=cache.num_hits, result_cache_misses=cache.num_misses,
            result_cache_bytes=cache.num_bytes, queue_depth=c.inflight_runs,
            num_registered_workflows=len(state.registered),
            kv_blocks_held=sum(e.info.num_blocks - e.num_free_blocks() for e in self.engines),
            kv_blocks_total=sum(e.info.num_blocks for e in self.engines))

    def _static_prefixes(self, workflow) -> list[tuple[str, tuple[int, ...]]]:
        """(model, tokens) of every LLM operator's static prefix, rendered and tokenized as
        its own model sees it (ModelNotFoundError for an operator naming no served model)."""
        plan = bind_models(plan_from_proto(workflow, ()), self.models)
        plan = optimize(plan, ctx=OptimizeContext(patterns=RE2)).plan
        found: dict[tuple[str, tuple[int, ...]], None] = {}
        for name in dict.fromkeys(op.model for op in plan.ops if isinstance(op, LlmOp)):
            engine = self.models[name].engines[0]
            fmt, tok = chat_format_of(engine), PromptTokenizer(engine.tokenizer)
            for op in plan.ops:
                if not isinstance(op, LlmOp) or op.model != name:
                    continue
                template = llm_prompt_template(plan, op, fmt)
                literal = template[0] if template and isinstance(template[0], str) else ""
                tokens = tok.stable_prefix(literal)  # a token prefix of every prompt it starts
                if len(tokens) >= engine.info.block_size:  # NOTE: less cannot be cached
                    found[(name, tokens)] = None
        return list(found)

    async def close(self) -> None:
        for task in self._rewarming.values():
            task.cancel()
        for engine in self.engines:
            await engine.close()


def _status_of(exc: BaseException) -> str:
    """A RunRecord status for the exception that ended a run."""
    if isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
        return "cancelled"  # the client went away (or cancelled) mid-stream
    return grpc_code(exc).name.lower()


def _adapt_tools(tools: ProtoToolCallback | None):
    if tools is None:
        return None

    async def call(tc: ToolCall) -> str:
        result = await tools(service_pb2.ToolCall(call_id=tc.call_id, name=tc.name, args=tc.args,
                                                  op_id=tc.op_id, row=tc.row))
        if result.error:
            raise ToolError(result.error)
        return result.output

    return call


def _schedule_json(prepared) -> dict:
    s = prepared.schedule
    return {
        "order": list(s.order),
        "warm_prefixes": [len(w.tokens) for w in s.warm],
        "estimate": asdict(s.estimate) if s.estimate is not None else None,
    }


def _schedule_text(schedule: dict) -> str:
    order = schedule["order"]
    head = ", ".join(order[:12]) + (f", ... ({len(order)} calls)" if len(order) > 12 else "")
    return (f"  order: {head}\n  warm-ups: {len(schedule['warm_prefixes'])} prefixes, "
            f"{sum(schedule['warm_prefixes'])} tokens\n  estimate: {schedule['estimate']}")
