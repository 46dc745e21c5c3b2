"""Planning computes the values every row shares once (optimizer.plan_values
.row_independent_values) and marks each text as data once per run (plan.chat.mark_memoized):
nothing that reads a row is shared, and every row's values and prompts are what computing them
afresh gives."""

from __future__ import annotations

from helium_trt.optimizer.known_prompts import known_prompt
from helium_trt.optimizer.plan_values import RowValues, row_independent_values
from helium_trt.plan.chat import CHATML, mark_conversation
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    ConcatOp, ConstantOp, FormatOp, InputOp, LlmOp, Message, OutputOp, Ref,
)
from helium_trt.plan.prompt import llm_prompt_template

ROWS = ({"q": "Is <|im_end|> a token?", "tone": "dry"}, {"q": "And 2 + 2?", "tone": "warm"})


def plan() -> Plan:
    return Plan((
        InputOp("q", column="q"), InputOp("tone", column="tone"),
        ConstantOp("role", text="You check arithmetic."),
        ConstantOp("rules", text="Answer in one line."),
        FormatOp("sys", template=(Ref("role"), " ", Ref("rules"))),  # constants only
        ConcatOp("both", parts=("role", "rules"), separator="\n"),  # constants only
        FormatOp("styled", template=(Ref("sys"), " Tone: ", Ref("tone"))),  # reads a row
        FormatOp("p", messages=(Message("system", (Ref("styled"),)),
                                Message("user", (Ref("both"), "\n", Ref("q"))))),
        LlmOp("a", prompt="p", mode="chat"), OutputOp("o", input="a")), rows=ROWS)


def test_only_values_that_read_no_row_are_shared():
    p = plan()
    shared = row_independent_values(p, CHATML)
    assert shared == {"role": "You check arithmetic.", "rules": "Answer in one line.",
                      "sys": "You check arithmetic. Answer in one line.",
                      "both": "You check arithmetic.\nAnswer in one line."}
    for row in ROWS:
        seeded, fresh = RowValues(p, row, CHATML, shared), RowValues(p, row, CHATML)
        assert [seeded.get(op.id) for op in p.ops] == [fresh.get(op.id) for op in p.ops]
    assert RowValues(p, ROWS[0], CHATML, shared).get("sys") is shared["sys"]


def test_prompts_marked_through_one_memo_equal_prompts_marked_afresh():
    p = plan()
    llm = p.by_id["a"]
    template = llm_prompt_template(p, llm, CHATML)
    shared, marks = row_independent_values(p, CHATML), {}
    for row in ROWS + ROWS:
        seeded = known_prompt(llm, True, template, RowValues(p, row, CHATML, shared), CHATML,
                              marks=marks)
        assert seeded == known_prompt(llm, True, template, RowValues(p, row, CHATML), CHATML)
    # The row's control-token string stays data through the memo.
    assert any("\ufdd0<|im_end|>\ufdd1" in marked for marked in marks.values())
    conversation = [{"role": "user", "content": ROWS[0]["q"]}]
    assert mark_conversation(conversation, CHATML, marks) == mark_conversation(conversation,
                                                                               CHATML)


def test_rows_sharing_evaluation_orders_compute_what_fresh_rows_compute():
    p = plan()
    shared, orders = row_independent_values(p, CHATML), {}
    ids = [op.id for op in p.ops]
    for row, asked in zip(ROWS + ROWS, (ids, ids[::-1], ["p", "styled"] + ids, ["a"] + ids)):
        values, fresh = RowValues(p, row, CHATML, shared, orders), RowValues(p, row, CHATML)
        assert [values.get(i) for i in asked] == [fresh.get(i) for i in asked]
    assert set(orders) == set(ids) - set(shared)
    assert "q" in orders["p"] and "role" not in orders["p"]  # shared values are never walked
