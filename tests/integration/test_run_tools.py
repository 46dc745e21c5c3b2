"""`helium-trt run` and tool-call operators: refused before any work without `--tools`, and
answered by a Python function with it, in-process and through a served Session."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml
from serve_helpers import serve

WORKFLOW = {"workflow": {"name": "tools", "ops": [
    {"id": "q", "input": {}},
    {"id": "lookup", "toolCall": {"name": "search", "args": {"query": "q"}}},
    {"id": "p", "format": {"template": "Facts: {lookup}\nQ: {q}\nA:"}},
    {"id": "a", "llm": {"prompt": "p", "config": {"maxTokens": 3}}},
    {"id": "facts", "output": {"input": "lookup"}},
    {"id": "answer", "output": {"input": "a"}},
]}, "rows": [{"q": "colors"}, {"q": "fail"}]}

TOOLS = textwrap.dedent('''
    def search(name, args):
        if args["query"] == "fail":
            raise LookupError("no index for " + args["query"])
        return name + " found " + args["query"]

    async def echo(name, args):
        return args["query"]
''')


def helium(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helium_trt.server.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def files(tmp_path):
    wf = tmp_path / "tools.yaml"
    wf.write_text(yaml.safe_dump(WORKFLOW))
    (tmp_path / "my_tools.py").write_text(TOOLS)
    return wf, tmp_path / "my_tools.py"


def test_a_tool_workflow_without_tools_is_refused_before_the_engine_loads(files, tmp_path):
    wf, _ = files
    # A model directory that does not exist: the refusal must come before it is looked at.
    done = helium("run", str(wf), "--model", str(tmp_path / "no-model"))
    assert done.returncode == 2
    assert "operator 'lookup'" in done.stderr and "--tools MODULE:FUNCTION" in done.stderr
    assert "Traceback" not in done.stderr and "row 0" not in done.stdout


def test_bad_tools_specs_exit_2(files, tmp_path):
    wf, module = files
    for spec, says in [("nocolon", "expected MODULE:FUNCTION"),
                       (f"{module}:missing", "has no function 'missing'"),
                       (f"{tmp_path / 'absent.py'}:f", "no file"),
                       ("no_such_module_h13:f", "cannot import no_such_module_h13")]:
        done = helium("run", str(wf), "--model", str(tmp_path / "no-model"), "--tools", spec)
        assert done.returncode == 2 and says in done.stderr, (spec, done.stderr)
        assert "Traceback" not in done.stderr


def test_run_answers_tool_calls_with_a_python_function(files, tiny_model_dir):
    wf, module = files
    done = helium("run", str(wf), "--model", str(tiny_model_dir),
                  "--tools", f"{module}:search")
    assert done.returncode == 1, done.stderr  # row 1's tool raises: that row fails, row 0 runs
    assert "row 0:\n  facts: search found colors\n  answer: " in done.stdout
    assert "row 1: error in lookup: operator 'lookup': tool 'search' raised LookupError: " \
           "no index for fail" in done.stderr


def test_run_tools_by_module_name_and_async(files, tiny_model_dir):
    wf, module = files
    proc = subprocess.run(
        [sys.executable, "-m", "helium_trt.server.cli", "run", str(wf), "--model",
         str(tiny_model_dir), "--tools", "my_tools:echo"],
        capture_output=True, text=True, timeout=180, cwd=module.parent)
    assert proc.returncode == 0, proc.stderr
    assert "facts: colors" in proc.stdout and "facts: fail" in proc.stdout


def test_run_on_a_server_answers_tool_calls_over_session(files, tiny_model_dir, tmp_path):
    wf, module = files
    with serve(tiny_model_dir, tmp_path) as served:
        done = helium("run", str(wf), "--server", served.address, "--tools", f"{module}:search")
    assert done.returncode == 1, done.stderr
    assert "facts: search found colors" in done.stdout
    assert "tool 'search' raised LookupError: no index for fail" in done.stderr
