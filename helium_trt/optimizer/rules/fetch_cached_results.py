"""Rule fetch_cached_results: answer LLM calls from the prompt-result cache at plan time."""

from __future__ import annotations

from helium_trt.optimizer.base import OptimizeContext, PromptResultCache
from helium_trt.optimizer.known_prompts import RenderedPrompts, known_prompt
from helium_trt.optimizer.plan_values import RowValues, row_independent_values
from helium_trt.plan.chat import unmark
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import CacheFetchOp, LlmOp
from helium_trt.plan.prompt import is_chat_prompt, llm_prompt_template


class FetchCachedResults:
    """A deterministic LLM call whose prompt text is computable now for a row (it depends only
    on inputs, constants, formats and concats) is looked up in ``ctx.prompt_cache`` under the
    exact text the engine would see. Hits become a ``CacheFetchOp``: every row hit -> no
    fallback (the call disappears, and its prompt operators become dead); some rows hit ->
    the original op stays as the fallback for the missing rows (the batch is split).

    NOTE: calls with ``return_history`` are skipped: their value is a conversation, the cache
    holds reply text.

    Example: rows ``[{q: "2+2?"}, {q: "3+3?"}]``, ``a = llm(format("Q: {q}"))`` and a cache
    holding only "Q: 2+2?" -> "4" gives ``a = cache_fetch(hits={0: "4"}, fallback=llm(..))``.
    """

    name = "fetch_cached_results"

    def apply(self, plan: Plan, ctx: OptimizeContext) -> Plan:
        cache = ctx.prompt_cache
        if cache is None or not plan.rows:
            return plan
        shared, orders = row_independent_values(plan, ctx.chat_format), {}
        rows = [RowValues(plan, row, ctx.chat_format, shared, orders) for row in plan.rows]
        fetched, marks = {}, {}
        for op in plan.ops:
            if (isinstance(op, LlmOp) and op.config.is_deterministic and not op.return_history
                    and cache.may_hold(op.model, op.config)):
                fmt = ctx.format_for(op.model)
                rendered = RenderedPrompts(op, is_chat_prompt(plan, op),
                                           llm_prompt_template(plan, op, fmt), fmt)
                if ctx.rendered_prompts is not None:
                    ctx.rendered_prompts[op.id] = rendered
                hits = _lookup_rows(rendered, rows, cache, marks)
                if hits:
                    fallback = None if len(hits) == len(rows) else op
                    fetched[op.id] = CacheFetchOp(op.id, hits=hits, fallback=fallback)
        if not fetched:
            return plan
        return plan.replace_ops(fetched.get(op.id, op) for op in plan.ops)


def _lookup_rows(rendered: RenderedPrompts, rows: list[RowValues], cache: PromptResultCache,
                 marks: dict[str, str]) -> tuple[tuple[int, str], ...]:
    """Rows whose prompt the cache answers; every row's prompt is kept in ``rendered``."""
    op, fmt = rendered.llm, rendered.fmt
    hits = []
    for i, values in enumerate(rows):
        marked = rendered.by_row[i] = known_prompt(op, rendered.is_chat, rendered.template,
                                                   values, fmt, marks=marks)
        if marked is None:
            continue
        found = cache.lookup(op.model, unmark(marked), op.config)
        if found is not None:
            hits.append((i, found))
    return tuple(hits)
