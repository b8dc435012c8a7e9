"""`audit-job check APP USER`: one live check, the classified answer and the raw envelope.

The service (the HTTP client and aiohttp) is imported when the command runs: every process
loads this module, `--help` included."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from audit_job.cli.common import loaded_config, run_async
from audit_job.render import Format, write_table

_FIELDS = (
    "app_id",
    "user_id",
    "status",
    "active",
    "class",
    "detail",
    "http_status",
    "status_code",
    "api_code",
    "message",
    "request_id",
    "latency_ms",
    "host",
    "auth",
)


def check(
    ctx: typer.Context,
    app_id: Annotated[str, typer.Argument(metavar="APP", help="Authing application id.")],
    user_id: Annotated[
        str, typer.Argument(metavar="USER", help="User id, username, email, phone...")
    ],
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="table or json.", case_sensitive=False)
    ] = Format.table,
) -> None:
    """Check one user/app pair now (one attempt, no retries) and show the raw answer.

    Exit 0: active or inactive; 3: an error for this pair; 1: credentials or TLS rejected.
    """
    from audit_job.commands.check import check_pair

    if fmt is Format.csv:
        raise typer.BadParameter("check prints table or json", param_hint="--format")
    config = loaded_config(ctx)
    outcome = run_async(check_pair(config, app_id, user_id))
    row = outcome.as_row()
    if fmt is Format.json:
        document = {"result": row, "envelope": outcome.envelope}
        print(json.dumps(document, ensure_ascii=False, indent=2))
    else:
        table_rows = [{"field": name, "value": row[name]} for name in _FIELDS]
        write_table(table_rows, ("field", "value"), sys.stdout, title="check-session-status")
        print("envelope:")
        if outcome.envelope is None:
            print("  (no JSON object in the answer)")
        else:
            print(json.dumps(outcome.envelope, ensure_ascii=False, indent=2))
    sys.stdout.flush()
    if outcome.failure is not None:
        raise outcome.failure
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


def register(app: typer.Typer) -> None:
    """Add the `check` command to the root CLI."""
    app.command("check")(check)
