"""The optimizer driver: rule order, disabling by name, trace contents, re-validation."""

import pytest

from helium_trt.errors import InvalidWorkflowError, OptimizerError
from helium_trt.optimizer import RULE_NAMES, OptimizeContext, optimize
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import ConstantOp, FormatOp, InputOp, LlmOp, OutputOp, Ref


def _plan():
    return Plan((
        InputOp("q", column="q"), ConstantOp("sys", text="SYS."),
        FormatOp("p1", template=(Ref("sys"), " Q: ", Ref("q"))),
        FormatOp("p2", template=("SYS. Q: ", Ref("q"))),
        LlmOp("a", prompt="p1"), LlmOp("b", prompt="p2"),
        FormatOp("j", template=(Ref("a"), "|", Ref("b"))), LlmOp("judge", prompt="j"),
        OutputOp("out", input="judge", name="out"),
    ), rows=({"q": "x"},))


def test_rule_names_in_order():
    assert RULE_NAMES == ("unroll_loops", "fold_constants", "prune_switches",
                          "merge_identical_ops", "eliminate_dead_ops", "fetch_cached_results")


def test_trace_records_what_each_rule_changed():
    result = optimize(_plan())
    by_name = {}
    for t in result.trace:
        by_name.setdefault(t.name, t)
    assert by_name["fold_constants"].changed == ("p1",)
    assert set(by_name["merge_identical_ops"].removed) == {"p2", "b"}
    assert by_name["merge_identical_ops"].changed == ("j",)
    assert by_name["eliminate_dead_ops"].removed == ("sys",)
    assert not by_name["unroll_loops"].did_change
    assert all(t.elapsed_ms >= 0 for t in result.trace)
    assert [op.id for op in result.plan.ops] == ["q", "p1", "a", "j", "judge", "out"]
    assert result.input_plan == _plan()


def test_disabled_rules_are_skipped_and_marked():
    result = optimize(_plan(), disabled=frozenset({"merge_identical_ops"}))
    assert {"a", "b"} <= set(result.plan.by_id)
    skipped = [t for t in result.trace if t.disabled]
    assert [t.name for t in skipped] == ["merge_identical_ops"]


def test_unknown_rule_name_is_rejected():
    with pytest.raises(InvalidWorkflowError, match="unknown optimizer rule"):
        optimize(_plan(), disabled=frozenset({"no_such_rule"}))


def test_input_plan_is_validated_with_its_rows():
    bad = Plan(_plan().ops, rows=({"other": "x"},))
    with pytest.raises(InvalidWorkflowError) as exc:
        optimize(bad)
    assert exc.value.op_id == "q"


class _BreaksPlan:
    """A rule that leaves a dangling reference (to prove the driver re-validates)."""

    name = "break_plan"

    def apply(self, plan, ctx):
        return plan.replace_ops(op for op in plan.ops if op.id != "a")


def test_a_rule_producing_an_invalid_plan_is_reported_by_name():
    with pytest.raises(OptimizerError, match="break_plan"):
        optimize(_plan(), rules=(_BreaksPlan(),), ctx=OptimizeContext())


def test_rules_never_mutate_the_input_plan():
    plan = _plan()
    snapshot = plan.ops
    optimize(plan)
    assert plan.ops == snapshot


def test_every_rule_is_named_after_its_module_and_documents_an_example():
    from helium_trt.optimizer import RULES

    for rule in RULES:
        assert type(rule).__module__.rsplit(".", 1)[1] == rule.name
        assert "Example" in type(rule).__doc__


def test_request_switches_map_to_rule_names():
    from helium_trt.api.convert import disabled_rules
    from helium_trt.api.helium.v1 import service_pb2

    opts = service_pb2.Optimizations(disable_prompt_cache=True, disable_prune_switches=True,
                                     disable_proactive_warming=True)
    assert disabled_rules(opts) == {"fetch_cached_results", "prune_switches"}
    assert disabled_rules(service_pb2.Optimizations()) == frozenset()
    every = service_pb2.Optimizations(
        disable_eliminate_dead_ops=True, disable_merge_identical_ops=True,
        disable_fold_constants=True, disable_prune_switches=True, disable_prompt_cache=True)
    assert disabled_rules(every) <= set(RULE_NAMES)
    assert len(disabled_rules(every)) == 5
