"""The templated radix tree sees through spliced conversations and maps (a fork tree shares its
heading, a map's instruction is every chunk call's static prefix), branches at word boundaries,
and explain shows prompts with newlines escaped once, per-element prefixes, and tokens."""

from __future__ import annotations

import json
from pathlib import Path

from helium_trt.cache.trt import build_trt
from helium_trt.plan.chat import CHATML
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    ConstantOp, FormatOp, GenerationConfig, Index, InputOp, Item, LlmOp, MapOp, Message,
    OutputOp, Ref,
)
from helium_trt.plan.prompt import (
    expanded_prompt_template, llm_prompt_template, prompt_templates,
)
from helium_trt.server.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HEADING = "You explore lines of thought one step at a time. " * 6
SAMPLES = GenerationConfig(max_tokens=8, temperature=0.8, seed=3, n=2)


def fork_tree(depth: int = 3) -> Plan:
    """A chat forked ``depth`` levels: each level continues every conversation of the last."""
    ops = [InputOp("q", column="q"), ConstantOp("sys", text=HEADING),
           FormatOp("l0_p", messages=(Message("system", (Ref("sys"),)),
                                      Message("user", ("Problem: ", Ref("q"))))),
           LlmOp("l0", prompt="l0_p", config=SAMPLES, return_history=True)]
    for level in range(1, depth):
        ops += [FormatOp(f"l{level}_p", messages=(Message(history=f"l{level - 1}"),
                                                  Message("user", ("Go on.",)))),
                LlmOp(f"l{level}", prompt=f"l{level}_p", config=SAMPLES, return_history=True)]
    ops.append(OutputOp("o", input=f"l{depth - 1}"))
    return Plan(tuple(ops))


def chunk_map() -> Plan:
    return Plan((InputOp("chunks", column="chunks"), InputOp("title", column="title"),
                 ConstantOp("how", text="Summarize this part in one sentence. " * 5),
                 MapOp("per_chunk", list_id="chunks",
                       template=(Ref("how"), "\nTitle: ", Ref("title"), "\nPart ", Index(), ": ",
                                 Item())),
                 LlmOp("s", prompt="per_chunk", mode="generate"), OutputOp("o", input="s")),
                rows=({"chunks": ["a", "b"], "title": "t"},))


def test_a_spliced_history_expands_into_its_messages_and_reply():
    plan = fork_tree(2)
    plain = llm_prompt_template(plan, plan.by_id["l1"], CHATML)
    expanded = expanded_prompt_template(plan, plan.by_id["l1"], CHATML)
    assert plain[:2] == ("<|im_start|>", Ref("l0"))  # the history opaque: no heading
    assert expanded == (
        f"<|im_start|>system\n{HEADING}<|im_end|>\n<|im_start|>user\nProblem: ", Ref("q"),
        "<|im_end|>\n<|im_start|>assistant\n", Ref("l0"),
        "<|im_end|>\n<|im_start|>user\nGo on.<|im_end|>\n<|im_start|>assistant\n")


def test_prompt_templates_are_both_templates_rendered_once_only_where_they_agree():
    calls = []

    def render(messages, add_generation_prompt):
        calls.append(len(messages))
        return CHATML.render(messages, add_generation_prompt)

    fmt = CHATML.__class__(render, "counting ChatML", CHATML.control_tokens)
    # l1 splices a history: its plain template renders three stand-ins, the expanded one once.
    for plan, op_id, num_renders in ((fork_tree(2), "l0", 1), (fork_tree(2), "l1", 4),
                                     (chunk_map(), "s", 0)):
        llm = plan.by_id[op_id]
        calls.clear()
        both = prompt_templates(plan, llm, fmt)
        assert len(calls) == num_renders
        assert both == (llm_prompt_template(plan, llm, fmt),
                        expanded_prompt_template(plan, llm, fmt))


def test_a_fork_tree_is_one_tree_under_its_heading():
    tree = build_trt(fork_tree(3), CHATML)
    (top,) = tree.root.children
    assert top.edge[0].startswith("<|im_start|>system\n" + HEADING[:20])
    shared = tree.shared_prefixes()
    assert shared[0].consumers == ("l0", "l1", "l2") and shared[0].text.endswith("Problem: ")
    # Each level's prompt continues the one before it.
    (l1,) = [p for p in tree.shared_prefixes(static_only=False) if p.consumers == ("l1", "l2")]
    assert l1.text.endswith("{l0}<|im_end|>\n<|im_start|>user\nGo on.<|im_end|>\n"
                            "<|im_start|>assistant\n")


