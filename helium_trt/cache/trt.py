"""Templated radix tree (TRT): every LLM prompt of a plan as literal text and placeholders (pure).

Keys are prompt templates as plan time sees them (``plan.prompt.expanded_prompt_template``: a
spliced conversation and a map's element are expanded into the messages and text they hold):
literal text compared word by word (a word and the whitespace after it; a prefix that ends
inside a word could not be shared as tokens anyway, and character branch points listed one
prefix per letter), placeholders (``Ref``) compared by the operator they name. A leaf is an
LLM operator; two operators under one node share that node's prefix. A prefix is *static* when
its path holds no placeholder: it is the same for every row and can be prefilled before any
row runs (proactive warming). Dependency edges between leaves record which LLM calls must finish
before another can start.

Example: experts E1, E2 with prompts "SYS...{q}" and a judge "JUDGE {E1} {E2}" give
root -> "SYS..." -> {Ref q} -> leaves E1, E2 and root -> "JUDGE " -> ... -> leaf J, with
dependency edges E1 -> J and E2 -> J; "SYS..." is a static prefix shared by E1 and E2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from helium_trt.plan.chat import ChatFormat
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import LlmOp, Segment, Template
from helium_trt.plan.prompt import expanded_prompt_template

_WORD = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True, slots=True)
class SharedPrefix:
    """A prefix two or more LLM operators share; ``num_tokens`` is None without a tokenizer."""

    text: str
    consumers: tuple[str, ...]
    num_chars: int
    is_static: bool
    num_tokens: int | None = None


@dataclass(eq=False)
class _Node:
    edge: tuple[Segment, ...] = ()
    children: list["_Node"] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)
    parent: "_Node | None" = None


class TemplatedRadixTree:
    """Radix tree over prompt templates. Build with ``build_trt``; read with the public API."""

    def __init__(self) -> None:
        self.root = _Node()
        self.templates: dict[str, Template] = {}
        self.dependencies: dict[str, tuple[str, ...]] = {}

    # ---- public API --------------------------------------------------------------------------

    def insert(self, op_id: str, template: Template) -> None:
        """Add LLM operator ``op_id`` with its prompt ``template``."""
        self.templates[op_id] = template
        node, rest = self.root, _atoms(template)
        while rest:
            child = next((c for c in node.children if _first_atom(c.edge) == rest[0]), None)
            if child is None:
                child = _Node(edge=_join(rest), parent=node)
                node.children.append(child)
                node, rest = child, ()
                break
            child_atoms = _atoms(child.edge)
            n = common_prefix_len(child_atoms, rest)
            if n < len(child_atoms):
                child = _split(child, n)
            node, rest = child, rest[n:]
        node.leaves.append(op_id)

    def static_prefix(self, op_id: str) -> str:
        """Literal text of ``op_id``'s prompt before its first placeholder."""
        out = []
        for seg in self.templates[op_id]:
            if not isinstance(seg, str):
                break
            out.append(seg)
        return "".join(out)

    def shared_prefixes(self, *, static_only: bool = True,
                        count_tokens: Callable[[str], int] | None = None) -> list[SharedPrefix]:
        """Branch points with >= 2 consumers, longest first.

        With ``static_only`` the prefix must hold no placeholder (warmable before rows run).
        """
        found = []
        for node, path in self._walk():
            consumers = self._consumers(node)
            if node is self.root or len(consumers) < 2:
                continue
            static = all(isinstance(s, str) for s in path)
            if not static:
                # The static part of an edge that runs past a placeholder is shared too
                # ("SYS {q}" under two leaves shares "SYS "), though no branch point marks it.
                edge_start = path[: len(path) - len(node.edge)]
                head = "".join(_static_atoms(path))
                if (all(isinstance(s, str) for s in edge_start)
                        and len(head) > len(_display(edge_start))):
                    tokens = count_tokens(head) if count_tokens else None
                    found.append(SharedPrefix(head, tuple(consumers), len(head), True, tokens))
            if not (len(node.children) >= 2 or node.leaves):
                continue
            if static_only and not static:
                continue
            text = _display(path)
            tokens = count_tokens(text) if count_tokens and static else None
            found.append(SharedPrefix(text, tuple(consumers), len(text), static, tokens))
        found.sort(key=lambda p: (-p.num_chars * len(p.consumers), p.text))
        return found

    def consumers_of_prefix(self, text: str) -> tuple[str, ...]:
        """LLM operators whose prompt starts with static ``text``."""
        return tuple(op for op, t in self.templates.items()
                     if "".join(_static_atoms(t))[: len(text)] == text)

    def render(self, width: int = 60) -> str:
        """A text drawing of the tree, one node a line."""
        lines = ["(root)"]
        self._render(self.root, "", lines, width)
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "leaves": {op: _display(t) for op, t in self.templates.items()},
            "dependencies": {k: list(v) for k, v in self.dependencies.items() if v},
            "tree": self._node_json(self.root),
        }

    # ---- private helpers ---------------------------------------------------------------------

    def _walk(self):
        stack = [(self.root, ())]
        while stack:
            node, path = stack.pop()
            yield node, path
            for child in reversed(node.children):
                stack.append((child, path + child.edge))

    def _consumers(self, node: _Node) -> list[str]:
        out, stack = [], [node]
        while stack:
            n = stack.pop()
            out.extend(n.leaves)
            stack.extend(n.children)
        return sorted(out)

    def _render(self, node: _Node, indent: str, lines: list[str], width: int) -> None:
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            label = _shorten(_display(child.edge), width)
            leaves = f"  => {', '.join(child.leaves)}" if child.leaves else ""
            lines.append(f"{indent}{'`-- ' if last else '|-- '}{label}{leaves}")
            self._render(child, indent + ("    " if last else "|   "), lines, width)

    def _node_json(self, node: _Node) -> dict:
        return {"edge": _display(node.edge), "leaves": list(node.leaves),
                "children": [self._node_json(c) for c in node.children]}


