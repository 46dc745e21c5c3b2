"""Streamed output text (engine.output_text on the tokenizers library's DecodeStream): the deltas
add up to ``tokenizer.decode`` of all the output tokens, never show a half character, and stop
strings are found across token boundaries; on real tokenizers and the tiny model's outputs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from tokenizers import Tokenizer, decoders, models, normalizers

from helium_trt.engine.base import EngineRequest, SamplingConfig, TokenDelta
from helium_trt.engine.config import default_model_dir
from helium_trt.engine.output_text import OutputText
from helium_trt.engine.tokenizer import HFTokenizer

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
MULTI_BYTE = "naïve café — 日本語のテキスト, 🚀🚀 and ñ; Ω≈ç√∫ 한국어 end"


def stream(tokenizer, token_ids, stop_strings=()) -> tuple[list[str], OutputText, bool]:
    """Feed ``token_ids`` one at a time as the engine does; the deltas, the text, stopped."""
    text = OutputText(tokenizer, tuple(stop_strings))
    deltas = []
    for n in range(1, len(token_ids) + 1):
        update = text.update(token_ids[:n])
        deltas.append(update.delta)
        if update.stopped:
            break
    deltas.append(text.flush())
    return deltas, text, update.stopped


def strings_of(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings_of(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings_of(value)]
    return []


def real_tokenizers(tiny_model_dir) -> list[HFTokenizer]:
    found = [HFTokenizer.from_dir(tiny_model_dir)]
    if (default_model_dir() / "tokenizer.json").is_file():
        found.append(HFTokenizer.from_dir(default_model_dir()))
    return found


class WholeDecode:
    """The same tokenizer without a streaming decoder: OutputText decodes the whole output."""

    def __init__(self, tokenizer: HFTokenizer):
        self.decode = tokenizer.decode


def test_every_example_text_streams_to_its_whole_decode(tiny_model_dir):
    for tokenizer in real_tokenizers(tiny_model_dir):
        for path in EXAMPLES:
            text = "\n".join(strings_of(yaml.safe_load(path.read_text()))) + MULTI_BYTE
            ids = tokenizer.encode(text)
            deltas, out, _ = stream(tokenizer, ids)
            assert "".join(deltas) == out.text == tokenizer.decode(ids), path.name
            assert not any("\ufffd" in d for d in deltas), path.name


def test_a_tokenizer_without_a_stream_decodes_the_whole_output(tiny_model_dir):
    tokenizer = HFTokenizer.from_dir(tiny_model_dir)
    ids = tokenizer.encode(MULTI_BYTE)
    for stop in ((), ("🚀",)):
        whole, streamed = stream(WholeDecode(tokenizer), ids, stop), stream(tokenizer, ids, stop)
        assert "".join(whole[0]) == whole[1].text == "".join(streamed[0]) == streamed[1].text


def test_tiny_model_outputs_stream_to_their_whole_decode(embedded_engine):
    """Greedy outputs of a random-weight model: arbitrary byte-level tokens, split characters."""
    tokenizer = embedded_engine.tokenizer
    prompts = [tokenizer.encode(path.read_text()[:400])[:64] for path in EXAMPLES]
    prompts.append(tokenizer.encode(MULTI_BYTE))

    async def one(index, prompt):
        sampling = SamplingConfig(max_tokens=48, ignore_eos=True)
        request = EngineRequest(f"out-{index}", tuple(prompt), sampling)
        deltas, result = [], None
        async for item in embedded_engine.generate(request):
            if isinstance(item, TokenDelta):
                deltas.append(item.text)
            else:
                result = item
        return deltas, result

    async def main():
        return await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))

    for deltas, result in asyncio.run(main()):
        assert result.finish_reason == "length" and len(result.output_token_ids) == 48
        assert "".join(deltas) == result.text == tokenizer.decode(result.output_token_ids)


def test_a_character_split_across_tokens_is_never_shown_in_part(tiny_model_dir):
    tokenizer = HFTokenizer.from_dir(tiny_model_dir)
    ids = tokenizer.encode("🚀")
    assert len(ids) > 1  # a byte-level tokenizer that has not learnt the emoji
    deltas, out, _ = stream(tokenizer, ids)
    assert deltas[:-1] == [""] * (len(ids) - 1) + ["🚀"] and out.text == "🚀"
    cut, out, _ = stream(tokenizer, ids[:-1])  # the output ends mid-character
    assert "".join(cut) == out.text == tokenizer.decode(ids[:-1]) and out.text.endswith("\ufffd")


def test_stop_string_across_token_boundaries_and_inside_a_character(tiny_model_dir):
    tokenizer = HFTokenizer.from_dir(tiny_model_dir)
    ids = tokenizer.encode(MULTI_BYTE)
    for stop in ("テキスト", "🚀", "ñ; Ω", "d"):
        deltas, out, stopped = stream(tokenizer, ids, [stop])
        expected = MULTI_BYTE[:MULTI_BYTE.index(stop)]
        assert stopped and "".join(deltas) == out.text == expected, stop
        assert not any("\ufffd" in d for d in deltas), stop
    deltas, out, stopped = stream(tokenizer, ids, ["never there"])
    assert not stopped and "".join(deltas) == out.text == MULTI_BYTE


@pytest.fixture(scope="module")
def byte_fallback_tokenizer(tmp_path_factory) -> HFTokenizer:
    """A Llama/Mistral-style tokenizer: sentencepiece BPE whose unknown characters become
    <0xNN> byte tokens, decoded by ByteFallback (written as tokenizer.json, loaded as a model's)."""
    letters = sorted(set("abcdefghijklmnopqrstuvwxyz▁.,"))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    vocab.update({c: 259 + i for i, c in enumerate(letters)})
    vocab["▁t"], vocab["he"] = len(vocab), len(vocab) + 1
    model = models.BPE(vocab=vocab, merges=[("▁", "t"), ("h", "e")], unk_token="<unk>",
                       byte_fallback=True, fuse_unk=True)
    rust = Tokenizer(model)
    rust.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                            normalizers.Replace(" ", "▁")])
    rust.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                      decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    rust.add_special_tokens(["<s>", "</s>"])
    directory = tmp_path_factory.mktemp("byte_fallback")
    rust.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    return HFTokenizer.from_dir(directory)


def test_byte_fallback_tokens_stream_to_their_whole_decode(byte_fallback_tokenizer):
    tokenizer = byte_fallback_tokenizer
    text = "the café serves 日本 tea, ñ and 🚀."
    ids = tokenizer.encode(text)
    assert tokenizer.token_to_id("<0xF0>") in ids  # the emoji's first byte, as a byte token
    deltas, out, _ = stream(tokenizer, ids)
    assert "".join(deltas) == out.text == tokenizer.decode(ids) == text
    assert not any("\ufffd" in d for d in deltas)
    with_eos = ids + [tokenizer.token_to_id("</s>")]  # a skipped special token at the end
    assert "".join(stream(tokenizer, with_eos)[0]) == text
    deltas, out, stopped = stream(tokenizer, ids, ["本 t"])
    assert stopped and "".join(deltas) == out.text == "the café serves 日"
    cut = ids[:ids.index(tokenizer.token_to_id("<0xF0>")) + 2]  # two of the emoji's four bytes
    assert "".join(stream(tokenizer, cut)[0]) == tokenizer.decode(cut)
