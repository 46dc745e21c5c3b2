"""Known prompts are rendered once a run: the plan-time result-cache lookup hands what it
rendered to the planner (OptimizeContext.rendered_prompts), which plans exactly what it plans
rendering them itself."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from test_static_tokens import ROWS, _TokenizerOnlyEngine, planned, two_step_plan

from helium_trt.optimizer import OptimizeContext, optimize
from helium_trt.optimizer.known_prompts import known_prompt
from helium_trt.optimizer.plan_values import RowValues
from helium_trt.plan.chat import CHATML, unmark
from helium_trt.plan.prompt import is_chat_prompt, llm_prompt_template
from helium_trt.runtime.options import RunOptions
from helium_trt.runtime.planning import RuntimeCaches, prepare_run


def _counting_engine(model_dir: Path):
    """An engine stand-in whose chat format records the conversations rendered with row
    values in them (a row's prompt, not an operator's template)."""
    engine = _TokenizerOnlyEngine(model_dir)
    fmt = engine.tokenizer.chat_format
    rendered: list[str] = []

    def render(messages, add_generation_prompt):
        text = fmt.render(messages, add_generation_prompt)
        if "What is a" in text:
            rendered.append(text)
        return text

    engine.tokenizer.chat_format = replace(fmt, render=render)
    return engine, rendered


def _holding_other_results(engine, plan) -> tuple[RuntimeCaches, str]:
    """Caches of a server that ran the workflow on other rows (every lookup misses), and the
    model name the calls run on."""
    caches = RuntimeCaches()
    prepared = prepare_run(plan, ROWS, [engine], RunOptions(), caches)
    for op_id in ("a", "c"):
        llm = prepared.optimized.plan.by_id[op_id]
        caches.prompt_cache.store(llm.model, f"another row's prompt of {op_id}", llm.config,
                                  "its result")
    return caches, llm.model


def test_a_lookup_that_misses_renders_each_known_prompt_once(tiny_model_dir):
    engine, rendered = _counting_engine(Path(tiny_model_dir))
    plan = two_step_plan()
    caches, _ = _holding_other_results(engine, plan)
    rendered.clear()
    looked_up = prepare_run(plan, ROWS, [engine], RunOptions(), caches)
    assert caches.prompt_cache.stats().num_misses == len(ROWS)  # a's rows; c reads a
    assert len(rendered) == len(ROWS)  # a's two rows, once each
    rendered.clear()
    fresh = prepare_run(plan, ROWS, [engine], RunOptions(), RuntimeCaches())
    assert len(rendered) == len(ROWS)
    assert planned(looked_up) == planned(fresh)


def test_a_partial_hit_plans_the_other_rows_as_a_fresh_run_does(tiny_model_dir):
    engine, rendered = _counting_engine(Path(tiny_model_dir))
    plan = two_step_plan()
    caches, model = _holding_other_results(engine, plan)
    fmt = engine.tokenizer.chat_format
    llm = plan.by_id["a"]
    prompt = known_prompt(llm, True, llm_prompt_template(plan, llm, fmt),
                          RowValues(plan, ROWS[1], fmt), fmt)
    caches.prompt_cache.store(model, unmark(prompt), llm.config, "A credit is money in.")
    rendered.clear()
    prepared = prepare_run(plan, ROWS, [engine], RunOptions(), caches)
    assert len(rendered) == len(ROWS)
    assert "a#1" not in prepared.calls.specs  # answered by the cache
    fresh = prepare_run(plan, ROWS[:1], [engine], RunOptions(), RuntimeCaches())
    assert prepared.calls.specs["a#0"] == fresh.calls.specs["a#0"]
    assert prepared.calls.packed["a#0"] == fresh.calls.packed["a#0"]


def test_the_rule_records_every_rows_prompt_and_a_planner_checks_what_it_came_from():
    class Holding:
        def lookup(self, model, prompt_text, config):
            return None

        def may_hold(self, model, config):
            return True

    plan, recorded = two_step_plan(), {}
    optimize(plan, ctx=OptimizeContext(CHATML, Holding(), rendered_prompts=recorded))
    a, c = recorded["a"], recorded["c"]
    for i, row in enumerate(ROWS):
        values = RowValues(plan, row, CHATML)
        assert a.by_row[i] == known_prompt(plan.by_id["a"], True, a.template, values, CHATML)
        assert c.by_row[i] is None  # reads an LLM output
    llm = plan.by_id["a"]
    template = llm_prompt_template(plan, llm, CHATML)
    assert a.rows_for(llm, is_chat_prompt(plan, llm), template, CHATML) is a.by_row
    assert a.rows_for(replace(llm), True, template, CHATML) is None  # another operator
    assert a.rows_for(llm, True, template[:-1], CHATML) is None
