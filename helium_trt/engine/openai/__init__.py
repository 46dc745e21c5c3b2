"""The OpenAI-compatible engine: helium's Engine protocol over a completions server (vLLM ...)."""

from helium_trt.engine.openai.engine import OpenAIHttpEngine

__all__ = ["OpenAIHttpEngine"]
