"""Planning a run: optimize the plan for its rows, list its LLM calls, schedule them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

from helium_trt.cache.prompt_cache import PromptResultCache
from helium_trt.engine.base import Engine
from helium_trt.errors import ResourceExhaustedError
from helium_trt.optimizer import OptimizeContext, optimize
from helium_trt.optimizer.driver import OptimizeResult
from helium_trt.plan.chat import CHATML, ChatFormat
from helium_trt.plan.fanout import count_llm_calls
from helium_trt.plan.graph import Plan
from helium_trt.runtime.calls import PlannedCalls, PromptTokenizer, llm_of, plan_calls
from helium_trt.runtime.cancel import CancelToken
from helium_trt.runtime.models import EnginesOrModels, ServedModel, as_models, bind_models
from helium_trt.runtime.options import RunOptions
from helium_trt.runtime.patterns import RE2
from helium_trt.runtime.single_flight import SingleFlight
from helium_trt.runtime.static_tokens import StaticTokenScopes
from helium_trt.runtime.worker_loads import WorkerLoads
from helium_trt.scheduler import OutputLengths, Schedule, SchedulerConfig, build_schedule


@dataclass
class RuntimeCaches:
    """State kept across requests: prompt results and observed output lengths per operator,
    the LLM calls in flight (single flight), the work queued on each engine, and the token ids
    of workflows' static text per model and tenant."""

    prompt_cache: PromptResultCache = field(default_factory=PromptResultCache)
    output_lengths: OutputLengths = field(default_factory=OutputLengths)
    flights: SingleFlight = field(default_factory=SingleFlight)
    loads: WorkerLoads = field(default_factory=WorkerLoads)
    static_tokens: StaticTokenScopes = field(default_factory=StaticTokenScopes)


@dataclass(frozen=True, slots=True)
class ModelRun:
    """One served model's share of a run: its LLM calls, rendered with its own chat format and
    tokenized with its own tokenizer, scheduled and placed on its own workers only."""

    name: str
    engines: tuple[Engine, ...]
    chat_format: ChatFormat
    tokenizer: PromptTokenizer
    calls: PlannedCalls
    schedule: Schedule


@dataclass(frozen=True, slots=True)
class PreparedRun:
    """A planned run. ``calls`` holds every model's calls; ``schedule``, ``chat_format`` and
    ``tokenizer`` are the default model's (what a one-model run has), ``models`` each model's
    share (the default's always, others' when the plan calls them)."""

    optimized: OptimizeResult
    calls: PlannedCalls
    schedule: Schedule
    chat_format: ChatFormat
    tokenizer: PromptTokenizer
    planning_ms: float
    models: dict[str, ModelRun] = field(default_factory=dict)


def chat_format_of(engine: Engine) -> ChatFormat:
    return getattr(engine.tokenizer, "chat_format", None) or CHATML


def prepare_run(plan: Plan, rows: Sequence[dict], engines: EnginesOrModels,
                options: RunOptions, caches: RuntimeCaches,
                with_estimate: bool = False, cancel: CancelToken | None = None) -> PreparedRun:
    """Optimize (validating rows), tokenize what plan time knows, and schedule every call.

    ``engines`` is one model's workers, or a ModelSet: each LLM operator's model is resolved
    first (ModelNotFoundError naming the operator and field 'model' for an unknown one), and
    each model's calls are planned and scheduled on its own workers. The schedule's cost
    estimate is left out unless ``with_estimate`` (a run never reads it). Once ``cancel`` is
    set, planning stops with PlanningCancelled at its next step (a phase, or a call's prompt).
    """
    start = time.perf_counter()
    cancel = cancel if cancel is not None else CancelToken()
    cancel.check("before optimizing")
    models = as_models(engines)
    plan = bind_models(plan, models)
    default = models[models.default]
    fmt = chat_format_of(default.engines[0])
    # The plan-time result-cache lookup renders each model's prompts as that model sees them.
    formats = tuple((m, chat_format_of(models[m].engines[0])) for m in models.names[1:])
    rendered: dict = {}  # known prompts the cache lookup renders, for plan_calls to reuse
    ctx = OptimizeContext(chat_format=fmt, patterns=RE2,
                          prompt_cache=caches.prompt_cache if options.prompt_cache else None,
                          model_formats=formats, rendered_prompts=rendered)
    optimized = optimize(Plan(plan.ops, plan.name, tuple(rows)), ctx=ctx,
                         disabled=options.disabled_rules)
    if options.max_calls is not None:
        check_num_calls(optimized.plan, rows, options.max_calls)
    used = {llm.model for op in optimized.plan.ops if (llm := llm_of(op)) is not None}
    runs = {name: _model_run(models[name], optimized.plan, rows, options, caches, with_estimate,
                             cancel, rendered)
            for name in models.names if name == models.default or name in used}
    first = runs[models.default]
    calls = first.calls if len(runs) == 1 else _merge_calls([r.calls for r in runs.values()])
    return PreparedRun(optimized, calls, first.schedule, first.chat_format, first.tokenizer,
                       (time.perf_counter() - start) * 1000.0, runs)


