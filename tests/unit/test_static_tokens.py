"""A server's runs keep the ids of workflows' static text (runtime.static_tokens): a later run
of a workflow tokenizes none of it again and plans exactly the calls a fresh run plans; the
memo is per model (another tokenizer under the same name starts afresh) and per tenant."""

from __future__ import annotations

from pathlib import Path

from helium_trt.engine.base import EngineInfo
from helium_trt.engine.embedded.tiny_model import TinyModelConfig, build_tiny_model
from helium_trt.engine.tokenizer import HFTokenizer
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import ConstantOp, FormatOp, InputOp, LlmOp, Message, OutputOp, Ref
from helium_trt.runtime.models import ModelSet
from helium_trt.runtime.options import RunOptions
from helium_trt.runtime.planning import RuntimeCaches, prepare_run
from helium_trt.runtime.static_tokens import StaticTokens

SYSTEM = "You answer questions about ledgers, briefly and exactly. " * 8
ROWS = ({"q": "What is a debit?"}, {"q": "What is a credit?"})


class _CountingTokenizer:
    """An HFTokenizer that records the texts planning asks it to tokenize as text."""

    def __init__(self, model_dir: Path) -> None:
        self._inner = HFTokenizer.from_dir(model_dir)
        self.chat_format = self._inner.chat_format
        self.stable_prefixes: list[str] = []
        self.encoded: list[str] = []

    def encode(self, text):
        self.encoded.append(text)
        return self._inner.encode(text)

    def encode_prompt(self, text, memo=None):
        return self._inner.encode_prompt(text, memo)

    def stable_prefix(self, text, memo=None):
        self.stable_prefixes.append(text)
        return self._inner.stable_prefix(text, memo)


class _TokenizerOnlyEngine:
    def __init__(self, model_dir: Path) -> None:
        self.tokenizer = _CountingTokenizer(model_dir)
        self.info = EngineInfo(model_dir.name, block_size=16, num_blocks=4096,
                               max_model_len=8192, vocab_size=0, eos_token_ids=())

    def num_resident_tokens(self, token_ids, **scope) -> int:
        return 0


def two_step_plan() -> Plan:
    """An answer (known at plan time) and a check that reads it (known up to the answer)."""
    return Plan((
        InputOp("q", column="q"), ConstantOp("sys", text=SYSTEM),
        FormatOp("a_p", messages=(Message("system", (Ref("sys"),)),
                                  Message("user", ("Question: ", Ref("q"))))),
        LlmOp("a", prompt="a_p", mode="chat"),
        FormatOp("c_p", messages=(Message("system", (Ref("sys"),)),
                                  Message("user", ("Check this answer to ", Ref("q"), ": ",
                                                   Ref("a"), "\nIs it right?")))),
        LlmOp("c", prompt="c_p", mode="chat"),
        OutputOp("o", input="c")), rows=ROWS)


def static_prefixes(texts: list[str]) -> list[str]:
    """The texts that are an operator's static prefix (they end where its first value goes)."""
    return [t for t in texts if t.endswith(("Question: ", "answer to "))]


def planned(prepared) -> tuple:
    calls = prepared.calls
    return (calls.specs, calls.packed, prepared.schedule.order, prepared.schedule.warm)


def test_a_later_run_tokenizes_no_static_text_and_plans_what_a_fresh_run_plans(tiny_model_dir):
    engine = _TokenizerOnlyEngine(Path(tiny_model_dir))
    tok, caches, plan = engine.tokenizer, RuntimeCaches(), two_step_plan()
    first = prepare_run(plan, ROWS, [engine], RunOptions(), caches)
    heads = static_prefixes(tok.stable_prefixes)
    assert len(heads) == 2 and tok.encoded  # both static prefixes, and c's literal tail
    tok.stable_prefixes.clear()
    tok.encoded.clear()
    later = prepare_run(plan, ROWS, [engine], RunOptions(), caches)
    assert not set(tok.stable_prefixes) & set(heads) and not tok.encoded
    assert all("What is a" in t for t in tok.stable_prefixes)  # only text holding row values
    fresh = prepare_run(plan, ROWS, [engine], RunOptions(), RuntimeCaches())
    assert planned(later) == planned(first) == planned(fresh)
    assert planned(first)[0]["c#1"].static_len > len(tok.encode(SYSTEM)) // 2


def test_each_tenant_keeps_its_own_static_tokens(tiny_model_dir):
    engine = _TokenizerOnlyEngine(Path(tiny_model_dir))
    tok, caches, plan = engine.tokenizer, RuntimeCaches(), two_step_plan()
    runs = {}
    for salt in ("tenant-a", "tenant-b", "tenant-a"):
        tok.stable_prefixes.clear()
        prepared = prepare_run(plan, ROWS, [engine], RunOptions(cache_salt=salt), caches)
        runs.setdefault(salt, []).append((planned(prepared), list(tok.stable_prefixes)))
    (a_first, a_heads), (a_later, a_later_heads) = runs["tenant-a"]
    ((b_planned, b_heads),) = runs["tenant-b"]
    heads = set(static_prefixes(a_heads))
    assert heads and heads <= set(b_heads)  # tenant b tokenized them itself
    assert not heads & set(a_later_heads)
    assert a_first == a_later == b_planned


def test_another_tokenizer_under_the_same_model_name_starts_afresh(tiny_model_dir, tmp_path):
    other_dir = build_tiny_model(tmp_path / "other", TinyModelConfig(vocab_size=600))
    engine, other = _TokenizerOnlyEngine(Path(tiny_model_dir)), _TokenizerOnlyEngine(other_dir)
    caches, plan = RuntimeCaches(), two_step_plan()
    mine = prepare_run(plan, ROWS, ModelSet.single([engine], "m"), RunOptions(), caches)
    theirs = prepare_run(plan, ROWS, ModelSet.single([other], "m"), RunOptions(), caches)
    fresh = prepare_run(plan, ROWS, ModelSet.single([other], "m"), RunOptions(), RuntimeCaches())
    assert planned(theirs) == planned(fresh) != planned(mine)
    assert caches.static_tokens.scope("m", None, other.tokenizer) is \
        caches.static_tokens.scope("m", None, other.tokenizer)


def test_a_full_scope_starts_afresh_and_an_oversized_text_is_not_kept():
    static = StaticTokens(tokenizer=None, max_size=100)
    static.add_prefix("a" * 40, (1, 2), [(("a" * 10, True), (1,))])
    assert static.prefix("a" * 40) == (1, 2) and static.chunks() == {("a" * 10, True): (1,)}
    assert static.size == 40 + 2 + 10 + 1
    static.add_text("b" * 60, (3,))  # 61 more would pass 100: everything kept goes first
    assert static.prefix("a" * 40) is None and not static.chunks()
    assert static.text("b" * 60) == (3,) and static.size == 61
    static.add_text("c" * 200, (4,))
    assert static.text("c" * 200) is None and static.text("b" * 60) == (3,)
