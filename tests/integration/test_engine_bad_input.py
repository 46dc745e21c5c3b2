"""Bad requests and bad model directories fail with clear errors; the engine keeps serving."""

from __future__ import annotations

import json
import shutil

import pytest
from engine_helpers import request, run_all

from helium_trt.engine.base import EngineRequest, RetentionRange
from helium_trt.engine.config import EngineConfig
from helium_trt.engine.embedded.engine import EmbeddedEngine
from helium_trt.engine.embedded.model_config import MalformedModelError
from helium_trt.errors import InvalidRequestError, ModelNotFoundError, ResourceExhaustedError


def test_bad_requests_raise_and_the_engine_keeps_serving(embedded_engine):
    engine = embedded_engine
    good = engine.tokenizer.encode("What is the capital of France?")
    vocab, window = engine.info.vocab_size, engine.info.max_model_len
    cases = [
        (request("oov", good + [vocab], max_tokens=4), "outside the vocabulary"),
        (request("neg", [-1] + good, max_tokens=4), "outside the vocabulary"),
        (request("empty", [], max_tokens=4), "prompt_token_ids is empty"),
        (request("long", good * (window // len(good) + 1), max_tokens=1), "over the context window"),
        (request("fit", good * ((window - 10) // len(good)), max_tokens=64), "does not fit the context window"),
        (request("temp", good, temperature=-1.0), "temperature"),
        (request("topp", good, top_p=0.0), "top_p"),
        (EngineRequest("ret", tuple(good), retention_ranges=(RetentionRange(0, 4, 101),)),
         "retention priority 101"),
    ]
    for bad, message in cases:
        with pytest.raises(InvalidRequestError, match=message):
            engine.generate(bad)
    [result] = run_all(engine, [request("ok", good, max_tokens=5, ignore_eos=True)])
    assert result.finish_reason == "length" and len(result.output_token_ids) == 5


def test_duplicate_request_id_is_rejected(embedded_engine):
    import asyncio

    engine = embedded_engine
    prompt = engine.tokenizer.encode("Name three primary colors.")

    async def main():
        first = engine.generate(request("dup", prompt, max_tokens=50, ignore_eos=True))
        await first.__anext__()
        with pytest.raises(InvalidRequestError, match="already running"):
            await engine.generate(request("dup", prompt, max_tokens=5)).__anext__()
        await first.aclose()

    asyncio.run(main())


def test_request_larger_than_the_kv_pool(tiny_model_dir):
    import asyncio

    engine = EmbeddedEngine(EngineConfig(model_dir=str(tiny_model_dir), num_blocks=4))
    try:
        with pytest.raises(ResourceExhaustedError, match="needs 5 KV blocks, the pool has 4"):
            engine.generate(request("big", list(range(60)), max_tokens=20))
    finally:
        asyncio.run(engine.close())


def test_unknown_model_directory(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        EmbeddedEngine(EngineConfig(model_dir=str(tmp_path / "nowhere")))


def _copy(tiny_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


def test_garbage_weights_file(tiny_model_dir, tmp_path):
    model_dir = _copy(tiny_model_dir, tmp_path)
    (model_dir / "model.safetensors").write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(MalformedModelError, match="unreadable safetensors"):
        EmbeddedEngine(EngineConfig(model_dir=str(model_dir)))


def test_weights_that_do_not_fit_the_config(tiny_model_dir, tmp_path):
    model_dir = _copy(tiny_model_dir, tmp_path)
    config = json.loads((model_dir / "config.json").read_text())
    config["intermediate_size"] += 8
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(MalformedModelError, match="mlp.gate_proj.weight' has shape"):
        EmbeddedEngine(EngineConfig(model_dir=str(model_dir)))


def test_malformed_config_and_missing_tokenizer(tiny_model_dir, tmp_path):
    model_dir = _copy(tiny_model_dir, tmp_path)
    (model_dir / "config.json").write_text("{not json")
    with pytest.raises(MalformedModelError, match="config.json"):
        EmbeddedEngine(EngineConfig(model_dir=str(model_dir)))
    shutil.copy(tiny_model_dir / "config.json", model_dir / "config.json")
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(MalformedModelError, match="no tokenizer.json"):
        EmbeddedEngine(EngineConfig(model_dir=str(model_dir)))
