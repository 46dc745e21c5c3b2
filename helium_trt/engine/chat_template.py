"""A model's own chat template, rendered the way transformers' ``apply_chat_template`` does.

The environment matches what Hugging Face tokenizers are written against: a sandboxed,
immutable Jinja environment with ``trim_blocks``/``lstrip_blocks``, loop controls, the
``raise_exception`` and ``strftime_now`` globals, a ``tojson`` that keeps non-ASCII text, the
``{% generation %}`` block (rendered as its body), and the tokenizer's special-token strings
(``bos_token``, ``eos_token``, ...) as variables. ``tools`` and ``documents`` are passed as
None, as transformers passes them when a conversation has none. A template error or a
``raise_exception`` becomes ChatTemplateError.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import jinja2
import jinja2.ext
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from helium_trt.engine.embedded.model_config import MalformedModelError
from helium_trt.plan.chat import ChatFormat, ChatTemplateError, Conversation, chatml

# tokenizer_config.json keys whose strings a template sees under the same names.
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token",
                      "cls_token", "mask_token")


class JinjaChatRenderer:
    """``(messages, add_generation_prompt) -> text`` for one chat template."""

    def __init__(self, template: str, special_tokens: Mapping[str, str]) -> None:
        try:
            self._template = _environment().from_string(template)
        except jinja2.TemplateError as exc:
            raise MalformedModelError(f"the chat template does not compile: {exc}") from exc
        # NOTE: a plain dict, not Jinja's ChainMap over the environment's globals: every render
        # copies the globals into its context, and a ChainMap copies in Python (a third of a
        # short conversation's render). The environment's globals are fixed once built.
        self._template.globals = dict(self._template.globals)
        self._special_tokens = dict(special_tokens)

    def __call__(self, messages: Conversation, add_generation_prompt: bool) -> str:
        try:
            return self._template.render(
                messages=[dict(m) for m in messages], tools=None, documents=None,
                add_generation_prompt=add_generation_prompt, **self._special_tokens)
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(f"the model's chat template refused the conversation: "
                                    f"{exc}") from exc
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise ChatTemplateError(f"the model's chat template failed on the conversation: "
                                    f"{exc!r}") from exc


def chat_format_for(model_dir: Path, tokenizer_config: dict,
                    control_tokens: tuple[str, ...]) -> ChatFormat:
    """The model directory's chat format: its template, else ChatML (said in ``source``)."""
    template = read_chat_template(model_dir, tokenizer_config)
    if template is None:
        return chatml(source=f"ChatML (assumed: {model_dir} has no chat template)",
                      control_tokens=control_tokens)
    renderer = JinjaChatRenderer(template, special_token_strings(tokenizer_config))
    return ChatFormat(renderer, f"the chat template of {model_dir}", control_tokens)


def read_chat_template(model_dir: Path, tokenizer_config: dict) -> str | None:
    """``chat_template.jinja``, else tokenizer_config's ``chat_template`` (a list of named
    templates gives its "default" one)."""
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text()
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template else None


def special_token_strings(tokenizer_config: dict) -> dict[str, str]:
    """``bos_token`` etc. as plain strings (tokenizer_config may hold an AddedToken dict)."""
    out = {}
    for key in SPECIAL_TOKEN_KEYS:
        value = tokenizer_config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    return out


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (marks assistant text for training masks in
    transformers) renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller) -> str:
        return caller()


class _Namespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses attribute names starting with an underscore."""

    def __init__(*args, **kwargs):  # the first argument is self, as in jinja2's Namespace
        self, rest = args[0], args[1:]
        for name in dict(*rest, **kwargs):
            _check_attribute(name)
        jinja2.utils.Namespace.__init__(self, *rest, **kwargs)

    def __setitem__(self, name, value):
        _check_attribute(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)


def _check_attribute(name) -> None:
    if isinstance(name, str) and name.startswith("_"):
        raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} is not allowed")


def _raise_exception(message) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _make_dict(*args, **kwargs) -> dict:
    return dict(*args, **kwargs)


# What ``message.<name>`` reads on a dict as an attribute (``items``, ``get``...), not a key.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with a short path for the attribute reads a chat template makes per
    message: a key of a message dict (``message.content``) and a public attribute of Jinja's
    own loop (``loop.first``).

    NOTE: both return what the sandbox's own checks return for them (a dict key the dict type
    has no attribute for; a loop attribute without a leading underscore is neither internal
    nor a mutating or ``str.format`` method); anything else takes those checks. They were a
    third of a two-message render.
    """

    def getattr(self, obj, attribute):
        kind = type(obj)
        if kind is dict:
            if attribute not in _DICT_ATTRIBUTES and attribute in obj:
                return obj[attribute]
        elif kind is LoopContext and not attribute.startswith("_"):
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass
        return super().getattr(obj, attribute)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = _Environment(trim_blocks=True, lstrip_blocks=True,
                       extensions=[_GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now,
                       namespace=_Namespace, dict=_make_dict)
    return env
