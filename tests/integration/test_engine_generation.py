"""EmbeddedEngine behaviour: sampling determinism, stops, streaming, prefix reuse, warm-up."""

from __future__ import annotations

import asyncio

from engine_helpers import collect, request, run_all

from helium_trt.engine.base import Engine, RequestResult, RetentionRange
from helium_trt.engine.config import EngineConfig
from helium_trt.engine.embedded.engine import EmbeddedEngine


def _prompt(engine, text="Name three primary colors. ", times=3):
    return engine.tokenizer.encode(text * times)


def test_engine_satisfies_the_protocol(embedded_engine):
    assert isinstance(embedded_engine, Engine)
    assert embedded_engine.tokenizer.chat_format.render([{"role": "user", "content": "hi"}], True) \
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert embedded_engine.info.eos_token_ids == (2,)


def test_seeded_sampling_is_independent_of_batch_company(embedded_engine):
    prompt = _prompt(embedded_engine)
    sampling = dict(max_tokens=24, temperature=0.9, top_p=0.9, top_k=50, seed=1234, ignore_eos=True)
    [alone] = run_all(embedded_engine, [request("alone", prompt, **sampling)])
    company = [request(f"other{i}", _prompt(embedded_engine, "What is the capital of France? ", i + 1),
                       max_tokens=30, temperature=1.0, seed=i, ignore_eos=True) for i in range(5)]
    results = run_all(embedded_engine, company[:2] + [request("crowded", prompt, **sampling)] + company[2:])
    assert results[2].output_token_ids == alone.output_token_ids
    [other_seed] = run_all(embedded_engine, [request("seed2", prompt, **{**sampling, "seed": 99})])
    assert other_seed.output_token_ids != alone.output_token_ids


