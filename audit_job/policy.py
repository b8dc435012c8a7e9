"""Expected states: which expectation and severity apply to a pair (pure, no I/O).

A pair's effective expectation comes from, in this order:

1. the pair's own expectation (`audit_target.expect`, or the `expect` column of
   `[source] query`) when it is `active` or `inactive`;
2. else the most specific `[[policy]]` block that matches the pair. A block matches when
   one of its `apps` patterns matches the app id and one of its `users` patterns matches
   the user id (a missing key matches everything). Among matching blocks:
   a. the one that names more of the pair exactly wins (the app and the user each count
      one when the pattern that matched has no wildcard);
   b. then the one whose matching patterns have more literal characters (characters other
      than `*`, `?` and `[...]` sets; a missing key counts 0);
   c. then the first in the file;
3. else `any`.

Patterns are shell globs, case-sensitive: `*` any run of characters, `?` one character,
`[abc]` / `[!abc]` one of / none of a set. A pair's own expectation carries severity
`warning`; a policy's carries its `severity`. The source says which rule decided:
`target` (or `source` for `[source] query`), `policy NAME`, or `default`.

`PolicySet.effective` runs once per answer: patterns are compiled once, exact names are
set lookups, and the blocks that can match an app are worked out once per app id.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from audit_job.models import Expect, Severity

EXPECT_VALUES = tuple(e.value for e in Expect)
SEVERITY_VALUES = tuple(s.value for s in Severity)
EXPECT_PROBLEM = "expect must be any, active or inactive"
_APP_CACHE_LIMIT = 10_000  # app ids are few; a hostile source cannot grow it without bound


class PolicyLike(Protocol):
    """What a `[[policy]]` block provides (config.PolicySettings)."""

    @property
    def name(self) -> str | None: ...
    @property
    def app_patterns(self) -> tuple[str, ...]: ...
    @property
    def user_patterns(self) -> tuple[str, ...]: ...
    @property
    def expect(self) -> str: ...
    @property
    def severity(self) -> str: ...


class Effective(NamedTuple):
    expect: str  # any | active | inactive
    severity: str  # info | warning | critical
    source: str  # target | source | policy NAME | default


DEFAULT = Effective(Expect.ANY.value, Severity.WARNING.value, "default")


def parse_expect(value: object) -> str | None:
    """An `expect` cell (CSV, `[source] query`): the value, None for empty or NULL (no
    expectation of its own), or ValueError("expect must be any, active or inactive")."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(EXPECT_PROBLEM)
    text = value.strip().lower()
    if not text:
        return None
    if text not in EXPECT_VALUES:
        raise ValueError(EXPECT_PROBLEM)
    return text


def is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def literal_count(pattern: str) -> int:
    """Characters of `pattern` that match only themselves (fnmatch's reading of sets: a
    `[` without its closing `]` is a literal)."""
    count, i, n = 0, 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char in "*?":
            i += 1
            continue
        if char == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j < n:  # a complete set: one character, not literal
                i = j + 1
                continue
        count += 1
        i += 1
    return count


@dataclass(frozen=True, slots=True)
class _Dimension:
    """One key (`apps` or `users`) of a block, compiled."""

    exact: frozenset[str]
    globs: tuple[tuple[re.Pattern[str], int], ...]  # most literal characters first
    everything: bool  # the key was not given

    @classmethod
    def compile(cls, patterns: Sequence[str]) -> _Dimension:
        if not patterns:
            return cls(frozenset(), (), True)
        globs = sorted(
            ((re.compile(fnmatch.translate(p)), literal_count(p)) for p in patterns if is_glob(p)),
            key=lambda item: -item[1],
        )
        return cls(frozenset(p for p in patterns if not is_glob(p)), tuple(globs), False)

    def score(self, value: str) -> tuple[int, int] | None:
        """(exact, literal characters) of the best pattern matching `value`, or None."""
        if self.everything:
            return (0, 0)
        if value in self.exact:
            return (1, len(value))
        for pattern, literals in self.globs:
            if pattern.match(value):
                return (0, literals)
        return None


@dataclass(frozen=True, slots=True)
class _Compiled:
    index: int
    apps: _Dimension
    users: _Dimension
    result: Effective


class PolicySet:
    """The `[[policy]]` blocks of a configuration, compiled for `effective()`."""

    def __init__(self, policies: Iterable[PolicyLike] = ()) -> None:
        self._blocks = tuple(
            _Compiled(
                index,
                _Dimension.compile(policy.app_patterns),
                _Dimension.compile(policy.user_patterns),
                Effective(policy.expect, policy.severity, f"policy {label(policy, index)}"),
            )
            for index, policy in enumerate(policies)
        )
        # app id -> [(block, app score)] of the blocks whose apps match it
        self._by_app: dict[str, list[tuple[_Compiled, tuple[int, int]]]] = {}

    def __len__(self) -> int:
        return len(self._blocks)

    def _for_app(self, app_id: str) -> list[tuple[_Compiled, tuple[int, int]]]:
        found = self._by_app.get(app_id)
        if found is None:
            found = []
            for block in self._blocks:
                score = block.apps.score(app_id)
                if score is not None:
                    found.append((block, score))
            if len(self._by_app) >= _APP_CACHE_LIMIT:
                self._by_app.clear()
            self._by_app[app_id] = found
        return found

    def policy_for(self, app_id: str, user_id: str) -> Effective | None:
        """The most specific matching block's (expect, severity, source), or None."""
        best: _Compiled | None = None
        best_key = (-1, -1)
        for block, (app_exact, app_literals) in self._for_app(app_id):
            user = block.users.score(user_id)
            if user is None:
                continue
            key = (app_exact + user[0], app_literals + user[1])
            if key > best_key:  # strictly: an equal key keeps the earlier block
                best, best_key = block, key
        return best.result if best is not None else None

    def effective(
        self, app_id: str, user_id: str, own: str | None = None, own_source: str = "target"
    ) -> Effective:
        """The expectation that applies to the pair (module docstring)."""
        if own is not None and own != Expect.ANY.value:
            return Effective(own, Severity.WARNING.value, own_source)
        if not self._blocks:
            return DEFAULT
        return self.policy_for(app_id, user_id) or DEFAULT


def label(policy: PolicyLike, index: int) -> str:
    """How messages and `source` name a block: its `name`, else `#N` (1-based)."""
    return policy.name or f"#{index + 1}"


def contradicts(expect: str, active: bool) -> bool:
    """Does an answer (`active`) contradict the expectation?"""
    if expect == Expect.ACTIVE.value:
        return not active
    if expect == Expect.INACTIVE.value:
        return active
    return False
