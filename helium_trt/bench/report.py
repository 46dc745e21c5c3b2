"""Benchmark figures: per workload and system, ratios against baselines, targets with reasons.

Writes one JSON document (every figure of the tables), a markdown report and a PNG plot.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from helium_trt.bench.harness import SystemRun
from helium_trt.bench.systems import BASELINES, HELIUM
from helium_trt.bench.workloads import PRIMITIVES

TARGET_CALL_LEVEL = 1.6
TARGET_NAIVE_TRADING = 10.0
TARGET_PREFILL_EFFICIENCY = 0.95
TARGET_PLANNING_MS = 50.0


def figures(run: SystemRun, by_system: dict[str, SystemRun]) -> dict:
    """Every figure of one (workload, system) cell, ratios against the baselines that ran."""
    wall_s = run.wall_ms / 1000.0
    ttfts = list(run.ttft_ms.values())
    out = {k: v for k, v in asdict(run).items() if k != "outputs"}
    out.update({
        "wall_s": wall_s,
        "rows_per_min": 60.0 * run.num_rows / wall_s if wall_s else 0.0,
        "calls_per_s": run.num_llm_calls / wall_s if wall_s else 0.0,
        "prefill_efficiency": run.prefill_minimum / run.prefill_computed
        if run.prefill_computed else 0.0,
        "mean_ttft_ms": sum(ttfts) / len(ttfts) if ttfts else 0.0,
        "wall_s_all": [ms / 1000.0 for ms in run.wall_ms_all],
        "speedup": {b: by_system[b].wall_ms / run.wall_ms for b in BASELINES
                    if b in by_system and run.wall_ms},
    })
    return out


def build_report(runs: Sequence[SystemRun], meta: dict) -> dict:
    """The JSON document: meta, per workload per system figures, and the targets."""
    workloads: dict[str, dict[str, dict]] = {}
    grouped: dict[str, dict[str, SystemRun]] = {}
    for run in runs:
        grouped.setdefault(run.workload, {})[run.system] = run
    for workload, by_system in grouped.items():
        workloads[workload] = {name: figures(run, by_system) for name, run in by_system.items()}
    return {"meta": meta, "workloads": workloads, "targets": check_targets(workloads, meta)}


def _base_name(label: str) -> str:
    return label.split(" ", 1)[0]


def check_targets(workloads: dict[str, dict[str, dict]], meta: dict) -> list[dict]:
    """Each target: met or not, and when missed which term dominates."""
    out = []
    for label, systems in workloads.items():
        helium = systems.get(HELIUM)
        if helium is None:
            continue
        name = _base_name(label)
        speedup = helium["speedup"]
        if name in PRIMITIVES and "call-level" in speedup:
            out.append(_target(f"{label}: >= {TARGET_CALL_LEVEL}x over call-level",
                               speedup["call-level"], TARGET_CALL_LEVEL,
                               _why(helium, systems["call-level"])))
        if "vllm" in speedup:
            out.append(_target(f"{label}: ahead of vLLM", speedup["vllm"], 1.0,
                               _why(helium, systems["vllm"])))
        if name == "trading" and "naive" in speedup:
            out.append(_target(f"{label}: >= {TARGET_NAIVE_TRADING}x over naive",
                               speedup["naive"], TARGET_NAIVE_TRADING,
                               _why(helium, systems["naive"])))
        half = systems.get("helium @half-kv")
        if half is not None:
            out.append(_target(f"{label}: prefill efficiency >= {TARGET_PREFILL_EFFICIENCY} "
                               "of the trie minimum, KV at half the working set",
                               half["prefill_efficiency"], TARGET_PREFILL_EFFICIENCY,
                               f"computed {half['prefill_computed']} (warm-ups "
                               f"{half['warm_computed']}) vs minimum {half['prefill_minimum']} "
                               f"with {half['kv_blocks']} KV blocks"))
    planning = meta.get("planning_trading_32_rows_ms")
    if planning is not None:
        out.append({"target": f"planning < {TARGET_PLANNING_MS:.0f} ms for Trading over 32 rows",
                    "value": planning, "met": planning < TARGET_PLANNING_MS,
                    "why": "optimize + TRT + schedule, median of repeated runs"})
    return out


def _target(name: str, value: float, goal: float, why: str) -> dict:
    return {"target": name, "value": value, "met": value >= goal, "why": why}


def _why(helium: dict, baseline: dict) -> str:
    """Which term dominates helium's time against ``baseline``: prefill, decode or planning."""
    d_prefill = baseline["prefill_computed"] - helium["prefill_computed"]
    d_decode = baseline["decode_tokens"] - helium["decode_tokens"]
    return (f"prefill computed {helium['prefill_computed']} vs {baseline['prefill_computed']} "
            f"({d_prefill:+d} saved), decode {helium['decode_tokens']} vs "
            f"{baseline['decode_tokens']} ({d_decode:+d}), planning "
            f"{helium['planning_ms']:.0f} ms, wall {helium['wall_s']:.1f} s vs "
            f"{baseline['wall_s']:.1f} s")


