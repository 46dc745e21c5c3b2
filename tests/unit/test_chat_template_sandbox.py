"""The chat-template environment's short path for message keys and loop attributes answers
exactly what Jinja's own immutable sandbox answers, refusals included."""

from __future__ import annotations

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from helium_trt.engine.chat_template import JinjaChatRenderer
from helium_trt.plan.chat import ChatTemplateError

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi <|im_end|>", "items": "a key named like a method"}]

RENDERED = [
    "{% for message in messages %}{% if loop.first %}[first]{% endif %}{{ loop.index0 }}:"
    "{{ message.role }}={{ message.content }}{% if loop.last %}[last]{% endif %}{% endfor %}",
    "{% for m in messages %}{{ m.get('role') }}{{ m.missing }}{{ m['content'] }}"
    "{{ m.items() | list | length }}{{ loop.length }}{{ loop.revindex }}{% endfor %}",
    "{% for m in messages %}{{ loop.cycle('odd', 'even') }}{{ loop._depth0 }}"
    "{{ loop.__class__ }}{{ m.__class__ }}{{ m.content.upper() }}{% endfor %}",
    "{% for m in messages %}{% for k, v in m.items() %}{{ k }}{% endfor %}{% endfor %}",
]
REFUSED = [
    "{% for m in messages %}{{ m.update({'role': 'x'}) }}{% endfor %}",
    "{% for m in messages %}{{ m.pop('role') }}{% endfor %}",
    "{{ messages.append(1) }}",
    "{% for m in messages %}{{ m.content.format_map(m) }}{{ m.__class__.__mro__() }}{% endfor %}",
]


def _sandboxed(template: str) -> str:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=[dict(m) for m in MESSAGES])


@pytest.mark.parametrize("template", RENDERED)
def test_renders_what_the_sandbox_renders(template):
    assert JinjaChatRenderer(template, {})(MESSAGES, False) == _sandboxed(template)


@pytest.mark.parametrize("template", REFUSED)
def test_refuses_what_the_sandbox_refuses(template):
    with pytest.raises(jinja2.exceptions.SecurityError):
        _sandboxed(template)
    with pytest.raises(ChatTemplateError):
        JinjaChatRenderer(template, {})(MESSAGES, False)
