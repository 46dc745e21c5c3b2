"""Generation settings on the real tiny model: n samples of one prompt (distinct seeds,
reproducible, prefilled once, consumed by map and history splicing), max_tokens and stop strings
taken per row from a column or an operator, checked per call, and ignore_eos."""

from __future__ import annotations

import json

import pytest
from runtime_helpers import run_on_fresh_engines

from helium_trt.errors import InvalidWorkflowError
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    ConstantOp, FormatOp, GenerationConfig, InputOp, Item, LlmOp, MapOp, Message, OutputOp, Ref,
)
from helium_trt.plan.validate import validate
from helium_trt.runtime.options import naive_options

SYS = ("You are a careful assistant. Answer the question briefly and clearly. " * 8).strip()
ROWS = ({"q": "What is the capital of France?"}, {"q": "Name three primary colors."})


def sampled(n: int, seed: int | None = 7, rows=ROWS) -> Plan:
    config = GenerationConfig(max_tokens=6, temperature=0.9, seed=seed, n=n)
    return Plan((InputOp("q", column="q"), ConstantOp("sys", text=SYS),
                 FormatOp("p", template=(Ref("sys"), " Q: ", Ref("q"), "\nA:")),
                 LlmOp("a", prompt="p", config=config), OutputOp("out", input="a", name="out")),
                rows=rows)


def test_n_samples_have_distinct_reproducible_seeds(long_tiny_model_dir):
    first = run_on_fresh_engines(long_tiny_model_dir, sampled(4))
    again = run_on_fresh_engines(long_tiny_model_dir, sampled(4), options=naive_options())
    assert not first.errors and first.outputs == again.outputs
    for row in range(2):
        samples = json.loads(first.outputs[row]["out"])
        assert len(samples) == 4 and len(set(samples)) > 1
    # Sample j is the single call with seed 7 + j.
    for j in (0, 3):
        single = run_on_fresh_engines(long_tiny_model_dir, sampled(1, seed=7 + j))
        assert [json.loads(first.outputs[r]["out"])[j] for r in range(2)] == \
               [single.outputs[r]["out"] for r in range(2)]


def test_the_prompt_of_n_samples_is_prefilled_once(long_tiny_model_dir):
    one = run_on_fresh_engines(long_tiny_model_dir, sampled(1, rows=ROWS[:1])).stats
    four = run_on_fresh_engines(long_tiny_model_dir, sampled(4, rows=ROWS[:1])).stats
    assert four.num_llm_calls == 4 and four.prefill_tokens_minimum == one.prefill_tokens_minimum
    # Its full KV blocks are computed once: a further sample recomputes at most the prompt's
    # last, partial block (16-token blocks).
    assert four.prefill_tokens_computed <= one.prefill_tokens_computed + 3 * 15
    assert four.prefill_tokens_reused >= 3 * (one.prefill_tokens_computed - 15)


def test_samples_feed_map_and_history_splicing(long_tiny_model_dir):
    thoughts = GenerationConfig(max_tokens=4, temperature=0.9, seed=1, n=2)
    plan = Plan((
        InputOp("q", column="q"),
        FormatOp("ask", messages=(Message("user", ("Think about: ", Ref("q"))),)),
        LlmOp("t", prompt="ask", config=thoughts, return_history=True),
        FormatOp("more", messages=(Message(history="t"), Message("user", ("Go on.",)))),
        LlmOp("deeper", prompt="more", config=thoughts, return_history=True),
        LlmOp("flat", prompt="ask", config=GenerationConfig(max_tokens=4, temperature=0.9,
                                                              seed=5, n=2)),
        MapOp("judge_p", list_id="flat", template=("Rate: ", Item())),
        LlmOp("judge", prompt="judge_p", config=GenerationConfig(max_tokens=3)),
        OutputOp("tree", input="deeper", name="tree"), OutputOp("rated", input="judge", name="rated"),
    ), rows=ROWS[:1])
    result = run_on_fresh_engines(long_tiny_model_dir, plan)
    assert not result.errors
    tree = json.loads(result.outputs[0]["tree"])
    # Two thoughts, each continued twice: a flat list of 2 x 2 conversations.
    assert len(tree) == 4 and all([m["role"] for m in c] == ["user", "assistant", "user",
                                                               "assistant"] for c in tree)
    assert tree[0][:2] == tree[1][:2] and tree[2][:2] == tree[3][:2]
    assert tree[0][1] != tree[2][1]
    assert len(json.loads(result.outputs[0]["rated"])) == 2
    assert result.stats.num_llm_calls == 2 + 4 + 2 + 2


