"""Deterministic session truth: what the emulator answers for a pair. Pure.

Tests import `truth` to compute the expected answer without a server. Rules, first match wins:
1. the truth file names the pair (`app_id,user_id,active`): its value;
2. the app id starts with `missing_prefix`: app not found (499/2011);
3. the user id starts with `missing_prefix`: user not found (404/2004);
4. blake2b(seed, app, user) as a fraction of 2**64 is below `active_share`: active, else inactive.
"""

from __future__ import annotations

import csv
import hashlib
from enum import StrEnum
from pathlib import Path

_TRUE = frozenset({"true", "1", "yes", "active"})
_FALSE = frozenset({"false", "0", "no", "inactive"})
_HASH_SCALE = float(2**64)


class Verdict(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    USER_NOT_FOUND = "user_not_found"
    APP_NOT_FOUND = "app_not_found"


_FILE_VALUES = {
    **dict.fromkeys(_TRUE, Verdict.ACTIVE),
    **dict.fromkeys(_FALSE, Verdict.INACTIVE),
    "user_not_found": Verdict.USER_NOT_FOUND,
    "app_not_found": Verdict.APP_NOT_FOUND,
}


def hashed_active(app_id: str, user_id: str, seed: int = 0, active_share: float = 0.5) -> bool:
    key = f"{seed}\x00{app_id}\x00{user_id}".encode()
    value = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return value / _HASH_SCALE < active_share


def verdict(
    app_id: str,
    user_id: str,
    seed: int = 0,
    *,
    active_share: float = 0.5,
    missing_prefix: str = "missing-",
    table: dict[tuple[str, str], Verdict] | None = None,
) -> Verdict:
    if table:
        listed = table.get((app_id, user_id))
        if listed is not None:
            return listed
    if missing_prefix:
        if app_id.startswith(missing_prefix):
            return Verdict.APP_NOT_FOUND
        if user_id.startswith(missing_prefix):
            return Verdict.USER_NOT_FOUND
    if hashed_active(app_id, user_id, seed, active_share):
        return Verdict.ACTIVE
    return Verdict.INACTIVE


def truth(
    app_id: str,
    user_id: str,
    seed: int = 0,
    *,
    active_share: float = 0.5,
    missing_prefix: str = "missing-",
    table: dict[tuple[str, str], Verdict] | None = None,
) -> bool | None:
    """`data.active` the emulator answers for the pair, or None when user or app is not found."""
    found = verdict(
        app_id, user_id, seed, active_share=active_share, missing_prefix=missing_prefix, table=table
    )
    if found is Verdict.ACTIVE:
        return True
    if found is Verdict.INACTIVE:
        return False
    return None


def load_truth_file(path: str | Path) -> dict[tuple[str, str], Verdict]:
    """CSV `app_id,user_id,active`; a header row is optional. `active` is true/false/1/0/yes/no,
    or `user_not_found` / `app_not_found`."""
    table: dict[tuple[str, str], Verdict] = {}
    with Path(path).open(newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 3:
                raise ValueError(f"{path}:{number}: expected app_id,user_id,active, got {row!r}")
            app_id, user_id, raw = (cell.strip() for cell in row)
            value = _FILE_VALUES.get(raw.lower())
            if value is None:
                if number == 1:
                    continue  # header
                raise ValueError(f"{path}:{number}: active: unknown value {raw!r}")
            table[(app_id, user_id)] = value
    return table
