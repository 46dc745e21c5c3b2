"""GenerationConfig's n, ignore_eos and per-call fields in the plan: validation naming the
field, references renamed and counted as inputs, call counting, cache keys, sample configs."""

from __future__ import annotations

import pytest

from helium_trt.cache.prompt_cache import config_key
from helium_trt.errors import InvalidWorkflowError
from helium_trt.optimizer import optimize
from helium_trt.plan.fanout import count_llm_calls
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    FormatOp, GenerationConfig, InputOp, LlmOp, Message, OutputOp, Ref, with_inputs_renamed,
)
from helium_trt.plan.validate import validate
from helium_trt.runtime.generation import resolve_config, sample_configs


def plan(config: GenerationConfig, extra=()) -> Plan:
    return Plan((InputOp("q", column="q"), InputOp("len", column="len"), *extra,
                 FormatOp("p", template=("Q: ", Ref("q"))),
                 LlmOp("a", prompt="p", config=config), OutputOp("o", input="a")),
                rows=({"q": "x", "len": "3"},))


@pytest.mark.parametrize("config, field, says", [
    (GenerationConfig(n=0), "config.n", "n must be >= 1"),
    (GenerationConfig(n=2), "config.n", "greedy decoding gives n identical outputs"),
    (GenerationConfig(max_tokens_from="ghost"), "config.max_tokens_from", "unknown operator"),
    (GenerationConfig(stop_from="chat"), "config.stop_from", "yields a conversation"),
])
def test_bad_settings_name_the_field(config, field, says):
    chat = FormatOp("chat", messages=(Message("user", (Ref("q"),)),))
    with pytest.raises(InvalidWorkflowError) as err:
        validate(plan(config, (chat,)))
    assert err.value.op_id == "a" and err.value.field == field and says in str(err.value)


def test_config_references_are_inputs_and_are_renamed():
    llm = LlmOp("a", prompt="p", config=GenerationConfig(max_tokens_from="len", stop_from="q"))
    assert llm.inputs == ("p", "len", "q")
    renamed = with_inputs_renamed(llm, {"len": "L.0.len"})
    assert renamed.config.max_tokens_from == "L.0.len" and renamed.config.stop_from == "q"
    # The optimizer keeps the column an LLM op reads only through its config.
    optimized = optimize(plan(GenerationConfig(max_tokens_from="len"))).plan
    assert "len" in optimized.by_id


def test_n_multiplies_the_counted_calls():
    sampled = plan(GenerationConfig(temperature=0.7, n=5))
    assert count_llm_calls(sampled, sampled.rows * 3) == 15


def test_samples_fan_the_next_level_out_like_a_list():
    config = GenerationConfig(temperature=0.7, n=3)
    tree = Plan((InputOp("q", column="q"),
                 FormatOp("p0", messages=(Message("user", (Ref("q"),)),)),
                 LlmOp("l0", prompt="p0", config=config, return_history=True),
                 FormatOp("p1", messages=(Message(history="l0"), Message("user", ("More.",)))),
                 LlmOp("l1", prompt="p1", config=config, return_history=True),
                 FormatOp("p2", messages=(Message(history="l1"), Message("user", ("End.",)))),
                 LlmOp("l2", prompt="p2"), OutputOp("o", input="l2")))
    assert count_llm_calls(tree, [{"q": "x"}]) == 3 + 9 + 9
    assert count_llm_calls(tree, [{"q": ["x", "y"]}, {"q": "z"}]) == (6 + 18 + 18) + 21


def test_cache_keys_tell_every_setting_apart():
    base = GenerationConfig()
    keys = {config_key(c) for c in (base, GenerationConfig(ignore_eos=True),
                                     GenerationConfig(max_tokens_from="len"),
                                     GenerationConfig(temperature=1.0, seed=1, n=2),
                                     GenerationConfig(temperature=1.0, seed=1))}
    assert len(keys) == 5


def test_sample_configs_count_seeds_up_from_the_seed():
    samples = sample_configs(GenerationConfig(temperature=1.0, seed=10, n=3))
    assert [c.seed for c in samples] == [10, 11, 12] and {c.n for c in samples} == {1}
    assert [c.seed for c in sample_configs(GenerationConfig(temperature=1.0, n=2))] == [None] * 2
    assert sample_configs(base := GenerationConfig()) == [base]


def test_resolve_fills_values_and_clears_the_references():
    llm = LlmOp("a", prompt="p", config=GenerationConfig(max_tokens_from="len", stop_from="s",
                                                         stop=("END",)))
    sources = {"len": InputOp("len", column="length"), "s": FormatOp("s")}
    config = resolve_config(llm, {"len": "12", "s": "\n\n"}, sources, row=4)
    assert config == GenerationConfig(max_tokens=12, stop=("END", "\n\n"))
    with pytest.raises(InvalidWorkflowError, match="row 4, the output of 's': the stop string"):
        resolve_config(llm, {"len": "1", "s": ""}, sources, row=4)
    with pytest.raises(InvalidWorkflowError, match="row 4, column 'length': got a list"):
        resolve_config(llm, {"len": ["1"], "s": "x"}, sources, row=4)
