"""list-users' `advancedFilter` and `options.sort`, as far as the emulator models them. Pure.

Modelled (authing-api-more.md 1d): `status` with EQUAL, NOT_EQUAL or IN; `loggedInApps` IN
[appIds] (users who have *ever* logged in to any of them; one such item at most); sort by
`createdAt` (or `id`, the same order here) asc or desc, creation order without a sort. Any
other field, operator or sort answers 400 naming it, so nobody mistakes it for data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit_job.emulator.directory import STATUSES
from audit_job.emulator.paging import BadParameter, not_modelled

SORT_FIELDS = ("createdAt", "id")


@dataclass(frozen=True)
class UserFilter:
    statuses: frozenset[str] | None = None
    logged_in_to: tuple[str, ...] | None = None


def _status(value: Any) -> str:
    if isinstance(value, str) and value in STATUSES:
        return value
    raise BadParameter.named("status")


def user_filter(items: Any) -> UserFilter:
    if items is None:
        return UserFilter()
    if not isinstance(items, list):
        raise BadParameter.named("advancedFilter")
    statuses: frozenset[str] | None = None
    logged_in_to: tuple[str, ...] | None = None
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("field"), str):
            raise BadParameter.named("advancedFilter")
        field, operator, value = item["field"], item.get("operator"), item.get("value")
        if field == "status" and operator in ("EQUAL", "NOT_EQUAL", "IN"):
            if operator == "IN":
                if not isinstance(value, list) or not value:
                    raise BadParameter.named("status")
                wanted = frozenset(_status(v) for v in value)
            elif operator == "EQUAL":
                wanted = frozenset((_status(value),))
            else:
                wanted = frozenset(STATUSES) - {_status(value)}
            statuses = wanted if statuses is None else statuses & wanted
        elif field == "loggedInApps" and operator == "IN":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BadParameter.named("advancedFilter")
            if logged_in_to is not None:
                raise not_modelled("two loggedInApps filters")
            logged_in_to = tuple(value)
        else:
            raise not_modelled(f"advancedFilter field {field!r} with operator {operator!r}")
    return UserFilter(statuses, logged_in_to)


def descending(sort: Any) -> bool:
    """Whether `options.sort` asks for newest first; only creation order is modelled."""
    if sort is None:
        return False
    if not isinstance(sort, list):
        raise BadParameter.named("sort")
    order = None
    for item in sort:
        if not isinstance(item, dict):
            raise BadParameter.named("sort")
        field, direction = item.get("field"), item.get("order", "asc")
        if direction not in ("asc", "desc"):
            raise BadParameter.named("sort")
        if field not in SORT_FIELDS:
            raise not_modelled(f"sort by {field!r}")
        if order is None:
            order = direction  # the first key decides; the others agree (same order)
    return order == "desc"
