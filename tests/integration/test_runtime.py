"""Runtime behaviour on the real tiny model: failure isolation, switch laziness, history,
every optimization switch, two engines, the RunEvent converter."""

import asyncio
import json
from dataclasses import replace

from runtime_helpers import collect, make_engine, run_on_fresh_engines, workflow

from helium_trt.api.events import event_to_proto
from helium_trt.runtime.options import RunOptions, naive_options
from helium_trt.runtime.planning import RuntimeCaches

LONG_SYS = ("You are a careful assistant. Answer the question briefly and clearly. " * 6).strip()
CFG = {"maxTokens": 6}


def fan_out(num_experts=3, rows=({"q": "What is the capital of France?"},
                                 {"q": "Name three primary colors."})):
    ops = [{"id": "q", "input": {}}, {"id": "sys", "constant": {"text": LONG_SYS}}]
    for i in range(num_experts):
        ops += [{"id": f"p{i}", "format": {"template": f"{{sys}} Expert {i}. Q: {{q}}\nA:"}},
                {"id": f"e{i}", "llm": {"prompt": f"p{i}", "config": CFG}}]
    ops += [{"id": "jp", "format": {"template": "Combine: " + " | ".join(
                f"{{e{i}}}" for i in range(num_experts)) + "\nFinal:"}},
            {"id": "judge", "llm": {"prompt": "jp", "config": CFG}},
            {"id": "out", "output": {"input": "judge", "name": "answer"}}]
    return workflow(ops, rows)


def switch_plan():
    ops = [
        {"id": "kind", "input": {}}, {"id": "q", "input": {}},
        {"id": "ask_p", "format": {"template": "Q: {q}\nA:"}},
        {"id": "ask", "llm": {"prompt": "ask_p", "config": CFG}},
        {"id": "other_p", "format": {"template": "Other: {q}\nA:"}},
        {"id": "other", "llm": {"prompt": "other_p", "config": CFG}},
        {"id": "tool", "toolCall": {"name": "search", "args": {"query": "q"}}},
        {"id": "pick", "switchOp": {"input": "kind", "match": "MATCH_KIND_CHOICE",
                                    "cases": [{"value": "llm", "target": "ask"},
                                              {"value": "tool", "target": "tool"}],
                                    "defaultTarget": "other"}},
        {"id": "out", "output": {"input": "pick"}},
    ]
    rows = [{"kind": "llm", "q": "What is the capital of France?"},
            {"kind": "tool", "q": "colors"}, {"kind": "llm", "q": "Name three primary colors."}]
    return workflow(ops, rows)


def test_failed_row_is_reported_and_other_rows_finish(long_tiny_model_dir):
    result = run_on_fresh_engines(long_tiny_model_dir, switch_plan())
    assert sorted(result.outputs) == [0, 2]
    [error] = result.errors
    assert error.row == 1 and error.op_id == "tool" and "tool callback" in error.message
    assert result.stats.num_rows_failed == 1


def test_switch_computes_only_the_chosen_branch(long_tiny_model_dir):
    result = run_on_fresh_engines(long_tiny_model_dir, switch_plan())
    started = {(e.op_id, e.row) for e in result.started}
    assert ("ask", 0) in started and ("ask", 2) in started
    assert not any(op == "other" for op, _ in started)
    assert not any(op == "ask" and row == 1 for op, row in started)
    assert result.stats.num_llm_calls == 2


def test_tool_callback_answers_tool_calls(long_tiny_model_dir):
    async def tools(call):
        return f"searched {call.args['query']}"

    result = run_on_fresh_engines(long_tiny_model_dir, switch_plan(), tools=tools)
    assert not result.errors and result.outputs[1] == {"out": "searched colors"}


def test_chat_with_return_history_outputs_the_conversation(long_tiny_model_dir):
    plan = workflow([
        {"id": "q", "input": {}},
        {"id": "p", "format": {"messages": [{"role": "ROLE_USER", "template": "{q}"}]}},
        {"id": "a", "llm": {"prompt": "p", "returnHistory": True, "config": CFG}},
        {"id": "p2", "format": {"messages": [{"history": "a"},
                                             {"role": "ROLE_USER", "template": "Shorter."}]}},
        {"id": "b", "llm": {"prompt": "p2", "returnHistory": True, "config": CFG}},
        {"id": "out", "output": {"input": "b"}},
    ], [{"q": "Name three primary colors."}])
    fast = run_on_fresh_engines(long_tiny_model_dir, plan)
    naive = run_on_fresh_engines(long_tiny_model_dir, plan, options=naive_options())
    conversation = json.loads(fast.outputs[0]["out"])
    assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant"]
    assert conversation[0]["content"] == "Name three primary colors."
    assert fast.outputs == naive.outputs
    assert fast.stats.prefill_tokens_reused > 0  # round 2 reuses round 1's conversation


