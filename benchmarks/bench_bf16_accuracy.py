"""How far the engine's bf16 logits are from its float32 logits, with the native kernels and with
torch's ops: README.md and docs/benchmarks.md (2,048 tokens) prefilled in chunks over a scattered
paged pool, one torch thread.

    python benchmarks/bench_bf16_accuracy.py [--chunk 512] [--tokens 2048] [--decode N]

Prints, per chunk and path, the mean absolute logit error and how often the argmax (the greedy
token) agrees with float32's. With ``--decode N`` the last N tokens go one a step through decode
attention instead (teacher-forced: each step feeds the text's next token), so the figures are
the decode kernel's.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from helium_trt.engine.embedded import native
from helium_trt.engine.embedded.loader import load_model
from helium_trt.engine.embedded.model import AttentionBatch, DecodeGroup, PrefillSegment
from helium_trt.engine.tokenizer import HFTokenizer

BS = 16
ROOT = Path(__file__).resolve().parent.parent


def _logits(model_dir: str, dtype: torch.dtype, ids: list[int], chunk: int, decode: int) -> torch.Tensor:
    model = load_model(model_dir, dtype)
    num_blocks = len(ids) // BS + 8
    kv = model.allocate_kv_cache(num_blocks, BS)
    blocks = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(1))[:-(-len(ids) // BS)]
    slots = (blocks[:, None] * BS + torch.arange(BS)).view(-1)
    out = []
    with torch.inference_mode():
        prefilled = len(ids) - decode
        for start in range(0, prefilled, chunk):
            end = min(prefilled, start + chunk)
            batch = AttentionBatch(slots[start:end], [PrefillSegment(0, end - start, blocks, end)], [])
            hidden = model.forward(torch.tensor(ids[start:end]), torch.arange(start, end), batch, kv)
            out.append(model.logits(hidden))
        for pos in range(prefilled, len(ids)):
            batch = AttentionBatch(slots[pos:pos + 1], [], [DecodeGroup(0, blocks[None], torch.tensor([pos + 1]))])
            hidden = model.forward(torch.tensor(ids[pos:pos + 1]), torch.tensor([pos]), batch, kv)
            out.append(model.logits(hidden))
    return torch.cat(out).float()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct"))
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--decode", type=int, default=0, help="tokens at the end decoded one a step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = (ROOT / "README.md").read_text() + (ROOT / "docs" / "benchmarks.md").read_text()
    ids = HFTokenizer.from_dir(args.model).encode(text)[:args.tokens]
    reference = _logits(args.model, torch.float32, ids, args.chunk, args.decode)
    for label, switch in (("native kernels", "1"), ("torch ops", "0")):
        os.environ[native.DISABLE_ENV] = switch
        logits = _logits(args.model, torch.bfloat16, ids, args.chunk, args.decode)
        for start in range(len(ids) - args.decode, len(ids), args.chunk):  # the decoded rows only, if any
            rows = slice(start, min(len(ids), start + args.chunk))
            error = (logits[rows] - reference[rows]).abs().mean().item()
            agree = (logits[rows].argmax(-1) == reference[rows].argmax(-1)).float().mean().item()
            print(f"bf16, {label}: tokens {rows.start}-{rows.stop}: mean abs logit error {error:.4f}, "
                  f"argmax agrees with float32 on {agree * 100:.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
