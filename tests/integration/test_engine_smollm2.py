"""Smoke test on the real SmolLM2-135M-Instruct (fetch it with `helium-trt model fetch`)."""

from __future__ import annotations

import asyncio

import pytest
from engine_helpers import request, run_all

from helium_trt.engine.config import EngineConfig, default_model_dir
from helium_trt.engine.embedded.convert import is_model_dir

MODEL_DIR = default_model_dir()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not is_model_dir(MODEL_DIR),
                       reason=f"SmolLM2 not found at {MODEL_DIR}; run `helium-trt model fetch` "
                              f"(or set HELIUM_MODEL_DIR)"),
]


def test_smollm2_names_the_primary_colors():
    from helium_trt.engine.embedded.engine import EmbeddedEngine

    engine = EmbeddedEngine(EngineConfig(model_dir=str(MODEL_DIR)))
    try:
        text = engine.tokenizer.chat_format.render(
            [{"role": "user", "content": "Name three primary colors."}], True)
        assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
                               "trained by Hugging Face<|im_end|>\n<|im_start|>user\n")
        [result] = run_all(engine, [request("colors", engine.tokenizer.encode(text), max_tokens=40)])
    finally:
        asyncio.run(engine.close())
    answer = result.text.lower()
    assert result.finish_reason == "stop"
    assert all(color in answer for color in ("red", "blue", "yellow")), answer