# ---- markdown ------------------------------------------------------------------------------

_COLUMNS = ("system", "wall s", "rows/min", "prefill computed", "reused", "trie min",
            "min/computed", "KV hit", "planning ms", "mean TTFT ms", "calls / distinct",
            "decode tok")


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = ["# helium_trt benchmark", "",
             f"Command: `{meta.get('command', '')}`  ", f"Model: {meta.get('model')} "
             f"({meta.get('dtype')}), engine: embedded CPU engine; {meta.get('host', '')}  ",
             f"Started {meta.get('started', '')}, took {meta.get('total_s', 0):.0f} s.  "]
    for note in meta.get("notes", []):
        lines.append(f"- {note}")
    lines += ["", "## Targets", "", "| target | value | met | why |", "|---|---|---|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {t['value']:.2f} | {'yes' if t['met'] else 'NO'} | "
                     f"{t['why']} |")
    if meta.get("num_workers", 1) > 1 or meta.get("repeat", 1) > 1:
        lines.append(f"- {meta.get('num_workers', 1)} worker(s), {meta.get('num_threads')} "
                     f"torch thread(s) each; systems run in turn {meta.get('repeat', 1)} time(s): "
                     "wall s is their median, (min-max); calls per worker after the name.")
    ran = {b for systems in report["workloads"].values() for b in systems if b in BASELINES}
    baselines = [b for b in BASELINES if b in ran]
    columns = (*_COLUMNS[:3], *(f"x {b}" for b in baselines), *_COLUMNS[3:])
    for workload, systems in report["workloads"].items():
        lines += ["", f"## {workload}", "", "| " + " | ".join(columns) + " |",
                  "|" + "---|" * len(columns)]
        for name, f in systems.items():
            sp = f["speedup"]
            cells = [name + _per_worker(f), _wall_cell(f), f"{f['rows_per_min']:.1f}",
                     *(f"{sp[b]:.2f}" if b in sp else "-" for b in baselines),
                     _prefill_cell(f), str(f["prefill_reused"]),
                     str(f["prefill_minimum"]), f"{f['prefill_efficiency']:.2f}",
                     f"{f['kv_hit_rate']:.2f}", f"{f['planning_ms']:.1f}",
                     f"{f['mean_ttft_ms']:.0f}", _calls_cell(f), str(f["decode_tokens"])]
            if f["num_rows_failed"]:
                cells[0] += f" ({f['num_rows_failed']} rows failed)"
            lines.append("| " + " | ".join(cells) + " |")
        helium = systems.get(HELIUM)
        if helium and helium["ttft_ms"]:
            ttft = ", ".join(f"{op} {ms:.0f}" for op, ms in helium["ttft_ms"].items())
            lines += ["", f"helium TTFT per operator (ms): {ttft}"]
    return "\n".join(lines) + "\n"


