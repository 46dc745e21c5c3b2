"""Templated radix tree: structure, shared static prefixes, dependency edges."""

from helium_trt.api.convert import parse_template
from helium_trt.cache.trt import build_trt
from helium_trt.plan.chat import CHATML, chatml
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import ConstantOp, FormatOp, InputOp, LlmOp, Message, OutputOp, Ref

SYS = "You are a careful analyst on a panel of experts. " * 4


def _t(text):
    return parse_template(text, op_id="t", field="template")


def _panel(num_experts=3, fmt_text=False):
    ops = [InputOp("q", column="q"), ConstantOp("sys", text=SYS)]
    for i in range(num_experts):
        if fmt_text:
            ops.append(FormatOp(f"p{i}", template=_t("{sys}Role %d: {q}" % i)))
        else:
            ops.append(FormatOp(f"p{i}", messages=(
                Message("system", _t("{sys}Role %d." % i)), Message("user", (Ref("q"),)))))
        ops.append(LlmOp(f"e{i}", prompt=f"p{i}"))
    ops.append(FormatOp("jp", template=_t("Judge these answers: {e0} / {e1}")))
    ops.append(LlmOp("judge", prompt="jp"))
    ops.append(OutputOp("out", input="judge"))
    return Plan(tuple(ops))


def test_experts_share_the_static_system_prefix():
    tree = build_trt(_panel(), CHATML)
    shared = tree.shared_prefixes()
    assert shared[0].consumers == ("e0", "e1", "e2")
    assert shared[0].is_static
    assert shared[0].text == "<|im_start|>system\n" + SYS + "Role "
    assert all("judge" not in p.consumers for p in shared)


def test_static_prefix_stops_at_first_placeholder():
    tree = build_trt(_panel(fmt_text=True), CHATML)
    assert tree.static_prefix("e1") == SYS + "Role 1: "
    assert tree.static_prefix("judge") == "Judge these answers: "
    assert tree.templates["e1"] == (SYS + "Role 1: ", Ref("q"))


def test_templated_prefix_with_placeholder_is_shared_but_not_static():
    ops = [InputOp("ctx", column="ctx")]
    for i in range(2):
        ops.append(FormatOp(f"p{i}", template=_t("{ctx} Question %d" % i)))
        ops.append(LlmOp(f"e{i}", prompt=f"p{i}"))
        ops.append(OutputOp(f"o{i}", input=f"e{i}"))
    tree = build_trt(Plan(tuple(ops)), CHATML)
    assert tree.shared_prefixes() == []
    dynamic = tree.shared_prefixes(static_only=False)
    assert dynamic[0].text == "{ctx} Question "
    assert dynamic[0].consumers == ("e0", "e1") and not dynamic[0].is_static


def test_dependency_edges_skip_non_llm_operators():
    tree = build_trt(_panel(), CHATML)
    assert tree.dependencies["judge"] == ("e0", "e1")
    assert tree.dependencies["e2"] == ()


def test_default_system_prompt_is_part_of_the_template():
    fmt = chatml(default_system="Be brief.")
    ops = (InputOp("q", column="q"),
           FormatOp("p", messages=(Message("user", (Ref("q"),)),)),
           LlmOp("a", prompt="p"), OutputOp("o", input="a"))
    tree = build_trt(Plan(ops), fmt)
    assert tree.static_prefix("a") == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                                        "<|im_start|>user\n")


def test_insert_splits_edges_and_keeps_identical_prompts_on_one_leaf():
    from helium_trt.cache.trt import TemplatedRadixTree
    tree = TemplatedRadixTree()
    tree.insert("a", ("hello world",))
    tree.insert("b", ("hello there",))
    tree.insert("c", ("hello world",))
    (top,) = tree.root.children
    assert top.edge == ("hello ",)
    assert sorted(c.edge for c in top.children) == [("there",), ("world",)]
    world = next(c for c in top.children if c.edge == ("world",))
    assert world.leaves == ["a", "c"]
    assert [p.consumers for p in tree.shared_prefixes()] == [("a", "c"), ("a", "b", "c")]


def test_render_and_json_name_every_leaf():
    tree = build_trt(_panel(), CHATML)
    drawing = tree.render()
    for op in ("e0", "e1", "e2", "judge"):
        assert op in drawing
    data = tree.to_json()
    assert set(data["leaves"]) == {"e0", "e1", "e2", "judge"}
    assert data["dependencies"] == {"judge": ["e0", "e1"]}
