"""Cross-batch figures (day 2 only, against call-level at the same KV size): JSON, markdown, PNG."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from helium_trt.bench.cross_batch import CALL_LEVEL, DAY_KV, CrossBatchRun
from helium_trt.bench.report import grouped_bars, write_all


def baseline_of(system: str) -> str:
    """call-level at the same KV size as ``system``."""
    return CALL_LEVEL + DAY_KV if system.endswith(DAY_KV) else CALL_LEVEL


def day2_figures(run: CrossBatchRun, by_system: dict[str, CrossBatchRun]) -> dict:
    d2 = run.day2
    num_prompt = d2.prefill_computed - d2.warm_computed + d2.prefill_reused
    base = by_system.get(baseline_of(run.system))
    return {
        "day2_wall_s": d2.wall_ms / 1000.0, "day1_wall_s": run.day1.wall_ms / 1000.0,
        "warm_s": run.warm_ms / 1000.0, "warm_tokens_computed": run.warm_tokens_computed,
        "interlude_s": run.interlude_ms / 1000.0,
        "speedup_vs_call_level": base.day2.wall_ms / d2.wall_ms if base and d2.wall_ms else None,
        "baseline": baseline_of(run.system) if base else None,
        "num_llm_calls": d2.num_llm_calls, "day1_num_llm_calls": run.day1.num_llm_calls,
        "num_result_cache_hits": d2.num_result_cache_hits,
        "prefill_computed": d2.prefill_computed, "prefill_reused": d2.prefill_reused,
        "kv_hit_rate": d2.prefill_reused / num_prompt if num_prompt else 0.0,
        "decode_tokens": d2.decode_tokens, "planning_ms": d2.planning_ms,
        "num_rows": d2.num_rows, "num_rows_failed": d2.num_rows_failed,
        "num_repeated": run.num_repeated, "num_repeated_identical": run.num_repeated_identical,
        "kv_blocks": d2.kv_blocks, "errors": d2.errors + run.day1.errors,
        "day1": {k: v for k, v in asdict(run.day1).items() if k not in ("outputs", "ttft_ms")},
    }


def build_cross_batch_report(runs: Sequence[CrossBatchRun], meta: dict) -> dict:
    grouped: dict[str, dict[str, CrossBatchRun]] = {}
    for run in runs:
        grouped.setdefault(run.workload, {})[run.system] = run
    return {"meta": meta, "workloads": {
        label: {name: day2_figures(run, by_system) for name, run in by_system.items()}
        for label, by_system in grouped.items()}}


_COLUMNS = ("system", "day-2 s", "x call-level (same KV)", "day-2 LLM calls",
            "result-cache hits", "prefill computed", "reused", "KV hit", "decode tok",
            "repeated rows identical", "day-1 s", "warm s (tokens)", "KV blocks")


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = ["# helium_trt benchmark: cross-batch (day 2 after day 1 on the same server)", "",
             f"Command: `{meta.get('command', '')}`  ",
             f"Model: {meta.get('model')} ({meta.get('dtype')}), embedded CPU engine; "
             f"{meta.get('host', '')}  ",
             f"Started {meta.get('started', '')}, took {meta.get('total_s', 0):.0f} s; "
             f"day 2 repeats {meta.get('overlap', 0):.0%} of day 1's rows"
             + (f"; {meta['interlude']} traffic from another client runs between the days"
                if meta.get("interlude") else "") + ".  "]
    lines += [f"- {note}" for note in meta.get("notes", [])]
    for label, systems in report["workloads"].items():
        lines += ["", f"## {label}", "", "| " + " | ".join(_COLUMNS) + " |",
                  "|" + "---|" * len(_COLUMNS)]
        for name, f in systems.items():
            speedup = f["speedup_vs_call_level"]
            cells = [name, f"{f['day2_wall_s']:.2f}",
                     f"{speedup:.2f}" if speedup is not None else "-",
                     f"{f['num_llm_calls']} (day 1: {f['day1_num_llm_calls']})",
                     str(f["num_result_cache_hits"]), str(f["prefill_computed"]),
                     str(f["prefill_reused"]), f"{f['kv_hit_rate']:.2f}",
                     str(f["decode_tokens"]),
                     f"{f['num_repeated_identical']}/{f['num_repeated']}",
                     f"{f['day1_wall_s']:.2f}",
                     f"{f['warm_s']:.2f} ({f['warm_tokens_computed']})" if f["warm_s"] else "-",
                     str(f["kv_blocks"]) if f["kv_blocks"] else "full"]
            if f["num_rows_failed"]:
                cells[0] += f" ({f['num_rows_failed']} rows failed)"
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> bool:
    """Day-2 wall time and LLM calls run, per system per workload."""
    return grouped_bars(report, path, title=report["meta"].get("title", "cross-batch"),
                        panels=(("day2_wall_s", "day-2 seconds (lower is better)", None),
                                ("num_llm_calls", "day-2 LLM calls run", None)))


def write_cross_batch(report: dict, directory: Path,
                      json_path: Path | None = None) -> dict[str, Path]:
    return write_all(report, directory, json_path, markdown_of=markdown, plot_of=plot,
                     default_stem="bench_cross_batch")