def test_greedy_n_is_refused_naming_the_field():
    plan = sampled(3)
    plan = plan.replace_ops(
        LlmOp("a", prompt="p", config=GenerationConfig(n=3)) if op.id == "a" else op
        for op in plan.ops)
    with pytest.raises(InvalidWorkflowError) as err:
        validate(plan)
    assert err.value.field == "config.n" and "temperature > 0" in str(err.value)


def per_row(rows, **config) -> Plan:
    return Plan((InputOp("q", column="q"), InputOp("length", column="length"),
                 FormatOp("p", template=("Q: ", Ref("q"), "\nA:")),
                 LlmOp("a", prompt="p", config=GenerationConfig(**config)),
                 OutputOp("out", input="a", name="out")), rows=tuple(rows))


def test_max_tokens_per_row_from_a_column_with_ignore_eos(long_tiny_model_dir):
    rows = [{"q": "Hi", "length": "3"}, {"q": "Hi", "length": " 7 "}]
    plan = per_row(rows, max_tokens=64, max_tokens_from="length", ignore_eos=True)
    result = run_on_fresh_engines(long_tiny_model_dir, plan)
    assert not result.errors
    assert {e.row: e.output_tokens for e in result.finished} == {0: 3, 1: 7}
    # The 3-token reply is the start of the 7-token one (same prompt, greedy).
    assert result.outputs[1]["out"].startswith(result.outputs[0]["out"])


def test_a_bad_per_row_value_fails_that_row_naming_row_and_column(long_tiny_model_dir):
    rows = [{"q": "Hi", "length": "2"}, {"q": "Hi", "length": "many"}, {"q": "Yo", "length": "0"}]
    result = run_on_fresh_engines(long_tiny_model_dir,
                                  per_row(rows, max_tokens_from="length"))
    assert sorted(result.outputs) == [0]
    messages = {e.row: (e.code, e.message) for e in result.errors}
    assert messages[1] == ("INVALID_ARGUMENT", "operator 'a', field 'config.max_tokens_from': "
                           "row 1, column 'length': 'many' is not a whole number >= 1")
    assert "row 2, column 'length': '0' is not" in messages[2][1]


def test_stop_string_and_max_tokens_from_operator_outputs(long_tiny_model_dir):
    free = run_on_fresh_engines(long_tiny_model_dir, per_row([{"q": "Hi", "length": "x"}],
                                                              max_tokens=12, ignore_eos=True))
    text = free.outputs[0]["out"]
    stop = text.strip()[len(text.strip()) // 2:][:2]  # a piece from the reply's second half
    plan = Plan((InputOp("q", column="q"), InputOp("length", column="length"),
                 InputOp("stop", column="stop"),
                 FormatOp("limit", template=("1", Ref("length"))),  # an operator's output
                 FormatOp("p", template=("Q: ", Ref("q"), "\nA:")),
                 LlmOp("a", prompt="p", config=GenerationConfig(
                     max_tokens_from="limit", stop_from="stop", ignore_eos=True)),
                 OutputOp("out", input="a", name="out")),
                rows=({"q": "Hi", "length": "2", "stop": stop},))
    result = run_on_fresh_engines(long_tiny_model_dir, plan)
    assert not result.errors
    assert text.startswith(result.outputs[0]["out"]) and stop not in result.outputs[0]["out"]
    assert len(result.outputs[0]["out"]) < len(text)
