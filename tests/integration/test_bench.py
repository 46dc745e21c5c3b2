"""The benchmark harness end to end on the tiny model: one workload, three systems, real figures."""

from __future__ import annotations

import json

import pytest

from helium_trt.bench.suite import SuiteConfig, run_suite
from helium_trt.bench.workloads import WorkloadSize, load_workload


# padding=0: the sample texts unpadded, so every prompt fits the tiny model's 1024 positions.
@pytest.fixture(scope="module")
def bench(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    config = SuiteConfig(
        model_dir=tiny_model_dir, workloads=("reflection",), dtype="float32",
        systems=("helium", "call-level", "naive"), with_vllm=False, out_dir=out,
        sizes={"reflection": (WorkloadSize(num_rows=2, max_tokens=4, padding=0),)})
    lines: list[str] = []
    report, runs, paths = run_suite(config, lines.append)
    return report, runs, paths, lines


def test_generated_rows_are_deterministic_distinct_and_long():
    a = load_workload("map_reduce", WorkloadSize(3, 8))
    b = load_workload("map_reduce", WorkloadSize(3, 8))
    assert a.rows == b.rows
    assert len({r["question"] for r in a.rows}) == 3
    assert all(len(r["context"]) > 800 for r in a.rows)  # a few hundred tokens
    fan = load_workload("map_reduce", WorkloadSize(1, 8, fan_out=4))
    assert len(fan.plan.llm_ops) == 5  # four experts and the summarizer


def test_json_holds_real_figures_per_system(bench):
    report, _, paths, _ = bench
    on_disk = json.loads(paths["json"].read_text())
    assert on_disk["workloads"] == json.loads(json.dumps(report["workloads"]))
    (systems,) = on_disk["workloads"].values()
    assert set(systems) == {"helium", "call-level", "naive"}
    for f in systems.values():
        assert f["wall_s"] > 0 and f["num_llm_calls"] == 2 * 5 and f["num_rows_failed"] == 0
        assert f["prefill_minimum"] > 0 and f["decode_tokens"] > 0
        assert f["ttft_ms"] and all(ms > 0 for ms in f["ttft_ms"].values())
    helium, naive = systems["helium"], systems["naive"]
    # Naive recomputes every prompt token; helium computes little more than the trie minimum.
    assert naive["prefill_reused"] == 0
    assert naive["prefill_computed"] > helium["prefill_computed"]
    assert helium["prefill_reused"] > 0 and helium["kv_hit_rate"] > 0
    assert helium["prefill_efficiency"] > naive["prefill_efficiency"]
    assert set(helium["speedup"]) == {"call-level", "naive"}
    assert helium["speedup"]["naive"] == pytest.approx(naive["wall_s"] / helium["wall_s"])


def test_greedy_outputs_identical_across_systems_on_one_engine(bench):
    _, runs, _, _ = bench
    outputs = {run.system: run.outputs for run in runs}
    assert len(outputs["helium"]) == 2
    assert outputs["helium"] == outputs["call-level"] == outputs["naive"]


def test_markdown_plot_and_progress(bench):
    report, _, paths, lines = bench
    text = paths["markdown"].read_text()
    assert "| helium |" in text and "| naive |" in text and "## Targets" in text
    assert "over call-level" in text  # reflection is a primitive: the 1.6x target is listed
    assert paths["png"].stat().st_size > 1000
    assert any("reflection" in line and "helium" in line for line in lines)
    # One untimed warm-up of the workload comes first and is not among the timed runs.
    assert [i for i, line in enumerate(lines) if "untimed warm-up" in line] == [
        next(i for i, line in enumerate(lines) if "reflection" in line)]
    assert sum(line.lstrip().startswith("[") for line in lines) == 3


# Two workers per system, each system twice in turn (A B C A B C).
@pytest.fixture(scope="module")
def workers_bench(tiny_model_dir, tmp_path_factory):
    config = SuiteConfig(
        model_dir=tiny_model_dir, workloads=("reflection",), dtype="float32",
        systems=("helium", "call-level round-robin", "call-level least-loaded"),
        with_vllm=False, out_dir=tmp_path_factory.mktemp("workers"), num_workers=2,
        num_threads=1, repeat=2,
        sizes={"reflection": (WorkloadSize(num_rows=2, max_tokens=4, padding=0),)})
    lines: list[str] = []
    report, runs, paths = run_suite(config, lines.append)
    return report, {run.system: run for run in runs}, paths, lines


def test_workers_balancers_and_repeats(workers_bench):
    report, runs, paths, lines = workers_bench
    assert sum(line.lstrip().startswith("[") for line in lines) == 6  # 3 systems x 2 runs
    assert runs["helium"].outputs == runs["call-level round-robin"].outputs \
        == runs["call-level least-loaded"].outputs
    for run in runs.values():
        assert len(run.wall_ms_all) == 2 and run.wall_ms == sum(run.wall_ms_all) / 2
        assert len(run.worker_calls) == 2 and sum(run.worker_calls) == run.num_llm_calls == 10
    # Round robin alternates; helium asked for as many distinct calls as it made.
    assert sorted(runs["call-level round-robin"].worker_calls) == [5, 5]
    assert runs["helium"].num_distinct_prompts == runs["helium"].num_llm_calls
    text = paths["markdown"].read_text()
    assert paths["markdown"].name == "bench_quick_workers2.md"
    assert "x call-level least-loaded" in text and "2 worker(s), 1 torch thread(s)" in text
    helium_row = next(line for line in text.splitlines() if line.startswith("| helium ["))
    assert "10 / 10" in helium_row and "-" in helium_row.split("|")[2]  # wall (min-max)


# Cross-batch: day 2 repeats one of day 1's two rows; helium keeps its caches across the days.
@pytest.fixture(scope="module")
def cross_batch(tiny_model_dir, tmp_path_factory):
    from helium_trt.bench.suite import run_cross_batch_suite

    config = SuiteConfig(
        model_dir=tiny_model_dir, workloads=("reflection",), dtype="float32",
        systems=("helium", "call-level"), out_dir=tmp_path_factory.mktemp("cross"),
        sizes={"reflection": (WorkloadSize(num_rows=2, max_tokens=4, padding=0),)})
    lines: list[str] = []
    report, runs, paths = run_cross_batch_suite(config, 0.5, lines.append)
    return report, {run.system: run for run in runs}, paths


def test_cross_batch_day2_repeats_day1_rows_and_only_new_ones_are_new():
    from helium_trt.bench.cross_batch import load_batches

    batch = load_batches("map_reduce", WorkloadSize(4, 8, 4), 0.5)
    assert batch.num_repeated == 2
    assert batch.day2.rows[:2] == batch.day1.rows[:2]
    assert not set(map(str, batch.day2.rows[2:])) & set(map(str, batch.day1.rows))
    # Trading's sample rows repeat; a new day-2 row still differs from every day-1 row in
    # every per-source column (news, social, market, fundamentals).
    trading = load_batches("trading", WorkloadSize(2, 8), 0.5)
    new, old = trading.day2.rows[1], trading.day1.rows
    for column in (c for c in new if c.startswith(("news_", "social_", "market_"))):
        assert all(new[column] != row[column] for row in old), column
    assert batch.workflow.ops and batch.day1.plan.ops == batch.day2.plan.ops


def test_cross_batch_repeated_rows_identical_and_helium_runs_fewer_calls(cross_batch):
    _, runs, _ = cross_batch
    helium, call_level = runs["helium"], runs["call-level"]
    for run in (helium, call_level):
        assert run.day1.num_rows_failed == run.day2.num_rows_failed == 0
        assert len(run.day2.outputs) == 2
    # Greedy: the repeated row's day-2 outputs are day 1's, whoever computed them.
    assert helium.day2.outputs[0] == helium.day1.outputs[0]
    assert call_level.day2.outputs[0] == call_level.day1.outputs[0]
    assert helium.num_repeated_identical == helium.num_repeated == 1
    # Call-level recomputes every call; helium answers the repeated row from its result cache.
    assert call_level.day2.num_llm_calls == call_level.day1.num_llm_calls == 2 * 5
    assert helium.day2.num_llm_calls < call_level.day2.num_llm_calls
    assert helium.day2.num_result_cache_hits > 0 and call_level.day2.num_result_cache_hits == 0
    assert helium.warm_ms > 0 and call_level.warm_ms == 0


def test_cross_batch_report_files(cross_batch):
    report, _, paths = cross_batch
    (systems,) = report["workloads"].values()
    assert systems["helium"]["speedup_vs_call_level"] > 0
    assert systems["call-level"]["speedup_vs_call_level"] == pytest.approx(1.0)
    assert json.loads(paths["json"].read_text())["meta"]["overlap"] == 0.5
    assert "| helium |" in paths["markdown"].read_text()
    assert paths["png"].stat().st_size > 1000