def test_stop_strings_cut_text_and_stream_matches_result(embedded_engine):
    prompt = _prompt(embedded_engine)
    [free] = run_all(embedded_engine, [request("free", prompt, max_tokens=40, ignore_eos=True)])
    text = free.text
    stop = text[len(text) // 2: len(text) // 2 + 3]
    assert stop.strip(), "the tiny model should produce varied text"

    async def main():
        return await collect(embedded_engine, request("stopped", prompt, max_tokens=40, ignore_eos=True,
                                                        stop_strings=(stop,)))

    deltas, result = asyncio.run(main())
    assert result.finish_reason == "stop"
    assert result.text == text[:text.find(stop)]
    assert "".join(d.text for d in deltas) == result.text
    assert [t for d in deltas for t in d.token_ids] == list(result.output_token_ids)


def test_stop_token_ids_and_max_tokens(embedded_engine):
    prompt = _prompt(embedded_engine)
    [free] = run_all(embedded_engine, [request("free", prompt, max_tokens=12, ignore_eos=True)])
    assert free.finish_reason == "length" and len(free.output_token_ids) == 12
    stop_id = free.output_token_ids[5]
    first = free.output_token_ids.index(stop_id)
    [stopped] = run_all(embedded_engine, [request("s", prompt, max_tokens=12, ignore_eos=True,
                                                 stop_token_ids=(stop_id,))])
    assert stopped.finish_reason == "stop"
    assert stopped.output_token_ids == free.output_token_ids[:first + 1]


def test_prefix_reuse_counts_cached_tokens(embedded_engine):
    engine = embedded_engine
    shared = _prompt(engine, "The primary colors are red, blue and yellow. ", 8)[:64]
    first = shared + engine.tokenizer.encode("First question about colors?") * 3
    second = shared + engine.tokenizer.encode("Another one here?")
    assert first[64] != second[64]
    [a] = run_all(engine, [request("a", first, max_tokens=4)])
    assert (a.num_cached_tokens, a.num_computed_tokens) == (0, len(first))
    assert engine.num_resident_tokens(second) == 64
    [b] = run_all(engine, [request("b", second, max_tokens=4)])
    assert (b.num_cached_tokens, b.num_computed_tokens) == (64, len(second) - 64)
    assert b.num_cached_tokens + b.num_computed_tokens == b.num_prompt_tokens == len(second)


def test_partly_matching_block_is_copied_and_reused_token_by_token(embedded_engine):
    engine = embedded_engine
    base = _prompt(engine, "Paris is the capital of France. ", 6)
    assert len(base) > 40
    [_] = run_all(engine, [request("base", base, max_tokens=2)])
    diverging = base[:37] + engine.tokenizer.encode(" Mixing red and blue gives purple.")
    assert engine.num_resident_tokens(diverging) == 37  # two whole blocks and 5 tokens of a third
    [reused] = run_all(engine, [request("reused", diverging, max_tokens=12, ignore_eos=True)])
    assert reused.num_cached_tokens == 37
    cold = EmbeddedEngine(EngineConfig(model_dir=str(engine.config.model_dir), num_blocks=64, dtype="float32"))
    try:
        [reference] = run_all(cold, [request("cold", diverging, max_tokens=12, ignore_eos=True)])
    finally:
        asyncio.run(cold.close())
    assert reference.num_cached_tokens == 0
    assert reused.output_token_ids == reference.output_token_ids


def test_fully_cached_prompt_still_computes_its_last_token(embedded_engine):
    engine = embedded_engine
    prompt = _prompt(engine, "What is the capital of France? ", 8)[:48]
    assert len(prompt) == 48
    [first] = run_all(engine, [request("one", prompt, max_tokens=3, ignore_eos=True)])
    [again] = run_all(engine, [request("two", prompt, max_tokens=3, ignore_eos=True)])
    assert (again.num_cached_tokens, again.num_computed_tokens) == (47, 1)
    assert again.output_token_ids == first.output_token_ids
    warm = asyncio.run(engine.warm(prompt))
    assert (warm.num_cached_tokens, warm.num_computed_tokens) == (48, 0)


def test_warm_then_generate_reuses_the_prefix_and_matches_cold_output(embedded_engine):
    engine = embedded_engine
    prompt = _prompt(engine, "Paris is the capital of France. ", 10)
    [cold] = run_all(engine, [request("cold", prompt, max_tokens=8, ignore_eos=True)])
    other = engine.tokenizer.encode("Mixing red and blue gives purple. ") + prompt[1:]
    warm = asyncio.run(engine.warm(other[:70], [RetentionRange(0, None, 90)]))
    assert (warm.num_prompt_tokens, warm.num_computed_tokens) == (70, 70)
    again = asyncio.run(engine.warm(other[:70]))  # 4 whole blocks and the tail block's 6 tokens
    assert again.num_cached_tokens == 70 and again.num_computed_tokens == 0
    [hot] = run_all(engine, [request("hot", other, max_tokens=8, ignore_eos=True)])
    assert hot.num_cached_tokens == 70
    [cold_other] = run_all(engine, [request("cold2", other, max_tokens=8, ignore_eos=True)])
    assert hot.output_token_ids == cold_other.output_token_ids
    assert cold.num_cached_tokens == 0


def test_closing_the_stream_cancels_the_request(embedded_engine):
    prompt = _prompt(engine := embedded_engine)

    async def main():
        stream = engine.generate(request("c", prompt, max_tokens=500, ignore_eos=True))
        async for item in stream:
            assert not isinstance(item, RequestResult)
            break
        await stream.aclose()  # a step in flight finishes first, then the blocks are freed
        async with asyncio.timeout(30):
            while engine.num_held_blocks():
                await asyncio.sleep(0.01)

    asyncio.run(main())
    assert engine.num_held_blocks() == 0 and not engine._core.has_request("c")


def test_decode_in_length_groups_gives_the_one_group_tokens(embedded_engine, monkeypatch):
    # Sequences of very different lengths decode together; with a group size of one slot every
    # sequence gets its own decode attention group, which must not change a single token.
    import dataclasses

    import helium_trt.engine.embedded.runner as runner

    def requests(tag):
        return [dataclasses.replace(
            request(f"{tag}{i}", _prompt(embedded_engine, "Colors of the rainbow, in order. ", 1 + 4 * i),
                    max_tokens=12, ignore_eos=True), reuse_prefix=False) for i in range(6)]

    one_group = run_all(embedded_engine, requests("one"))
    monkeypatch.setattr(runner, "DECODE_GROUP_SLOTS", 1)
    many_groups = run_all(embedded_engine, requests("many"))
    assert [r.output_token_ids for r in many_groups] == [r.output_token_ids for r in one_group]
    assert len({r.output_token_ids for r in one_group}) > 1


def test_decode_groups_sort_by_length_and_bound_the_padded_slots(monkeypatch):
    import helium_trt.engine.embedded.runner as runner
    from helium_trt.engine.base import EngineRequest, SamplingConfig
    from helium_trt.engine.embedded.sequence import Sequence

    monkeypatch.setattr(runner, "DECODE_GROUP_SLOTS", 64)
    seqs = [Sequence.from_request(EngineRequest(f"s{n}", tuple(range(n)), SamplingConfig()), i)
            for i, n in enumerate((40, 5, 17, 16, 70, 3))]
    groups = runner._decode_groups(seqs, 16)
    assert [[len(s.token_ids) for s in g] for g in groups] == [[3, 5, 16], [17], [40], [70]]
