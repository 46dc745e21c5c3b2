"""User regexes on RE2, a linear-time engine: switch predicates and loop stop patterns.

``RE2`` is the ``PatternMatcher`` the server injects into validation and plan-time pruning and
the runtime uses to pick switch branches. RE2 never backtracks, so ``(a+)+$`` against any row
costs time linear in the row; patterns it cannot run that way (backreferences, lookaround) are
refused when the workflow is validated.

NOTE: RE2 syntax differs from Python's ``re`` in small ways: ``$`` matches only at the very end
of the text (Python's also before a final newline), ``\\d``/``\\w`` are ASCII-only, and there are
no backreferences or lookaround. Workflow patterns are RE2 patterns.
"""

from __future__ import annotations

import functools

import re2

# Memory RE2 may use for one compiled pattern; a pattern needing more is refused (bounds the
# compile time of huge counted repetitions too).
MAX_PATTERN_MEMORY = 8 << 20
MAX_PATTERN_CHARS = 4096


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is the client's error, not a server log line
    options.max_mem = MAX_PATTERN_MEMORY
    return options


_OPTIONS = _options()


class _Refused:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str):
    if len(pattern) > MAX_PATTERN_CHARS:
        return _Refused(f"the pattern has {len(pattern)} characters, over the limit of "
                        f"{MAX_PATTERN_CHARS}")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return _Refused(f"{reason} (patterns use RE2 syntax: no backreferences or lookaround)")


class Re2Patterns:
    """``PatternMatcher`` over RE2 with a cache of compiled patterns (thread-safe)."""

    def error(self, pattern: str) -> str | None:
        compiled = _compile(pattern)
        return compiled.reason if isinstance(compiled, _Refused) else None

    def search(self, pattern: str, text: str) -> bool:
        compiled = _compile(pattern)
        if isinstance(compiled, _Refused):
            raise ValueError(f"pattern {pattern!r} was not validated: {compiled.reason}")
        return compiled.search(text) is not None


RE2 = Re2Patterns()
