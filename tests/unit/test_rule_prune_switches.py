"""prune_switches: switches on plan-time-known input replaced by the chosen target."""

from plan_reference import evaluate

from helium_trt.optimizer import OptimizeContext
from helium_trt.optimizer.rules import PruneSwitches
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    ConstantOp, FormatOp, InputOp, LlmOp, OutputOp, Ref, SwitchCase, SwitchOp,
)
from helium_trt.runtime.patterns import RE2

CTX = OptimizeContext(patterns=RE2)


def _plan(mode_text, match="regex", input_op=None):
    mode = input_op or ConstantOp("mode", text=mode_text)
    return Plan((
        InputOp("q", column="q"), mode,
        FormatOp("pb", template=("Briefly: ", Ref("q"))), LlmOp("brief", prompt="pb"),
        FormatOp("pf", template=("In full: ", Ref("q"))), LlmOp("full", prompt="pf"),
        SwitchOp("s", input="mode", match=match,
                 cases=(SwitchCase("short" if match == "choice" else "^short", "brief"),),
                 default_target="full"),
        FormatOp("wrap", template=("Answer: ", Ref("s"))),
        OutputOp("out", input="wrap", name="out"),
    ), rows=({"q": "why is the sky blue?"},))


def test_constant_input_picks_the_matching_case_and_renames_consumers():
    after = PruneSwitches().apply(_plan("short please"), CTX)
    assert "s" not in after.by_id
    assert after.by_id["wrap"].template == ("Answer: ", Ref("brief"))


def test_no_match_takes_the_default_target():
    after = PruneSwitches().apply(_plan("long"), CTX)
    assert after.by_id["wrap"].template == ("Answer: ", Ref("full"))


def test_choice_match_ignores_case_and_surrounding_space():
    after = PruneSwitches().apply(_plan("  SHORT ", match="choice"), CTX)
    assert after.by_id["wrap"].template == ("Answer: ", Ref("brief"))


def test_static_format_input_is_known_at_plan_time():
    fmt = FormatOp("mode", template=("short",))
    after = PruneSwitches().apply(_plan("", input_op=fmt), CTX)
    assert "s" not in after.by_id


def test_row_dependent_input_is_left_alone():
    plan = _plan("", input_op=InputOp("mode", column="mode"))
    assert PruneSwitches().apply(plan, CTX) is plan


def test_pruned_plan_computes_the_same_outputs():
    before = _plan("short")
    after = PruneSwitches().apply(before, CTX)
    assert evaluate(before) == evaluate(after)


def test_without_a_regex_engine_a_regex_switch_is_left_for_the_runtime():
    plan = _plan("short please")
    assert PruneSwitches().apply(plan, OptimizeContext()) is plan
    after = PruneSwitches().apply(_plan("  SHORT ", match="choice"), OptimizeContext())
    assert "s" not in after.by_id  # choice switches need no regex engine
