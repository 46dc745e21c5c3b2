"""All rules together on a plan using every operator kind: same outputs, fewer LLM calls."""

import pytest
from plan_reference import evaluate, fake_llm

from helium_trt.optimizer import RULE_NAMES, OptimizeContext, optimize
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    ConcatOp, ConstantOp, FormatOp, InputOp, Item, LlmOp, LoopOp, MapOp, Message, OutputOp,
    Ref, SwitchCase, SwitchOp, ToolCallOp,
)
from helium_trt.runtime.patterns import RE2

CTX = OptimizeContext(patterns=RE2)

ROWS = ({"q": "Is 7 prime?", "docs": ["d1", "d2"]}, {"q": "Is 9 prime?", "docs": ["d3"]})


def _plan():
    return Plan((
        InputOp("q", column="q"), InputOp("docs", column="docs"), InputOp("q_again", column="q"),
        ConstantOp("sys", text="You are exact."), ConstantOp("mode", text="careful"),
        FormatOp("p1", messages=(Message("system", (Ref("sys"),)), Message("user", (Ref("q"),)))),
        FormatOp("p2", messages=(Message("system", (Ref("sys"),)),
                                 Message("user", (Ref("q_again"),)))),
        LlmOp("a1", prompt="p1", mode="chat"), LlmOp("a2", prompt="p2", mode="chat"),
        MapOp("notes", list_id="docs", template=(Ref("sys"), " note: ", Item())),
        ConcatOp("joined", parts=("notes", "a1"), separator=" | "),
        FormatOp("fast_p", template=("Quick: ", Ref("joined"))), LlmOp("fast", prompt="fast_p"),
        FormatOp("slow_p", template=("Careful: ", Ref("joined"), Ref("a2"))),
        LlmOp("slow", prompt="slow_p"),
        SwitchOp("pick", input="mode", cases=(SwitchCase("^quick", "fast"),),
                 default_target="slow"),
        LoopOp("refine", init="pick", state="s", result="r", max_iterations=3,
               stop_regex="STOP", body=(FormatOp("rp", template=("Refine: ", Ref("s"))),
                                        LlmOp("r", prompt="rp"))),
        ToolCallOp("lookup", name="search", args=(("query", "q"),)),
        FormatOp("final", template=(Ref("refine"), " / ", Ref("lookup"))),
        LlmOp("unused", prompt="p1", mode="chat"),
        OutputOp("out", input="final", name="out"),
    ), rows=ROWS)


def _stops_after_first_refine(prompt):
    return "STOP" if prompt.startswith("Refine: ") else fake_llm(prompt)


@pytest.mark.parametrize("llm", [fake_llm, _stops_after_first_refine])
def test_every_rule_together_keeps_outputs(llm):
    plan = _plan()
    result = optimize(plan, ctx=CTX)
    (out_b, calls_b), (out_a, calls_a) = evaluate(plan, llm=llm), evaluate(result.plan, llm=llm)
    assert out_b == out_a
    assert calls_a < calls_b
    ids = set(result.plan.by_id)
    assert {"a2", "fast", "unused", "pick", "refine", "q_again"}.isdisjoint(ids)
    assert {"refine.0.r", "refine.2.next"} <= ids


def test_stop_regex_skips_later_iterations_after_unrolling():
    plan = _plan()
    after = optimize(plan, ctx=CTX).plan
    outputs, calls = evaluate(after, llm=_stops_after_first_refine)
    assert outputs == evaluate(plan, llm=_stops_after_first_refine)[0]
    assert calls == evaluate(after)[1] - 2 * len(ROWS)  # two refine iterations skipped per row


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_any_single_rule_disabled_keeps_outputs(rule):
    plan = _plan()
    after = optimize(plan, ctx=CTX, disabled=frozenset({rule})).plan
    assert evaluate(plan)[0] == evaluate(after)[0]
