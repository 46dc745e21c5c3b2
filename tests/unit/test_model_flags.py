"""`--model [NAME=]DIR`, `--url [NAME=]HOST:PORT`, `--triton-model [NAME=]MODEL` and binding
LLM operators to served models by name (no engine: model directories are only checked to hold
a config.json)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from helium_trt.errors import InvalidWorkflowError, ModelNotFoundError
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import InputOp, LlmOp, LoopOp, OutputOp
from helium_trt.runtime.models import ModelSet, ServedModel, as_models, bind_models
from helium_trt.server.commands.model_flags import (
    parse_models, split_named, triton_models, urls_by_model,
)


@pytest.fixture
def dirs(tmp_path):
    out = {}
    for name in ("tiny", "smol"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        out[name] = tmp_path / name
    return out


def test_split_named_only_takes_a_name_before_the_first_equals():
    assert split_named("router=models/tiny") == ("router", "models/tiny")
    assert split_named("models/tiny") == (None, "models/tiny")
    assert split_named("127.0.0.1:8001") == (None, "127.0.0.1:8001")
    assert split_named("a/b=c") == (None, "a/b=c")  # a path with '=' is no name
    assert split_named("answer=127.0.0.1:8001") == ("answer", "127.0.0.1:8001")


def test_models_in_order_the_first_the_default_bare_dirs_named_after_the_directory(dirs):
    found = parse_models([str(dirs["tiny"]), f"answer={dirs['smol']}"])
    assert [(m.name, m.model_dir) for m in found] == [("tiny", dirs["tiny"]),
                                                       ("answer", dirs["smol"])]


def test_a_repeated_name_and_a_missing_directory_are_refused(dirs, tmp_path):
    with pytest.raises(InvalidWorkflowError, match="'a' is named twice"):
        parse_models([f"a={dirs['tiny']}", f"a={dirs['smol']}"])
    with pytest.raises(ModelNotFoundError, match="no model at"):
        parse_models([f"a={tmp_path / 'nothing'}"])


def test_urls_go_to_their_model_bare_ones_to_the_default(dirs):
    models = parse_models([f"router={dirs['tiny']}", f"answer={dirs['smol']}"])
    assert urls_by_model(["h:1", "answer=h:2", "answer=h:3"], models, "triton") == {
        "router": ["h:1"], "answer": ["h:2", "h:3"]}
    with pytest.raises(InvalidWorkflowError, match="none for 'answer'"):
        urls_by_model(["h:1"], models, "triton")
    with pytest.raises(InvalidWorkflowError, match="names model 'other'"):
        urls_by_model(["h:1", "answer=h:2", "other=h:3"], models, "openai")


def test_triton_model_names_per_model_with_a_shared_default(dirs):
    models = parse_models([f"router={dirs['tiny']}", f"answer={dirs['smol']}"])
    assert triton_models(None, models) == {"router": "tensorrt_llm", "answer": "tensorrt_llm"}
    assert triton_models(["answer=smol_trtllm", "ensemble"], models) == {
        "router": "ensemble", "answer": "smol_trtllm"}
    with pytest.raises(InvalidWorkflowError, match="names model 'x'"):
        triton_models(["x=m"], models)


def _engine(name: str):
    return SimpleNamespace(info=SimpleNamespace(model_name=name))


def test_bind_models_resolves_names_and_refuses_unknown_ones_naming_operator_and_field():
    models = ModelSet([ServedModel("router", (_engine("r"),)),
                       ServedModel("answer", (_engine("a"),))])
    body = (LlmOp("step", prompt="s", model="answer"),)
    plan = Plan((InputOp("q", column="q"), LlmOp("a", prompt="q"),
                 LlmOp("b", prompt="q", model="answer"),
                 LoopOp("loop", init="q", state="s", result="step", max_iterations=2,
                        body=body),
                 OutputOp("out", input="a")))
    bound = bind_models(plan, models)
    assert bound.by_id["a"].model == "router" and bound.by_id["b"].model == "answer"
    bad = plan.replace_ops((*plan.ops[:3], LoopOp(
        "loop", init="q", state="s", result="step", max_iterations=2,
        body=(LlmOp("step", prompt="s", model="../../etc/passwd"),)), plan.ops[4]))
    with pytest.raises(ModelNotFoundError) as info:
        bind_models(bad, models)
    assert str(info.value).startswith("operator 'step', field 'model': no model "
                                      "'../../etc/passwd' is served here")
    assert as_models([_engine("solo")]).names == ("solo",)


def test_health_names_the_model_and_worker_that_is_down():
    from helium_trt.engine.base import EngineHealth
    from helium_trt.server.core import HeliumCore

    def engine(healthy: bool):
        return SimpleNamespace(info=SimpleNamespace(model_name="m"),
                               health=lambda: EngineHealth(healthy, None if healthy else "down"))

    core = HeliumCore(ModelSet([ServedModel("router", (engine(True),)),
                                ServedModel("answer", (engine(True), engine(False)))]))
    assert core.health() == EngineHealth(False, "model 'answer' worker 1: down")
    assert len(core.engines) == 3
    assert HeliumCore([engine(True), engine(False)]).health().reason == "worker 1: down"
