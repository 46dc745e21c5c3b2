"""User regexes run on RE2: refused at validation when RE2 cannot run them, linear-time matching."""

import time

import pytest

from helium_trt.errors import InvalidWorkflowError
from helium_trt.optimizer import OptimizeContext, optimize
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    FormatOp, InputOp, LlmOp, LoopOp, OutputOp, Ref, SwitchCase, SwitchOp,
)
from helium_trt.plan.validate import validate
from helium_trt.runtime.patterns import RE2
from helium_trt.runtime.values import choose_branch


def _switch_plan(pattern: str) -> Plan:
    return Plan((
        InputOp("q", column="q"), FormatOp("p", template=("Q: ", Ref("q"))),
        LlmOp("a", prompt="p"),
        SwitchOp("s", input="q", cases=(SwitchCase("ok", "a"), SwitchCase(pattern, "p"))),
        OutputOp("o", input="s"),
    ))


def _loop_plan(stop: str) -> Plan:
    return Plan((
        InputOp("q", column="q"),
        LoopOp("L", init="q", state="s", result="r", max_iterations=2, stop_regex=stop,
               body=(FormatOp("rp", template=("Improve ", Ref("s"))), LlmOp("r", prompt="rp"))),
        OutputOp("o", input="L"),
    ))


@pytest.mark.parametrize("pattern", [r"(a)\1", r"x(?=y)", r"(?<!x)y", "a" * 5000, "[unclosed"])
def test_a_pattern_re2_cannot_run_is_refused_naming_operator_and_field(pattern):
    with pytest.raises(InvalidWorkflowError) as info:
        validate(_switch_plan(pattern), patterns=RE2)
    assert (info.value.op_id, info.value.field) == ("s", "cases[1].value")
    with pytest.raises(InvalidWorkflowError) as info:
        optimize(_loop_plan(pattern), ctx=OptimizeContext(patterns=RE2))
    assert (info.value.op_id, info.value.field) == ("L", "stop_regex")


def test_supported_syntax_passes():
    for pattern in ("(?i)billing", "^APPROVED", r"\d+ items?$", "(?P<word>\\w+)"):
        validate(_switch_plan(pattern), patterns=RE2)


def test_catastrophic_backtracking_pattern_runs_in_linear_time():
    op = SwitchOp("s", input="q", cases=(SwitchCase("(a+)+$", "yes"),), default_target="no")
    start = time.perf_counter()
    assert choose_branch(op, "a" * 40 + "b") == "no"  # Python's re: hours
    assert choose_branch(op, "a" * 1_000_000 + "b") == "no"
    assert time.perf_counter() - start < 2.0  # generous: RE2 takes milliseconds here
    assert choose_branch(op, "aaaa") == "yes"


def test_an_unvalidated_pattern_is_never_matched():
    with pytest.raises(ValueError):
        RE2.search(r"(a)\1", "aa")
