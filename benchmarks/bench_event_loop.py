"""How long tokenizing a large text stalls an asyncio event loop when it runs in a worker thread.

A probe on the loop sleeps 1 ms in a loop and records the longest gap while a worker thread
encodes ``--bytes`` of text with the tokenizers library's ``encode`` (holds the GIL throughout)
and with ``encode_batch`` (releases it), then with the server's own ``HFTokenizer.encode_prompt``.
A gap near the whole encode time means the loop, so every other RPC, was frozen.
Usage: python benchmarks/bench_event_loop.py [--bytes 3000000] [--model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from helium_trt.engine.tokenizer import HFTokenizer

ROOT = Path(__file__).resolve().parent.parent
SENTENCE = "The quarterly revenue rose by 12 percent while costs fell. "


async def _worst_gap_while(work) -> tuple[float, float]:
    """(seconds ``work`` took in a worker thread, longest event-loop gap meanwhile)."""
    stop, worst = asyncio.Event(), 0.0

    async def probe():
        nonlocal worst
        while not stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - start)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0.02)
    start = time.perf_counter()
    await asyncio.to_thread(work)
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    return elapsed, worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=3_000_000)
    parser.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct"))
    args = parser.parse_args()
    tok = HFTokenizer.from_dir(args.model)
    rust = tok._tokenizer  # noqa: SLF001 - the raw library calls are what is compared
    text = (SENTENCE * (args.bytes // len(SENTENCE) + 1))[:args.bytes]
    seconds = len(text) / 1_000_000  # about the encode time: a baseline for the machine's noise
    cases = {
        "time.sleep (baseline)": lambda: time.sleep(seconds),
        "tokenizers encode": lambda: rust.encode(text, add_special_tokens=False).ids,
        "tokenizers encode_batch":
            lambda: rust.encode_batch([text], add_special_tokens=False)[0].ids,
        "HFTokenizer.encode_prompt": lambda: tok.encode_prompt(text),
    }
    print(f"{args.bytes:,} bytes, encoded in a worker thread:")
    for name, work in cases.items():
        elapsed, worst = asyncio.run(_worst_gap_while(work))
        print(f"  {name:26s} {elapsed:6.2f} s, longest event-loop gap {worst * 1000:7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
