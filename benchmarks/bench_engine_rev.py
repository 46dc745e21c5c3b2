"""bench-engine's step figures (engine/embedded/bench_steps.py: prefill tokens/s at 1,024 and 2,048
tokens, the decode step at 8 sequences) for whichever helium_trt comes first on sys.path, so
another revision can be measured against the work tree, one process each, alternating:

    git archive REV helium_trt | tar -x -C /tmp/old
    for i in 1 2; do
      PYTHONPATH=/tmp/old python benchmarks/bench_engine_rev.py old$i
      python benchmarks/bench_engine_rev.py new$i
    done

The step-figure code comes from this file's work tree either way. One line of JSON each.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

_STEPS = Path(__file__).resolve().parents[1] / "helium_trt" / "engine" / "embedded" / "bench_steps.py"


def main() -> int:
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("work_tree_bench_steps", _STEPS)
    steps = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = steps  # dataclasses look their module up while the class is made
    spec.loader.exec_module(steps)
    import helium_trt
    from helium_trt.engine.config import EngineConfig
    try:
        from helium_trt.engine.embedded.engine import EmbeddedEngine
    except ImportError:  # a revision from before the engine moved into engine/embedded/
        from helium_trt.engine.embedded import EmbeddedEngine

    model_dir = sys.argv[2] if len(sys.argv) > 2 else "models/SmolLM2-135M-Instruct"
    engine = EmbeddedEngine(EngineConfig(model_dir=model_dir, dtype="bfloat16", num_threads=1))
    try:
        figures = asyncio.run(steps.step_figures(engine, engine.tokenizer, steps.StepBenchConfig(),
                                                 steps.process_cpu_seconds,
                                                 f"{sys.argv[1]}-{time.time_ns()}", lambda line: None))
    finally:
        asyncio.run(engine.close())
    print(json.dumps({"tag": sys.argv[1], "package": str(Path(helium_trt.__file__).parents[1]), **figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
