"""`helium-trt explain FILE`: the plan before and after each optimizer rule, the templated radix
tree and every shared static prefix, as text or as one JSON object (``--json``)."""

from __future__ import annotations

import argparse
import json
import sys

from helium_trt.api.convert import (
    disabled_rules, load_request_file, load_rows_file, plan_from_proto, rows_from_proto,
)
from helium_trt.errors import HeliumError
from helium_trt.optimizer import RULE_NAMES, OptimizeContext
from helium_trt.optimizer.explain import explain, to_json, to_text
from helium_trt.plan.graph import Plan
from helium_trt.runtime.patterns import RE2


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain", help="show the optimized plan, the templated radix tree and shared prefixes",
        description=__doc__)
    p.add_argument("file", help="workflow file (YAML/JSON RunRequest or Workflow)")
    p.add_argument("--rows", help="rows file (YAML/JSON list, or .jsonl); replaces the file's rows")
    p.add_argument("--verbose", action="store_true", help="print the whole plan after every rule")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--disable", action="append", default=[], choices=RULE_NAMES,
                   metavar="RULE", help=f"turn off a rule (repeatable): {', '.join(RULE_NAMES)}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        plan, disabled = _load(args)
        explanation = explain(plan, disabled=disabled | frozenset(args.disable),
                              ctx=OptimizeContext(patterns=RE2))
    except HeliumError as exc:
        print(f"helium-trt explain: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(to_json(explanation), indent=2))
    else:
        print(to_text(explanation, verbose=args.verbose))
    return 0


def _load(args) -> tuple[Plan, frozenset[str]]:
    request = load_request_file(args.file)
    rows = load_rows_file(args.rows) if args.rows else rows_from_proto(request.rows)
    plan = plan_from_proto(request.workflow, rows)
    return plan, disabled_rules(request.options.optimizations)