def build_trt(plan: Plan, chat_format: ChatFormat) -> TemplatedRadixTree:
    """The TRT of every LLM operator in ``plan`` with its LLM-to-LLM dependency edges."""
    tree = TemplatedRadixTree()
    llm_ids = {op.id for op in plan.ops if isinstance(op, LlmOp)}
    for op in plan.ops:
        if isinstance(op, LlmOp):
            tree.insert(op.id, expanded_prompt_template(plan, op, chat_format))
    tree.dependencies = {op_id: plan.nearest_upstream(op_id, llm_ids) for op_id in llm_ids}
    return tree


# A template as atoms: words of literal text (with the whitespace after them), and placeholders.
# NOTE: adjacent literal segments are joined first, so a word never splits where two were glued.
def _atoms(template) -> tuple:
    out: list = []
    for seg in _join(template):
        out.extend(_WORD.findall(seg)) if isinstance(seg, str) else out.append(seg)
    return tuple(out)


def _first_atom(edge):
    return _atoms(edge[:1])[0]


def _static_atoms(template) -> tuple:
    out = []
    for seg in template:
        if not isinstance(seg, str):
            break
        out.append(seg)
    return tuple(out)


def _join(atoms) -> tuple[Segment, ...]:
    out: list = []
    for a in atoms:
        if isinstance(a, str) and out and isinstance(out[-1], str):
            out[-1] += a
        else:
            out.append(a)
    return tuple(out)


def common_prefix_len(a: tuple, b: tuple) -> int:
    """How many leading items ``a`` and ``b`` share."""
    if b[:len(a)] == a:  # the common case of a whole match, compared in C
        return len(a)
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _split(child: _Node, n: int) -> _Node:
    """Split ``child``'s edge after ``n`` atoms; returns the new middle node."""
    atoms = _atoms(child.edge)
    parent = child.parent
    middle = _Node(edge=_join(atoms[:n]), parent=parent)
    parent.children[parent.children.index(child)] = middle
    child.edge = _join(atoms[n:])
    child.parent = middle
    middle.children.append(child)
    return middle


def _display(template) -> str:
    return "".join(s if isinstance(s, str) else
                   "{" + getattr(s, "op_id", type(s).__name__.lower()) + "}" for s in template)


def _shorten(text: str, width: int) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width // 2 - 2] + " .. " + text[-(width // 2 - 2):]
