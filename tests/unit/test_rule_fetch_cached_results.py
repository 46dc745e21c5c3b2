"""fetch_cached_results: full and partial hits against an in-memory prompt-result cache."""

from plan_reference import Evaluator, evaluate, fake_llm

from helium_trt.optimizer import OptimizeContext, PromptResultCache, optimize
from helium_trt.optimizer.rules import FetchCachedResults
from helium_trt.plan.chat import CHATML
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    CacheFetchOp, ConstantOp, FormatOp, GenerationConfig, InputOp, LlmOp, Message, OutputOp, Ref,
)


class DictPromptCache:
    """A real, in-memory PromptResultCache: results recorded from earlier runs."""

    def __init__(self):
        self.entries: dict = {}
        self.lookups = 0

    def record(self, model, prompt_text, config, result):
        self.entries[(model, prompt_text, config)] = result

    def lookup(self, model, prompt_text, config):
        self.lookups += 1
        return self.entries.get((model, prompt_text, config))

    def may_hold(self, model, config):
        return any(m == model and c == config for m, _, c in self.entries)


ROWS = ({"q": "What is 2+2?"}, {"q": "What is 3+3?"}, {"q": "What is 4+4?"})


def _plan(config=GenerationConfig(max_tokens=16), rows=ROWS):
    return Plan((
        InputOp("q", column="q"), ConstantOp("sys", text="You are a calculator."),
        FormatOp("p", messages=(Message("system", (Ref("sys"),)), Message("user", (Ref("q"),)))),
        LlmOp("a", prompt="p", model="m", config=config, mode="chat"),
        FormatOp("p2", template=("Check: ", Ref("a"))),
        LlmOp("b", prompt="p2", model="m", config=config),
        OutputOp("out", input="b", name="out"),
    ), rows=rows)


def _warm(cache, plan, rows):
    """Run rows through the reference evaluator and record every call's result."""
    for row in rows:
        ev = Evaluator(plan, row)
        ev.get("a")
        cache.record("m", ev.llm_prompts[0], plan.by_id["a"].config, fake_llm(ev.llm_prompts[0]))


def test_cache_satisfies_the_protocol():
    assert isinstance(DictPromptCache(), PromptResultCache)


def test_partial_hit_splits_the_batch():
    plan, cache = _plan(), DictPromptCache()
    _warm(cache, plan, [ROWS[0], ROWS[2]])
    after = FetchCachedResults().apply(plan, OptimizeContext(CHATML, cache))
    fetch = after.by_id["a"]
    assert isinstance(fetch, CacheFetchOp)
    assert [i for i, _ in fetch.hits] == [0, 2]
    assert fetch.fallback == plan.by_id["a"]
    assert isinstance(after.by_id["b"], LlmOp)  # its prompt depends on an LLM output


def test_full_hit_has_no_fallback_and_prompt_ops_become_dead():
    plan, cache = _plan(), DictPromptCache()
    _warm(cache, plan, ROWS)
    result = optimize(plan, ctx=OptimizeContext(CHATML, cache))
    fetch = result.plan.by_id["a"]
    assert isinstance(fetch, CacheFetchOp) and fetch.fallback is None
    assert "p" not in result.plan.by_id and "sys" not in result.plan.by_id


def test_nondeterministic_calls_are_never_looked_up():
    config = GenerationConfig(max_tokens=16, temperature=0.7)
    plan, cache = _plan(config), DictPromptCache()
    _warm(cache, plan, ROWS)
    assert FetchCachedResults().apply(plan, OptimizeContext(CHATML, cache)) is plan
    assert cache.lookups == 0


def test_no_cache_or_no_rows_is_a_no_op():
    plan = _plan()
    assert FetchCachedResults().apply(plan, OptimizeContext()) is plan
    empty = _plan(rows=())
    assert FetchCachedResults().apply(empty, OptimizeContext(CHATML, DictPromptCache())) is empty


def test_fetch_keeps_outputs_and_saves_calls():
    plan, cache = _plan(), DictPromptCache()
    _warm(cache, plan, ROWS[:2])
    after = optimize(plan, ctx=OptimizeContext(CHATML, cache)).plan
    (out_b, calls_b), (out_a, calls_a) = evaluate(plan), evaluate(after)
    assert out_b == out_a
    assert (calls_b, calls_a) == (6, 4)
