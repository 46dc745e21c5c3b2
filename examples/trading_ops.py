"""Operators of the Trading workload: 19 agents, 88 LLM calls (see DESIGN.md's workload table)."""

from __future__ import annotations

import trading_prompts as T
from generate import call, const, inp, out

CONTEXT = "Ticker {ticker}, trading day {date}."


def trading_ops() -> list[dict]:
    ops = [inp("ticker"), inp("date"), const("preamble", T.PREAMBLE)]
    ops += _analysts(ops)
    ops += _research()
    proposals = []
    for style, style_text in T.TRADER_STYLES.items():
        for h, horizon in enumerate(T.HORIZONS, 1):
            branch = f"{style}_{h}"
            ops += _trader_branch(branch, style_text + f" Horizon: {horizon}.")
            proposals.append(branch)
    judged = "\n\n".join(f"Proposal {b}: {{trader_{b}}}\nRisk judge: {{risk_judge_{b}}}"
                         for b in proposals)
    ops += call("fund_manager", "{preamble}\n\n" + T.FUND_MANAGER,
                CONTEXT + "\n\nInvestment plan:\n{research_manager}\n\n" + judged, max_tokens=32)
    ops += [out("decision", "fund_manager"), out("plan", "research_manager")]
    return ops


def _analysts(ops_so_far) -> list[dict]:
    ops = []
    for desk, sources in T.DESKS.items():
        ops.append(const(f"{desk}_summarizer_sys", T.SOURCE_SUMMARIZER.format(desk=desk)))
        for i, source in enumerate(sources, 1):
            ops.append(inp(f"{desk}_{i}"))
            ops += call(f"{desk}_summary_{i}", "{preamble}\n\n{" + desk + "_summarizer_sys}",
                        CONTEXT + f"\n\nSource ({source}):\n{{{desk}_{i}}}", max_tokens=32)
        summaries = "\n".join(f"- {s}: {{{desk}_summary_{i}}}" for i, s in enumerate(sources, 1))
        ops += call(f"{desk}_report", "{preamble}\n\n" + T.DESK_ANALYST.format(desk=desk),
                    CONTEXT + "\n\nSummaries:\n" + summaries)
    return ops


REPORTS = ("Fundamentals report: {fundamentals_report}\nMarket report: {market_report}\n"
           "News report: {news_report}\nSocial report: {social_report}")


def _research() -> list[dict]:
    ops = []
    base = CONTEXT + "\n\n" + REPORTS
    ops += call("bull_1", "{preamble}\n\n" + T.BULL, base)
    ops += call("bear_1", "{preamble}\n\n" + T.BEAR, base + "\n\nBull argument:\n{bull_1}")
    ops += call("bull_2", "{preamble}\n\n" + T.BULL, base + "\n\nBear argument:\n{bear_1}")
    ops += call("bear_2", "{preamble}\n\n" + T.BEAR, base + "\n\nBull argument:\n{bull_2}")
    debate = "Bull: {bull_1}\nBear: {bear_1}\nBull: {bull_2}\nBear: {bear_2}"
    ops += call("research_manager", "{preamble}\n\n" + T.RESEARCH_MANAGER,
                base + "\n\nDebate:\n" + debate)
    return ops


def _trader_branch(b: str, style: str) -> list[dict]:
    ops = call(f"trader_{b}", "{preamble}\n\n" + T.TRADER + "\n" + style,
               CONTEXT + "\n\nInvestment plan:\n{research_manager}", max_tokens=32)
    proposal = CONTEXT + f"\n\nTrader proposal:\n{{trader_{b}}}"
    said: list[str] = []
    for rnd in (1, 2):
        for role in ("risky", "safe", "neutral"):
            debate = "\n".join(said) or "(no arguments yet)"
            op_id = f"{role}_{b}_{rnd}"
            ops += call(op_id, "{preamble}\n\n" + T.RISK[role],
                        proposal + "\n\nRisk debate so far:\n" + debate, max_tokens=32)
            said.append(f"{role.capitalize()}: {{{op_id}}}")
    ops += call(f"risk_judge_{b}", "{preamble}\n\n" + T.RISK_JUDGE,
                proposal + "\n\nRisk debate:\n" + "\n".join(said), max_tokens=32)
    return ops
