"""Smoke test on the real SmolLM2-135M-Instruct (fetch it with `helium-trt model fetch`)."""

from __future__ import annotations

import asyncio

import pytest
from engine_helpers import request, run_all

from helium_trt.engine.config import EngineConfig, default_model_dir
from helium_trt.engine.convert import is_model_dir

MODEL_DIR = default_model_dir()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not is_model_dir(MODEL_DIR),
                       reason=f"SmolLM2 not found at {MODEL_DIR}; run `helium-trt model fetch` "
                              f"(or set HELIUM_MODEL_DIR)"),
]


def test_smollm2_names_the_primary_colors():
    from helium_trt.engine.embedded import EmbeddedEngine

    engine = EmbeddedEngine(EngineConfig(model_dir=str(MODEL_DIR)))
    try:
        fmt = engine.tokenizer.chat_format
        assert fmt.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
        text = (fmt.message_start.format(role="system") + fmt.default_system + fmt.message_end
                + fmt.message_start.format(role="user") + "Name three primary colors." + fmt.message_end
                + fmt.generation_prompt)
        [result] = run_all(engine, [request("colors", engine.tokenizer.encode(text), max_tokens=40)])
    finally:
        asyncio.run(engine.close())
    answer = result.text.lower()
    assert result.finish_reason == "stop"
    assert all(color in answer for color in ("red", "blue", "yellow")), answer
