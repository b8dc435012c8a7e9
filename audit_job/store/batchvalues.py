"""A batch of rows as a relation inside one statement, so that a whole batch is joined with
a table in one round trip and a fixed number of parameters, whatever its size.

PostgreSQL: `unnest()` of one array parameter per column. SQLite: `json_each()` of one JSON
parameter (an array of rows); times are passed as SQLite's stored text
(`bulk.sqlite_time`), which compares with stored times as text. Other dialects have no
such form: callers use Core `IN` lists there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from audit_job.store.bulk import sqlite_time

SUPPORTED = ("postgresql", "sqlite")
# column kinds -> PostgreSQL array type
_PG_TYPES = {"text": "TEXT[]", "bool": "BOOLEAN[]", "time": "TIMESTAMPTZ[]", "int": "INTEGER[]"}


def relation(dialect: str, alias: str, columns: Sequence[tuple[str, str]]) -> str:
    """SQL for the batch as a table `alias` with `columns` ((name, kind) pairs)."""
    names = [name for name, _ in columns]
    if dialect == "postgresql":
        arrays = ", ".join(f"CAST(:{alias}_{n} AS {_PG_TYPES[k]})" for n, k in columns)
        return f"unnest({arrays}) AS {alias}({', '.join(names)})"
    if dialect == "sqlite":
        fields = ", ".join(f"json_extract(value, '$[{i}]') AS {n}" for i, n in enumerate(names))
        return f"(SELECT {fields} FROM json_each(:{alias}_rows)) AS {alias}"
    raise ValueError(f"no batch relation on {dialect}")


def params(
    dialect: str, alias: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
) -> dict[str, Any]:
    """The statement's parameters for `rows` (each a sequence in `columns` order)."""
    if dialect == "postgresql":
        return {f"{alias}_{name}": [row[i] for row in rows] for i, (name, _) in enumerate(columns)}
    times = [i for i, (_, kind) in enumerate(columns) if kind == "time"]
    encoded = [
        [sqlite_time(v) if i in times and isinstance(v, datetime) else v for i, v in enumerate(r)]
        for r in rows
    ]
    return {f"{alias}_rows": orjson.dumps(encoded).decode()}


def iso_text(dialect: str, expr: str) -> str:
    """SQL turning a stored time into payload text: ISO 8601, UTC, microseconds
    (events.iso writes the same from Python)."""
    if dialect == "postgresql":
        return f"""to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
    # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff' (always with microseconds)
    return f"substr({expr}, 1, 10) || 'T' || substr({expr}, 12) || '+00:00'"


def json_object(dialect: str, fields: Sequence[tuple[str, str, str]]) -> str:
    """SQL building a JSON object's text from (key, SQL expression, kind) triples; kind
    `bool` makes SQLite's 0/1 a JSON boolean."""
    if dialect == "postgresql":
        inner = ", ".join(f"'{key}', {expr}" for key, expr, _ in fields)
        return f"json_build_object({inner})::text"
    parts = []
    for key, expr, kind in fields:
        value = f"json(CASE WHEN {expr} THEN 'true' ELSE 'false' END)" if kind == "bool" else expr
        parts.append(f"'{key}', {value}")
    return f"json_object({', '.join(parts)})"
