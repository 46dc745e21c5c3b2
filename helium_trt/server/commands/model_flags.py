"""``--model [NAME=]DIR``, ``--url [NAME=]HOST:PORT`` and ``--triton-model [NAME=]MODEL``:
which models `serve` (and `run`) serve, by name (not a command itself).

- ``--model NAME=DIR`` is repeatable; the first is the default model (an LLM operator with no
  ``model``). A bare ``--model DIR`` is named after the directory. With no ``--model`` the one
  default directory ($HELIUM_MODEL_DIR or ./models/SmolLM2-135M-Instruct) is served.
- ``--url NAME=HOST:PORT`` (``--engine triton`` / ``openai``) is one worker of model NAME; a bare
  ``--url HOST:PORT`` is a worker of the default model. Each model needs at least one.
- ``--triton-model NAME=MODEL`` is the Triton model NAME's endpoints serve; a bare
  ``--triton-model MODEL`` applies to every model without its own (default tensorrt_llm).

The embedded engine loads each model's weights from its DIR; Triton and OpenAI endpoints take
the model's tokenizer (and chat template) from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from helium_trt.errors import InvalidWorkflowError

# A model name: what LlmOp.model says. Starts with a letter or digit; no '/' or '=' (so a path
# or a URL is never taken for a name).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEFAULT_TRITON_MODEL = "tensorrt_llm"

MODEL_HELP = ("[NAME=]DIR: a model to serve, by name (repeatable; the first is the default, "
              "used by LLM operators with no model; a bare DIR is named after the directory). "
              "Weights for the embedded engine, tokenizer and chat template for Triton and "
              "OpenAI servers (default: $HELIUM_MODEL_DIR or ./models/SmolLM2-135M-Instruct)")


@dataclass(frozen=True, slots=True)
class ModelFlag:
    name: str
    model_dir: Path


def split_named(value: str) -> tuple[str | None, str]:
    """(NAME, rest) of ``NAME=rest``, or (None, value) when ``value`` starts with no name."""
    name, sep, rest = value.partition("=")
    if sep and _NAME.fullmatch(name):
        return name, rest
    return None, value


def parse_models(values: list[str] | None, flag: str = "--model") -> list[ModelFlag]:
    """The --model flags in order (the default model first), directories checked to hold a
    model (ModelNotFoundError otherwise); InvalidWorkflowError for a repeated name."""
    from helium_trt.engine.config import require_model_dir

    found: list[ModelFlag] = []
    for value in values or [None]:
        name, path = split_named(value) if value is not None else (None, None)
        model_dir = require_model_dir(path)
        name = name or model_dir.name or model_dir.resolve().name  # as given: links keep theirs
        if not _NAME.fullmatch(name):
            raise InvalidWorkflowError(f"cannot name a model after directory {str(model_dir)!r}: "
                                       f"give it a name, {flag} NAME={model_dir}", field=flag)
        if any(m.name == name for m in found):
            raise InvalidWorkflowError(f"model {name!r} is named twice (give each --model a "
                                       "distinct NAME=)", field=flag)
        found.append(ModelFlag(name, model_dir))
    return found


def urls_by_model(urls: list[str], models: list[ModelFlag], engine: str) -> dict[str, list[str]]:
    """Each model's --url endpoints (a bare URL is the default model's); every model needs one."""
    names = [m.name for m in models]
    out: dict[str, list[str]] = {n: [] for n in names}
    for value in urls:
        name, url = split_named(value)
        if name is not None and name not in out:
            raise InvalidWorkflowError(f"{value!r} names model {name!r}, which no --model "
                                       f"NAME=DIR gives (models: {', '.join(names)})",
                                       field="--url")
        out[name or names[0]].append(url)
    missing = [n for n, found in out.items() if not found]
    if missing:
        raise InvalidWorkflowError(
            f"--engine {engine} needs at least one --url for every model; none for "
            f"{', '.join(map(repr, missing))} (--url NAME=HOST:PORT)", field="--url")
    return out


def triton_models(values: list[str] | None, models: list[ModelFlag]) -> dict[str, str]:
    """Each model's Triton model name: its own ``NAME=MODEL``, else the bare one, else
    tensorrt_llm."""
    names = [m.name for m in models]
    default, own = DEFAULT_TRITON_MODEL, {}
    for value in values or []:
        name, triton_name = split_named(value)
        if not triton_name:
            raise InvalidWorkflowError(f"{value!r} names no Triton model", field="--triton-model")
        if name is None:
            default = triton_name
        elif name not in names:
            raise InvalidWorkflowError(f"{value!r} names model {name!r}, which no --model "
                                       f"NAME=DIR gives (models: {', '.join(names)})",
                                       field="--triton-model")
        else:
            own[name] = triton_name
    return {n: own.get(n, default) for n in names}