def test_a_maps_element_expands_so_its_instruction_is_a_static_prefix():
    plan = chunk_map()
    assert llm_prompt_template(plan, plan.by_id["s"], CHATML) == (Ref("per_chunk"),)
    assert expanded_prompt_template(plan, plan.by_id["s"], CHATML) == (
        "Summarize this part in one sentence. " * 5 + "\nTitle: ", Ref("title"), "\nPart ",
        Index(), ": ", Ref("chunks"))
    tree = build_trt(plan, CHATML)
    assert tree.static_prefix("s") == "Summarize this part in one sentence. " * 5 + "\nTitle: "
    assert "{index}" in tree.render(width=400)


def test_branch_points_fall_on_word_boundaries():
    ops = [InputOp("q", column="q")]
    for i, role in enumerate(["a physician", "a professor", "a poet", "an engineer"]):
        ops += [FormatOp(f"p{i}", template=(f"Answer as {role}: ", Ref("q"))),
                LlmOp(f"e{i}", prompt=f"p{i}", mode="generate")]
    ops.append(OutputOp("o", input="e0"))
    shared = build_trt(Plan(tuple(ops)), CHATML).shared_prefixes()
    assert sorted((p.text, len(p.consumers)) for p in shared) == [
        ("Answer as ", 4), ("Answer as a ", 3)]  # not "Answer as a p" as well


def test_explain_map_reduce_lists_whole_word_prefixes_with_newlines_escaped_once(capsys):
    assert main(["explain", str(EXAMPLES / "map_reduce.yaml")]) == 0
    out = capsys.readouterr().out
    section = out.split("== shared static prefixes")[1].split("== planning time")[0]
    counts = sorted(int(line.split(", ")[1].split()[0]) for line in section.splitlines()
                    if "consumers:" in line)
    assert counts == [13, 14, 15]  # was 2, 2, 2, 3, 3, 13, 14, 15: one prefix per letter
    assert "\\\\n" not in out and "perspective: '" in section
    assert "(in characters: --model DIR counts them in its tokens)" in out


def test_explain_shows_per_element_prefixes_and_tokens_with_a_model(capsys, tiny_model_dir):
    path = str(EXAMPLES / "summarize_chunks.yaml")
    assert main(["explain", path, "--model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    section = out.split("== static prefixes of per-element calls")[1]
    assert "chunk_summary: one call per element of chunks" in section
    assert " tokens (" in section and "Summarize one part" in section
    assert main(["explain", path, "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["per_element_prefixes"]
    assert entry["op"] == "chunk_summary" and entry["lists"] == ["chunks"]
    assert entry["num_chars"] > 800


class _TokenizerOnlyEngine:
    """What planning reads of an engine: info, tokenizer, and an empty cache."""

    def __init__(self, model_dir: Path) -> None:
        from helium_trt.engine.base import EngineInfo
        from helium_trt.engine.tokenizer import HFTokenizer

        self.tokenizer = HFTokenizer.from_dir(model_dir)
        self.info = EngineInfo(model_dir.name, block_size=16, num_blocks=4096,
                               max_model_len=32768, vocab_size=0, eos_token_ids=())

    def num_resident_tokens(self, token_ids) -> int:
        return 0


def test_the_scheduler_warms_a_maps_instruction_and_a_forks_heading(tiny_model_dir):
    from helium_trt.runtime.options import RunOptions
    from helium_trt.runtime.planning import RuntimeCaches, prepare_run

    engine = _TokenizerOnlyEngine(Path(tiny_model_dir))
    plan = chunk_map()
    prepared = prepare_run(plan, plan.rows, [engine], RunOptions(), RuntimeCaches())
    instruction = engine.tokenizer.encode("Summarize this part in one sentence. " * 5)
    assert prepared.calls.specs["s#0"].static_len >= len(instruction) - 1
    forks = fork_tree(3)
    rows = ({"q": "What is 6 x 7?"}, {"q": "Name a prime."})
    prepared = prepare_run(forks, rows, [engine], RunOptions(), RuntimeCaches())
    heading = engine.tokenizer.encode(HEADING)
    assert all(spec.static_len >= len(heading) for spec in prepared.calls.specs.values())
    (warm,) = prepared.schedule.warm
    assert len(warm.consumers) == 6 and len(warm.tokens) >= len(heading)
