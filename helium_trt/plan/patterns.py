"""What the plan needs of a regular-expression engine (pure: the engine itself is injected).

Switch cases (MATCH_KIND_REGEX) and loop stop conditions hold user patterns as plain strings.
Pure code never matches them itself: validation and plan-time switch pruning take a
``PatternMatcher`` from the caller, and without one they leave patterns alone (regex switches
are then decided at run time). The server's matcher (``helium_trt.runtime.patterns.RE2``) runs
in time linear in the text, so no pattern can stall a request.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class PatternMatcher(Protocol):
    """A regex engine for user patterns.

    Contract: ``error`` returns why ``pattern`` cannot be used (a syntax the engine does not
    support, such as backreferences or lookaround, or a pattern too large), or None; ``search``
    is only called with patterns whose ``error`` is None and must run in time bounded by the
    lengths of pattern and text (no backtracking blow-up).
    """

    def error(self, pattern: str) -> str | None: ...

    def search(self, pattern: str, text: str) -> bool: ...
