"""Turning rows into output: a table for people, CSV and JSON lines for programs.

CSV and JSON stream row by row (a million-row export stays in bounded memory); the table
needs its rows in memory to size columns, so listings cap what they show as a table.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from datetime import datetime, tzinfo
from enum import StrEnum
from typing import Any, TextIO


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def plain(value: Any, zone: tzinfo | None = None) -> Any:
    """A value as JSON/CSV carry it: times in ISO 8601 (UTC unless a zone is given)."""
    if isinstance(value, datetime):
        return (value.astimezone(zone) if zone else value).isoformat()
    return value


def write_json_lines(
    rows: Iterable[Mapping[str, Any]], out: TextIO, zone: tzinfo | None = None
) -> int:
    count = 0
    for row in rows:
        out.write(json.dumps({k: plain(v, zone) for k, v in row.items()}, ensure_ascii=False))
        out.write("\n")
        count += 1
    return count


def write_csv(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    out: TextIO,
    zone: tzinfo | None = None,
) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow(
            ["" if row.get(c) is None else _csv_cell(plain(row.get(c), zone)) for c in columns]
        )
        count += 1
    return count


def _csv_cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def table_cell(value: Any, zone: tzinfo | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        shown = value.astimezone(zone) if zone else value
        return shown.strftime("%Y-%m-%d %H:%M:%S%z").replace("+0000", "Z")
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def write_table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    out: TextIO,
    zone: tzinfo | None = None,
    title: str | None = None,
) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    count = 0
    for row in rows:
        table.add_row(*(table_cell(row.get(c), zone) for c in columns))
        count += 1
    # A pipe or file has no width: let the table be as wide as its content, not 80 columns.
    width = None if getattr(out, "isatty", lambda: False)() else 400
    Console(file=out, soft_wrap=True, width=width).print(table)
    return count


def write_rows(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    fmt: Format,
    out: TextIO,
    zone: tzinfo | None = None,
    title: str | None = None,
) -> int:
    if fmt is Format.json:
        return write_json_lines(rows, out, zone)
    if fmt is Format.csv:
        return write_csv(rows, columns, out, zone)
    return write_table(rows, columns, out, zone, title)


async def write_rows_async(
    rows: AsyncIterable[Mapping[str, Any]],
    columns: Sequence[str],
    fmt: Format,
    out: TextIO,
    zone: tzinfo | None = None,
    title: str | None = None,
) -> int:
    """As write_rows, for rows fetched page by page from the database. The row source is
    closed here, in this task, even when the reader goes away (`| head` closes the pipe)."""
    closing = getattr(rows, "aclose", None)
    try:
        if fmt is Format.table:
            collected = [row async for row in rows]
            return write_table(collected, columns, out, zone, title)
        count = 0
        writer = csv.writer(out, lineterminator="\n") if fmt is Format.csv else None
        if writer:
            writer.writerow(columns)
        async for row in rows:
            if writer:
                writer.writerow(
                    [
                        "" if row.get(c) is None else _csv_cell(plain(row.get(c), zone))
                        for c in columns
                    ]
                )
            else:
                out.write(
                    json.dumps({k: plain(v, zone) for k, v in row.items()}, ensure_ascii=False)
                )
                out.write("\n")
            count += 1
        return count
    finally:
        if closing is not None:
            await closing()