def _wall_cell(f: dict) -> str:
    runs = f.get("wall_s_all") or []
    spread = f" ({min(runs):.2f}-{max(runs):.2f})" if len(runs) > 1 else ""
    return f"{f['wall_s']:.2f}{spread}"


def _prefill_cell(f: dict) -> str:
    runs = f.get("prefill_computed_all") or []
    spread = f" ({min(runs)}-{max(runs)})" if len(runs) > 1 and min(runs) != max(runs) else ""
    return f"{f['prefill_computed']}{spread}"


def _calls_cell(f: dict) -> str:
    """Engine calls / distinct calls asked for (+ those that joined one in flight)."""
    distinct = f.get("num_distinct_prompts") or 0
    shared = f.get("num_shared_calls") or 0
    return (f"{f['num_llm_calls']} / {distinct}" if distinct else str(f["num_llm_calls"])) + \
        (f" (+{shared} shared)" if shared else "")


def _per_worker(f: dict) -> str:
    calls = f.get("worker_calls") or []
    return f" [{'/'.join(map(str, calls))}]" if len(calls) > 1 else ""


# ---- plot ----------------------------------------------------------------------------------

def plot(report: dict, path: Path) -> bool:
    """Wall time per system per workload, and prefill computed vs the trie minimum."""
    return grouped_bars(
        report, path, title=report["meta"].get("title", "helium_trt benchmark"),
        panels=(("wall_s", "end-to-end seconds (lower is better)", None),
                ("prefill_efficiency", "trie minimum / prefill computed",
                 TARGET_PREFILL_EFFICIENCY)))


def grouped_bars(report: dict, path: Path, title: str,
                 panels: Sequence[tuple[str, str, float | None]]) -> bool:
    """One panel per (figure key, y label, reference line): a bar per system per workload.

    Returns False (and writes nothing) without matplotlib, which only the plot needs.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    workloads = report["workloads"]
    systems = list(dict.fromkeys(s for w in workloads.values() for s in w))
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(max(10, 2.5 * len(workloads)), 4.5 * len(panels)))
    width = 0.8 / max(1, len(systems))
    for ax, (key, label, line) in zip(axes[:, 0], panels):
        for i, system in enumerate(systems):
            xs = [j + i * width for j in range(len(workloads))]
            ax.bar(xs, [w.get(system, {}).get(key, 0.0) for w in workloads.values()], width,
                   label=system, color=plt.cm.tab20(i % 20))  # 13+ systems: tab10 would repeat
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(workloads))])
        ax.set_xticklabels(list(workloads), fontsize=8)
        ax.set_ylabel(label)
        if line is not None:
            ax.axhline(line, color="k", linestyle="--", linewidth=0.8)
    axes[0, 0].legend(fontsize=7, ncol=4)
    axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(report: dict, directory: Path, json_path: Path | None = None, *,
              markdown_of=None, plot_of=None, default_stem: str = "bench") -> dict[str, Path]:
    """JSON, markdown and (with matplotlib) PNG of ``report`` under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = report["meta"].get("stem", default_stem)
    paths = {"json": Path(json_path) if json_path else directory / f"{stem}.json",
             "markdown": directory / f"{stem}.md", "png": directory / f"{stem}.png"}
    paths["json"].write_text(json.dumps(report, indent=1, sort_keys=False))
    paths["markdown"].write_text((markdown_of or markdown)(report))
    if not (plot_of or plot)(report, paths["png"]):
        del paths["png"]
    return paths


def outputs_by_system(runs: Sequence[SystemRun]) -> dict[str, dict[str, dict]]:
    """Row outputs per workload and system (kept out of the report: text, not figures)."""
    out: dict[str, dict[str, dict]] = {}
    for run in runs:
        out.setdefault(run.workload, {})[run.system] = run.outputs
    return out
