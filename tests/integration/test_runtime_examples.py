"""Every example workflow: an optimized run gives exactly the naive sequential run's outputs
(greedy decoding, or seeded sampling; real tiny model) while computing fewer prefill tokens.
An example with tool calls gets the tool its header names (examples/<name>_tools.py)."""

from pathlib import Path

import pytest
from runtime_helpers import run_on_fresh_engines

from helium_trt.api.convert import load_request_file, plan_from_proto, rows_from_proto
from helium_trt.runtime.options import RunOptions, naive_options
from helium_trt.server.commands.tools import as_tool_callback, load_tools

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
TOOLS = {"react": "react_tools.py:wiki"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_optimized_run_matches_naive_and_computes_less(path, long_tiny_model_dir):
    request = load_request_file(path)
    rows = rows_from_proto(request.rows)[: 1 if path.stem == "trading" else 2]
    plan = plan_from_proto(request.workflow, rows)
    tools = (as_tool_callback(load_tools(str(path.parent / TOOLS[path.stem])))
             if path.stem in TOOLS else None)
    fast = run_on_fresh_engines(long_tiny_model_dir, plan, options=RunOptions(), tools=tools)
    naive = run_on_fresh_engines(long_tiny_model_dir, plan, options=naive_options(), tools=tools)
    assert not fast.errors and not naive.errors
    assert fast.outputs == naive.outputs and len(fast.outputs) == len(rows)
    s, n = fast.stats, naive.stats
    assert s.prefill_tokens_computed < n.prefill_tokens_computed
    assert s.prefill_tokens_reused > 0 and n.prefill_tokens_reused == 0
    assert s.prefill_tokens_minimum == n.prefill_tokens_minimum
    assert s.prefill_tokens_computed >= s.prefill_tokens_minimum  # a true lower bound
    # Whole-prompt tokenization keeps the trie minimum of prefill within reach.
    assert s.prefill_tokens_minimum >= 0.95 * s.prefill_tokens_computed
    assert s.num_llm_calls == n.num_llm_calls and s.planning_ms > 0 and s.wall_ms > 0
