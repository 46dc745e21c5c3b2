"""`helium-trt explain` on every example, the example workloads' shapes, and bad input handling."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from plan_reference import evaluate

from helium_trt.api.convert import load_request_file, plan_from_proto, rows_from_proto
from helium_trt.optimizer import optimize
from helium_trt.server.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LLM_OPS = {"map_reduce": 15, "debate": 7, "reflection": 5, "iterative": 6, "parallel": 15,
           "trading": 88}
MIN_SHARED_PREFIX_CHARS = 800  # about 200 tokens of English


def _plan(name):
    req = load_request_file(EXAMPLES / f"{name}.yaml")
    return plan_from_proto(req.workflow, rows_from_proto(req.rows))


def _explain_json(capsys, *args):
    assert main(["explain", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", sorted(LLM_OPS))
def test_explain_text_on_every_example(name, capsys):
    assert main(["explain", str(EXAMPLES / f"{name}.yaml")]) == 0
    out = capsys.readouterr().out
    for section in ("== plan before optimization", "== rule fold_constants",
                    "== plan after optimization", "== templated radix tree",
                    "== shared static prefixes", "== planning time"):
        assert section in out
    assert "== rule unroll_loops" not in out  # only rules that changed something


@pytest.mark.parametrize("name", sorted(LLM_OPS))
def test_explain_json_on_every_example(name, capsys):
    data = _explain_json(capsys, str(EXAMPLES / f"{name}.yaml"))
    assert set(data) >= {"ops_before", "ops_after", "rules", "shared_prefixes", "planning_ms"}
    assert sum(op["kind"] == "llm" for op in data["ops_after"]) == LLM_OPS[name]
    assert {r["name"] for r in data["rules"]} >= {"fold_constants", "eliminate_dead_ops"}
    longest = max(data["shared_prefixes"], key=lambda p: p["num_chars"])
    assert longest["num_chars"] >= MIN_SHARED_PREFIX_CHARS and len(longest["consumers"]) >= 2
    assert data["planning_ms"] > 0


def test_trading_system_preamble_is_shared_by_all_88_calls(capsys):
    data = _explain_json(capsys, str(EXAMPLES / "trading.yaml"))
    assert max(len(p["consumers"]) for p in data["shared_prefixes"]) == 88


@pytest.mark.parametrize("name", sorted(LLM_OPS))
def test_optimizing_an_example_keeps_its_outputs(name):
    plan = _plan(name)
    assert len(plan.rows) >= 2
    before, calls_before = evaluate(plan)
    after, calls_after = evaluate(optimize(plan).plan)
    assert before == after
    assert calls_before == calls_after == LLM_OPS[name] * len(plan.rows)


def test_verbose_prints_every_rule_and_whole_plans(capsys):
    assert main(["explain", str(EXAMPLES / "debate.yaml"), "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "== rule unroll_loops" in out and "== rule merge_identical_ops" in out


def test_disable_switch_skips_a_rule(capsys):
    data = _explain_json(capsys, str(EXAMPLES / "debate.yaml"), "--disable", "fold_constants")
    assert "fold_constants" not in {r["name"] for r in data["rules"]}
    assert data["disabled_rules"] == ["fold_constants"]


def test_request_options_disable_rules(tmp_path, capsys):
    text = (EXAMPLES / "reflection.yaml").read_text()
    path = tmp_path / "r.yaml"
    path.write_text(text + "options:\n  optimizations:\n    disableEliminateDeadOps: true\n")
    data = _explain_json(capsys, str(path))
    assert data["disabled_rules"] == ["eliminate_dead_ops"]


def test_rows_file_replaces_the_rows(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "Is 91 prime?"}\n')
    assert main(["explain", str(EXAMPLES / "debate.yaml"), "--rows", str(rows)]) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"topic": "x"}\n')
    assert main(["explain", str(EXAMPLES / "debate.yaml"), "--rows", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "'question'" in err and "rows[0].question" in err


@pytest.mark.parametrize("content, expected", [
    ("workflow:\n  ops: [\n", ":3:"),                                   # YAML syntax: line
    ("workflow:\n  ops:\n  - id: a\n    bogus: {}\n", "bogus"),        # unknown field
    ("workflow:\n  ops:\n  - id: o\n    output: {input: ghost}\n",      # dangling reference
     "operator 'o', field 'input'"),
    ("workflow:\n  ops:\n  - id: q\n    input: {}\n  - id: a\n    llm: {prompt: q, config: "
     "{maxTokens: -1}}\n  - id: o\n    output: {input: a}\n", "field 'config.max_tokens'"),
])
def test_bad_files_exit_2_with_the_place_and_no_traceback(tmp_path, content, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "helium_trt.server.cli", "explain", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_file_exits_2(capsys):
    assert main(["explain", "/nonexistent/workflow.yaml"]) == 2
    assert "cannot read" in capsys.readouterr().err


# Shapes translated from other agent programs: what explain must show of each.
def test_explain_shows_the_translated_shapes(capsys):
    react = _explain_json(capsys, str(EXAMPLES / "react.yaml"))
    assert sum(op["kind"] == "llm" for op in react["ops_after"]) == 4  # the loop, unrolled
    fewshot = max(react["shared_prefixes"], key=lambda p: p["num_chars"])
    assert "Action 2: Finish[the Danube]" in fewshot["text"] and \
        {"agent.0.step", "agent.1.step"} <= set(fewshot["consumers"])
    chat = _explain_json(capsys, str(EXAMPLES / "multi_turn_chat.yaml"))
    assert any(set(p["consumers"]) == {"chat1", "chat2", "chat3"} and p["num_chars"] >= 600
               for p in chat["shared_prefixes"])
    for name, op, lists in (("tree_of_thought", "second_steps", ["first_steps"]),
                            ("summarize_chunks", "chunk_summary", ["chunks"])):
        data = _explain_json(capsys, str(EXAMPLES / f"{name}.yaml"))
        found = [p for p in data["per_element_prefixes"] if p["op"] == op]
        assert found and found[0]["lists"] == lists and found[0]["num_chars"] >= 300, name
