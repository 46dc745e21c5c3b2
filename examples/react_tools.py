"""The tool of examples/react.yaml: a tiny encyclopedia the ReAct agent searches.

Run it with ``helium-trt run examples/react.yaml --tools examples/react_tools.py:wiki``. The
tool receives the agent's newest step (``args["step"]``: its thought and action) and answers the
last action in it: ``Search[topic]`` gives the article's first sentences, ``Lookup[word]`` the
first sentence of any article holding the word, ``Finish[answer]`` ends the episode. It keeps no
state, so rows and runs may call it concurrently.
"""

from __future__ import annotations

import re

ARTICLES = {
    "danube": "The Danube is Europe's second-longest river, about 2,850 km long. It rises in "
              "the Black Forest in Germany and flows into the Black Sea. It passes through four "
              "capital cities: Vienna, Bratislava, Budapest and Belgrade.",
    "vienna": "Vienna is the capital of Austria, on the Danube. Its population is about 2 "
              "million. The Vienna State Opera opened in 1869.",
    "budapest": "Budapest is the capital of Hungary. It was formed in 1873 by uniting Buda, "
                "Obuda and Pest on both banks of the Danube.",
    "rhine": "The Rhine rises in the Swiss Alps and flows into the North Sea, about 1,230 km. It "
             "forms part of the borders of Switzerland, Austria, Germany and France.",
    "mont blanc": "Mont Blanc is the highest mountain of the Alps, at 4,806 m. It lies on the "
                  "border between France and Italy.",
}
_ACTION = re.compile(r"(Search|Lookup|Finish)\[([^\]]*)\]")


def wiki(name: str, args: dict[str, str]) -> str:
    """The observation for the last action in ``args['step']``."""
    actions = _ACTION.findall(args.get("step", ""))
    if not actions:
        return "No action found. Write Search[topic], Lookup[word] or Finish[answer]."
    kind, arg = actions[-1]
    arg = arg.strip()
    if kind == "Finish":
        return f"Episode finished with answer: {arg}"
    if kind == "Search":
        found = ARTICLES.get(arg.lower())
        if found is None:
            similar = [t for t in ARTICLES if arg.lower() in t or t in arg.lower()]
            return f"Could not find {arg}. Similar: {similar or sorted(ARTICLES)[:3]}."
        return ". ".join(found.split(". ")[:2]).rstrip(".") + "."
    sentences = [s for text in ARTICLES.values() for s in text.split(". ")
                 if arg.lower() in s.lower()]
    return sentences[0] if sentences else f"No sentence mentions {arg}."
