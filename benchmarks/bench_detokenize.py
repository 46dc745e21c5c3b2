"""Per-token cost of streamed output text (engine.output_text.OutputText) as an output grows:
the tokenizers library's DecodeStream (one token decoded per step) against decoding the whole
output every step (what OutputText did before, and still does for a tokenizer without a stream).

The output is the example workflows' text (with multi-byte characters) tokenized, repeated up to
the longest length; a stop string that never matches keeps the stop-string scan in the loop.
Usage: python benchmarks/bench_detokenize.py [--model DIR] [--lengths 256 1024 4096] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from helium_trt.engine.config import default_model_dir
from helium_trt.engine.output_text import OutputText
from helium_trt.engine.tokenizer import HFTokenizer

ROOT = Path(__file__).resolve().parent.parent


class _WholeDecode:
    """The tokenizer without ``new_decode_stream``: OutputText decodes the whole output."""

    def __init__(self, tokenizer: HFTokenizer):
        self.decode = tokenizer.decode


def _output_ids(tokenizer: HFTokenizer, length: int) -> list[int]:
    text = "\n".join(p.read_text() for p in sorted((ROOT / "examples").glob("*.yaml")))
    ids = tokenizer.encode(text + " naïve café — 日本語のテキスト 🚀 ")
    return (ids * (length // len(ids) + 1))[:length]


def _us_per_token(tokenizer, ids: list[int], last: int) -> float:
    """Mean microseconds of one update over the ``last`` updates (the longest outputs)."""
    text = OutputText(tokenizer, ("<never there>",))
    for n in range(1, len(ids) - last + 1):
        text.update(ids[:n])
    start = time.perf_counter()
    for n in range(len(ids) - last + 1, len(ids) + 1):
        text.update(ids[:n])
    return (time.perf_counter() - start) / last * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tokenizer = HFTokenizer.from_dir(args.model)
    print(f"tokenizer: {args.model}; us per token over the last 64 tokens, median of {args.repeat}")
    print("| output tokens | whole decode (before) | DecodeStream | ratio |")
    print("|---:|---:|---:|---:|")
    for length in args.lengths:
        ids = _output_ids(tokenizer, length)
        whole = statistics.median(_us_per_token(_WholeDecode(tokenizer), ids, 64)
                                  for _ in range(args.repeat))
        streamed = statistics.median(_us_per_token(tokenizer, ids, 64) for _ in range(args.repeat))
        print(f"| {length} | {whole:.1f} | {streamed:.1f} | {whole / streamed:.1f}x |")


if __name__ == "__main__":
    main()