def test_list_valued_prompt_runs_once_per_element(long_tiny_model_dir):
    plan = workflow([
        {"id": "items", "input": {}},
        {"id": "p", "format": {"template": "Describe {items}:"}},
        {"id": "d", "llm": {"prompt": "p", "config": CFG}},
        {"id": "out", "output": {"input": "d"}},
    ], [{"items": ["red", "blue", "yellow"]}])
    result = run_on_fresh_engines(long_tiny_model_dir, plan)
    assert len(json.loads(result.outputs[0]["out"])) == 3
    assert result.stats.num_llm_calls == 3


def test_prompt_cache_switch(long_tiny_model_dir):
    plan = fan_out()

    async def go(options):
        engine, caches = make_engine(long_tiny_model_dir), RuntimeCaches()
        try:
            first = await collect(plan, [engine], options=options, caches=caches)
            second = await collect(plan, [engine], options=options, caches=caches)
        finally:
            await engine.close()
        return first, second

    first, second = asyncio.run(go(RunOptions()))
    assert second.outputs == first.outputs
    assert second.stats.num_llm_calls == 0 and second.stats.num_result_cache_hits > 0
    off = replace(RunOptions(), prompt_cache=False,
                  disabled_rules=frozenset({"fetch_cached_results"}))
    first, second = asyncio.run(go(off))
    assert second.stats.num_result_cache_hits == 0
    assert second.stats.num_llm_calls == first.stats.num_llm_calls == 8


def test_each_runtime_switch_is_honored_and_outputs_stay_the_same(long_tiny_model_dir):
    plan = fan_out()
    base = run_on_fresh_engines(long_tiny_model_dir, plan)
    # Shared prefixes are warmed by their first consumer (prefix leader), not a warm-up request.
    assert base.stats.warm_tokens_computed == 0
    for change in ({"proactive_warming": False}, {"cache_aware_scheduling": False},
                   {"retention_priorities": False}, {"kv_prefix_reuse": False},
                   {"disabled_rules": frozenset({"eliminate_dead_ops", "merge_identical_ops",
                                                 "fold_constants", "prune_switches"})}):
        result = run_on_fresh_engines(long_tiny_model_dir, plan,
                                      options=replace(RunOptions(), **change))
        assert result.outputs == base.outputs, change
        if "proactive_warming" in change:
            assert result.stats.prefill_tokens_computed >= base.stats.prefill_tokens_computed
        if "kv_prefix_reuse" in change:
            assert result.stats.prefill_tokens_reused == 0
            assert result.stats.warm_tokens_computed == 0


def test_two_engines_colocate_siblings_and_both_work(long_tiny_model_dir):
    other = ("Summarize the following text in one short sentence for a busy reader. " * 6).strip()
    ops = [{"id": "q", "input": {}}]
    for group, sys_text in (("a", LONG_SYS), ("b", other)):
        for i in range(3):
            ops += [{"id": f"{group}p{i}", "format": {"template": f"{sys_text} #{i} {{q}}"}},
                    {"id": f"{group}{i}", "llm": {"prompt": f"{group}p{i}", "config": CFG}},
                    {"id": f"{group}o{i}", "output": {"input": f"{group}{i}"}}]
    plan = workflow(ops, [{"q": "colors"}])

    async def go():
        engines = [make_engine(long_tiny_model_dir) for _ in range(2)]
        try:
            result = await collect(plan, engines, options=RunOptions(max_inflight=4))
            tokenizer = engines[0].tokenizer
            resident = [[e.num_resident_tokens(tokenizer.encode(t)) for t in (LONG_SYS, other)]
                        for e in engines]
            return result, resident
        finally:
            for e in engines:
                await e.close()

    result, resident = asyncio.run(go())
    assert not result.errors
    # Each group's prefix lives on exactly one engine, and the two groups on different ones.
    holders = [[w for w in range(2) if resident[w][g] >= 16] for g in range(2)]
    assert len(holders[0]) == 1 and len(holders[1]) == 1 and holders[0] != holders[1]
    single = run_on_fresh_engines(long_tiny_model_dir, plan)
    assert result.outputs == single.outputs


def test_events_convert_to_run_events(long_tiny_model_dir):
    result = run_on_fresh_engines(long_tiny_model_dir, fan_out(2),
                                  options=replace(RunOptions(), stream_tokens=True))
    kinds = [event_to_proto(e).WhichOneof("event") for e in result.events]
    assert kinds[-1] == "run_stats" and "token_delta" in kinds and "row_output" in kinds
    assert kinds.index("op_started") < kinds.index("op_finished")
