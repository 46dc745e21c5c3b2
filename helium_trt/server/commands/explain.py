"""`helium-trt explain FILE`: the plan before and after each optimizer rule, the templated radix
tree, every LLM prompt and every shared static prefix, as text or as one JSON object
(``--json``). With ``--model DIR`` the prompts are rendered by that model's own chat template
and the shared prefixes counted in its tokens; without it ChatML is assumed (and said)."""

from __future__ import annotations

import argparse
import json
import sys

from helium_trt.api.convert import (
    disabled_rules, load_request_file, load_rows_file, plan_from_proto, rows_from_proto,
)
from helium_trt.engine.tokenizer import HFTokenizer
from helium_trt.errors import HeliumError
from helium_trt.optimizer import RULE_NAMES, OptimizeContext
from helium_trt.optimizer.explain import explain, to_json, to_text
from helium_trt.plan.graph import Plan
from helium_trt.runtime.calls import PromptTokenizer
from helium_trt.runtime.patterns import RE2


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain",
        help="show the optimized plan, its prompts, the templated radix tree and shared prefixes",
        description=__doc__)
    p.add_argument("file", help="workflow file (YAML/JSON RunRequest or Workflow)")
    p.add_argument("--rows", help="rows file (YAML/JSON list, or .jsonl); replaces the file's rows")
    p.add_argument("--verbose", action="store_true", help="print the whole plan after every rule")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--model", metavar="DIR",
                   help="show prompts as this model sees them: its chat template and tokenizer "
                        "(a Hugging Face directory; only its tokenizer files are read). Without "
                        "it ChatML is assumed")
    p.add_argument("--disable", action="append", default=[], choices=RULE_NAMES,
                   metavar="RULE", help=f"turn off a rule (repeatable): {', '.join(RULE_NAMES)}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        plan, disabled = _load(args)
        tokenizer = HFTokenizer.from_dir(args.model) if args.model else None
        ctx = OptimizeContext(patterns=RE2) if tokenizer is None else \
            OptimizeContext(chat_format=tokenizer.chat_format, patterns=RE2)
        explanation = explain(plan, disabled=disabled | frozenset(args.disable), ctx=ctx)
    except HeliumError as exc:
        print(f"helium-trt explain: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        body = to_json(explanation)
        if tokenizer is not None:
            tok = PromptTokenizer(tokenizer)
            for entry in body["shared_prefixes"]:
                entry["num_tokens"] = len(tok.stable_prefix(entry["text"]))
        print(json.dumps(body, indent=2))
    else:
        count = None
        if tokenizer is not None:
            tok = PromptTokenizer(tokenizer)

            def count(text: str) -> int:
                return len(tok.stable_prefix(text))
        print(to_text(explanation, verbose=args.verbose, count_tokens=count))
    return 0


def _load(args) -> tuple[Plan, frozenset[str]]:
    request = load_request_file(args.file)
    rows = load_rows_file(args.rows) if args.rows else rows_from_proto(request.rows)
    plan = plan_from_proto(request.workflow, rows)
    return plan, disabled_rules(request.options.optimizations)