def _model_run(model: ServedModel, plan: Plan, rows: Sequence[dict], options: RunOptions,
               caches: RuntimeCaches, with_estimate: bool, cancel: CancelToken,
               rendered: dict) -> ModelRun:
    engines = model.engines
    fmt = chat_format_of(engines[0])
    static = caches.static_tokens.scope(model.name, options.cache_salt, engines[0].tokenizer)
    tok = PromptTokenizer(engines[0].tokenizer, options.max_prompt_bytes, static)
    calls = plan_calls(plan, rows, fmt, tok, caches.output_lengths, model=model.name,
                       cancel=cancel, rendered=rendered)
    config = SchedulerConfig(
        num_workers=len(engines), batch_capacity=max(1, options.max_inflight),
        block_size=engines[0].info.block_size,
        worker_capacity_blocks=min(e.info.num_blocks for e in engines),
        cache_aware=options.cache_aware_scheduling,
        proactive_warming=options.proactive_warming and options.kv_prefix_reuse,
        retention_priorities=options.retention_priorities and options.kv_prefix_reuse,
    )
    if options.max_prompt_tokens is not None:
        check_prompt_tokens(calls, options.max_prompt_tokens)
    cancel.check("before scheduling")
    resident = [_resident_prefixes(engine, calls, options) for engine in engines]
    schedule = build_schedule(calls.specs, config, resident, with_estimate, calls.packed)
    return ModelRun(model.name, engines, fmt, tok, calls, schedule)


def _merge_calls(parts: list[PlannedCalls]) -> PlannedCalls:
    """Every model's calls in one (call ids are unique across models: one operator, one
    model)."""
    return PlannedCalls({k: v for p in parts for k, v in p.specs.items()},
                        {k: v for p in parts for k, v in p.templates.items()},
                        {k: v for p in parts for k, v in p.packed.items()},
                        frozenset().union(*(p.chat for p in parts)))


def check_num_calls(plan: Plan, rows: Sequence[dict], limit: int) -> None:
    """Refuse the run before any tokenizing or engine work when it would make more than
    ``limit`` LLM calls (one row's list column can fan out to thousands)."""
    num_calls = count_llm_calls(plan, rows)
    if num_calls > limit:
        raise ResourceExhaustedError(
            f"the request would make {num_calls:,} LLM calls (list elements included), over "
            f"the server's limit of {limit:,} calls per request")


def check_prompt_tokens(calls: PlannedCalls, limit: int) -> None:
    """Refuse the run before any work when a call's prompt, as far as plan time knows it,
    already passes ``limit`` (prompts that grow with LLM outputs are checked per call)."""
    for spec in calls.specs.values():
        if len(spec.known_tokens) > limit:
            why = prompt_over_limit(f"at least {len(spec.known_tokens)}", limit)
            raise ResourceExhaustedError(f"operator {spec.op_id!r}, row {spec.row}: {why}")


def prompt_over_limit(num_tokens: int | str, limit: int) -> str:
    """Why a prompt of ``num_tokens`` tokens is refused under the server's ``limit``."""
    return (f"the prompt has {num_tokens} tokens, over the server's limit of {limit} prompt "
            "tokens per LLM call")


def _resident_prefixes(engine: Engine, calls: PlannedCalls,
                       options: RunOptions) -> list[tuple[int, ...]]:
    """What ``engine`` reports cached of each distinct static prefix (the scheduler's seed), in
    the run's cache scope: another tenant's blocks are not there for it."""
    scope = {} if options.cache_salt is None else {"cache_salt": options.cache_salt}
    out, seen, seen_ops = [], set(), set()
    for spec in calls.specs.values():
        if spec.op_id in seen_ops:
            continue  # every row's call of an operator has the operator's static prefix
        seen_ops.add(spec.op_id)
        static = spec.known_tokens[:spec.static_len]
        if static and static not in seen:
            seen.add(static)
            if scope:
                scope["num_public_tokens"] = options.num_public_tokens(static)
            n = engine.num_resident_tokens(static, **scope)
            if n:
                out.append(static[:n])
    return out
