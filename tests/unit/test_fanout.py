"""count_llm_calls: LLM calls a plan makes over its rows, list fan-out included."""

from helium_trt.plan.fanout import count_llm_calls
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    CacheFetchOp, ConcatOp, FormatOp, InputOp, Item, LlmOp, MapOp, OutputOp, Ref, SwitchCase,
    SwitchOp,
)

PLAN = Plan((
    InputOp("docs", column="docs"), InputOp("q", column="q"),
    MapOp("m", list_id="docs", template=("Summarize ", Item())), LlmOp("each", prompt="m"),
    FormatOp("f", template=("Q: ", Ref("q"))), LlmOp("ask", prompt="f"),
    ConcatOp("joined", parts=("each",), separator="\n"), LlmOp("reduce", prompt="joined"),
    OutputOp("o1", input="reduce"), OutputOp("o2", input="ask"),
))


def test_a_list_column_fans_out_through_map_and_llm():
    assert count_llm_calls(PLAN, [{"docs": ["a"] * 5000, "q": "x"}]) == 5000 + 1 + 1


def test_text_columns_make_one_call_per_operator_and_row():
    assert count_llm_calls(PLAN, [{"docs": "a", "q": "x"}] * 3) == 3 * 3


def test_a_format_over_a_list_runs_per_element():
    assert count_llm_calls(PLAN, [{"docs": "a", "q": ["x", "y", "z"]}]) == 1 + 3 + 1


def test_rows_answered_from_the_result_cache_make_no_call():
    plan = Plan((InputOp("q", column="q"), FormatOp("f", template=(Ref("q"),)),
                 CacheFetchOp("a", hits=((0, "cached"),), fallback=LlmOp("a", prompt="f")),
                 OutputOp("o", input="a")))
    assert count_llm_calls(plan, [{"q": "x"}, {"q": ["y", "z"]}]) == 0 + 2


def test_every_switch_branch_counts():
    plan = Plan((InputOp("q", column="q"), LlmOp("a", prompt="q"), LlmOp("b", prompt="q"),
                 SwitchOp("s", input="q", cases=(SwitchCase("x", "a"),), default_target="b"),
                 LlmOp("c", prompt="s"), OutputOp("o", input="c")))
    assert count_llm_calls(plan, [{"q": ["x", "y"]}]) == 2 + 2 + 2
