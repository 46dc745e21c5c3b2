"""Writes the example workflow files (examples/*.yaml) from the prompts in this folder.

The YAML files are the artefacts users read, edit and send (RunRequest in the protobuf JSON
mapping); this script only keeps their many similar operators consistent.
Usage: python examples/generate.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import prompts as P  # noqa: E402
import sample_rows as R  # noqa: E402
import trading_prompts as T  # noqa: E402

MAX_TOKENS = 48


# ---- operator builders (protobuf JSON mapping of helium.v1.Operator) -------------------------

def inp(op_id):
    return {"id": op_id, "input": {"column": op_id}}


def const(op_id, text):
    return {"id": op_id, "constant": {"text": text}}


def chat(op_id, system, user, history=None):
    messages = [{"role": "ROLE_SYSTEM", "template": system}] if system is not None else []
    if history:
        messages = [{"history": history}]
    messages.append({"role": "ROLE_USER", "template": user})
    return {"id": op_id, "format": {"messages": messages}}


def llm(op_id, prompt, max_tokens=MAX_TOKENS, history=False):
    body = {"prompt": prompt, "mode": "LLM_MODE_CHAT",
            "config": {"maxTokens": max_tokens, "temperature": 0}}
    if history:
        body["returnHistory"] = True
    return {"id": op_id, "llm": body}


def call(op_id, system, user, **kw):
    """A chat prompt format ``{op_id}_p`` and its LLM call ``op_id``."""
    history = kw.pop("history_in", None)
    return [chat(op_id + "_p", system, user, history), llm(op_id, op_id + "_p", **kw)]


def out(op_id, src):
    return {"id": op_id, "output": {"input": src, "name": op_id}}


def request(name, ops, rows):
    return {"workflow": {"name": name, "ops": ops}, "rows": rows}


# ---- workloads -------------------------------------------------------------------------------

def map_reduce():
    ops = [inp("context"), inp("question"), const("expert_sys", P.MAP_REDUCE_SYSTEM),
           const("chair_sys", P.SUMMARIZER_SYSTEM)]
    user = "Reference context:\n{context}\n\nQuestion: {question}"
    for i, role in enumerate(P.MAP_REDUCE_ROLES, 1):
        ops += call(f"expert_{i}", "{expert_sys}\n\nYour perspective: " + role + ".", user)
    replies = "\n\n".join(f"Panelist {i}: {{expert_{i}}}" for i in range(1, 15))
    ops += call("summary", "{chair_sys}", user + "\n\nPanel replies:\n" + replies, max_tokens=64)
    ops.append(out("answer", "summary"))
    return request("map_reduce", ops, R.MAP_REDUCE)


def debate():
    ops = [inp("question"), const("debate_sys", P.DEBATE_SYSTEM), const("judge_sys", P.JUDGE_SYSTEM)]
    user = "Question: {question}"
    for a, stance in enumerate(P.DEBATE_STANCES, 1):
        ops += call(f"agent_{a}_r1", "{debate_sys}\n\n" + stance, user)
    for a, stance in enumerate(P.DEBATE_STANCES, 1):
        others = "\n\n".join(f"Agent {b}: {{agent_{b}_r1}}" for b in (1, 2, 3) if b != a)
        ops.append({"id": f"agent_{a}_r2_p", "format": {"messages": [
            {"role": "ROLE_SYSTEM", "template": "{debate_sys}\n\n" + stance},
            {"role": "ROLE_USER", "template": user},
            {"role": "ROLE_ASSISTANT", "template": f"{{agent_{a}_r1}}"},
            {"role": "ROLE_USER", "template": "The other agents answered:\n\n" + others
             + "\n\nReconsider and give your updated answer."}]}})
        ops.append(llm(f"agent_{a}_r2", f"agent_{a}_r2_p", history=True))
    transcripts = "\n\n".join(f"Transcript of agent {a}:\n{{agent_{a}_r2}}" for a in (1, 2, 3))
    ops += call("judge", "{judge_sys}", user + "\n\n" + transcripts)
    ops.append(out("verdict", "judge"))
    return request("debate", ops, R.DEBATE)


def reflection():
    ops = [inp("background"), inp("question"), const("expert_sys", P.REFLECTION_EXPERT),
           const("critic_sys", P.REFLECTION_CRITIC), const("refiner_sys", P.REFINER_SYSTEM)]
    user = "Background material:\n{background}\n\nQuestion: {question}"
    ops += call("draft", "{expert_sys}", user, max_tokens=64)
    for i, angle in enumerate(P.REFLECTION_ANGLES, 1):
        ops += call(f"critic_{i}", "{critic_sys}\n\n" + angle, user + "\n\nDraft:\n{draft}")
    reviews = "\n\n".join(f"Review {i}: {{critic_{i}}}" for i in (1, 2, 3))
    ops += call("refined", "{refiner_sys}", user + "\n\nDraft:\n{draft}\n\n" + reviews, max_tokens=64)
    ops += [out("final_answer", "refined"), out("first_draft", "draft")]
    return request("reflection", ops, R.REFLECTION)


def iterative():
    ops = [inp("title"), const("iter_sys", P.ITERATIVE_SYSTEM)]
    ops += [inp(f"chunk_{k}") for k in range(1, 7)]
    previous = "(nothing yet)"
    for k in range(1, 7):
        user = (f"Document: {{title}}\n\nSummary so far:\n{previous}\n\n"
                f"Section {k} of 6:\n{{chunk_{k}}}\n\nReturn the updated summary.")
        ops += call(f"summary_{k}", "{iter_sys}", user)
        previous = f"{{summary_{k}}}"
    ops.append(out("summary", "summary_6"))
    return request("iterative", ops, R.ITERATIVE)


def parallel():
    ops = [inp("topic"), const("extract_sys", P.PARALLEL_EXTRACT),
           const("analyze_sys", P.PARALLEL_ANALYZE), const("writer_sys", P.PARALLEL_WRITER)]
    ops += [inp(f"chunk_{k}") for k in range(1, 8)]
    for k in range(1, 8):
        ops += call(f"notes_{k}", "{extract_sys}",
                    f"Report topic: {{topic}}\n\nYour section ({k} of 7):\n{{chunk_{k}}}")
        ops += call(f"analysis_{k}", "{extract_sys}\n\n{analyze_sys}",
                    f"Report topic: {{topic}}\n\nYour notes:\n{{notes_{k}}}")
    paragraphs = "\n\n".join(f"Assistant {k}: {{analysis_{k}}}" for k in range(1, 8))
    ops += call("report", "{writer_sys}", "Report topic: {topic}\n\n" + paragraphs, max_tokens=64)
    ops.append(out("report_text", "report"))
    return request("parallel", ops, R.PARALLEL)


def triage():
    """Route each ticket to one team's reply (a switch: only the chosen branch runs), then let a
    reviewer polish the reply at most twice (a loop that stops once the reviewer approves)."""
    ops = [inp("customer"), inp("ticket"), const("desk_sys", P.SUPPORT_DESK)]
    ticket = "Ticket from {customer}:\n{ticket}"
    ops += call("team", "{desk_sys}\n\n" + P.TRIAGE_TASK, ticket, max_tokens=4)
    for name, role in P.SUPPORT_TEAMS.items():
        ops += call(f"reply_{name}", "{desk_sys}\n\n" + role,
                    ticket + "\n\nWrite the reply to the customer.")
    ops.append({"id": "routed", "switchOp": {
        "input": "team", "match": "MATCH_KIND_REGEX",
        "cases": [{"value": "(?i)billing", "target": "reply_billing"},
                  {"value": "(?i)techn", "target": "reply_technical"}],
        "defaultTarget": "reply_account"}})
    review = call("reviewed", "{desk_sys}\n\n" + P.SUPPORT_REVIEW,
                  ticket + "\n\nDraft reply:\n{draft}")
    ops.append({"id": "polished", "loop": {
        "init": "routed", "state": "draft", "result": "reviewed", "maxIterations": 2,
        "stopRegex": "^APPROVED", "body": review}})
    ops += [out("team_name", "team"), out("reply", "polished")]
    return request("triage", ops, R.TRIAGE)


def trading():
    from trading_ops import trading_ops  # noqa: E402 (kept apart: the largest workload)
    return request("trading", trading_ops(), R.TRADING)


WORKLOADS = {"map_reduce": map_reduce, "debate": debate, "reflection": reflection,
             "iterative": iterative, "parallel": parallel, "trading": trading, "triage": triage}


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, text):
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def main() -> int:
    for name, build in WORKLOADS.items():
        path = HERE / f"{name}.yaml"
        header = f"# {name}: generated by examples/generate.py (helium.v1.RunRequest, JSON mapping)\n"
        path.write_text(header + yaml.dump(build(), Dumper=_Dumper, sort_keys=False, width=100))
        print(path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
