"""fold_constants: constants and static formats inlined into templates."""

from plan_reference import evaluate

from helium_trt.optimizer import OptimizeContext
from helium_trt.optimizer.rules import FoldConstants
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    ConstantOp, FormatOp, InputOp, Item, LlmOp, MapOp, Message, OutputOp, Ref,
)

CTX = OptimizeContext()


def _plan():
    return Plan((
        InputOp("q", column="q"), InputOp("docs", column="docs"),
        ConstantOp("sys", text="You are a judge."),
        ConstantOp("tail", text=" Be brief."),
        FormatOp("rules", template=("Rules:", Ref("tail"))),  # static: folds to a constant
        FormatOp("p", template=(Ref("sys"), " ", Ref("rules"), " Q: ", Ref("q"))),
        FormatOp("chat", messages=(Message("system", (Ref("sys"),)),
                                   Message("user", ("Q: ", Ref("q"))))),
        MapOp("m", list_id="docs", template=(Ref("sys"), " doc: ", Item())),
        LlmOp("a", prompt="p"), LlmOp("b", prompt="chat", mode="chat"),
        OutputOp("o1", input="a", name="o1"), OutputOp("o2", input="b", name="o2"),
        OutputOp("o3", input="m", name="o3"),
    ), rows=({"q": "why?", "docs": ["d1", "d2"]},))


def test_constants_and_static_formats_are_inlined():
    after = FoldConstants().apply(_plan(), CTX).by_id
    assert after["rules"] == ConstantOp("rules", text="Rules: Be brief.")
    assert after["p"].template == ("You are a judge. Rules: Be brief. Q: ", Ref("q"))
    assert after["chat"].messages[0].template == ("You are a judge.",)
    assert after["chat"].messages[1].template == ("Q: ", Ref("q"))
    assert after["m"].template == ("You are a judge. doc: ", Item())
    # the constants themselves stay: dropping them is eliminate_dead_ops' job
    assert after["sys"] == ConstantOp("sys", text="You are a judge.")


def test_chat_formats_are_not_inlined_into_text():
    plan = Plan((InputOp("q"), FormatOp("c", messages=(Message("user", (Ref("q"),)),)),
                 FormatOp("t", template=("Transcript: ", Ref("c"))), OutputOp("o", input="t")))
    assert FoldConstants().apply(plan, CTX) is plan


def test_nothing_to_fold_returns_the_same_plan():
    plan = Plan((InputOp("q"), FormatOp("p", template=("x", Ref("q"))), OutputOp("o", input="p")))
    assert FoldConstants().apply(plan, CTX) is plan


def test_folding_keeps_outputs_and_prompts():
    before = _plan()
    after = FoldConstants().apply(before, CTX)
    assert evaluate(before) == evaluate(after)
