"""`audit-job demo`: see the whole job work, with nothing to set up."""

from __future__ import annotations

import sys
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from audit_job.cli.common import exit_with, run_async
from audit_job.cli.report import print_report
from audit_job.cli.run import EXIT_BY_STATUS, install_stop_signals, print_summary
from audit_job.render import Format

if TYPE_CHECKING:
    from audit_job.commands.demo import DemoResult

NEXT_STEPS = """
Next, try:
  audit-job --config demo.toml results --status error     # the pairs that ended in error
  audit-job --config demo.toml report                     # per-app shares, change vs previous run
  audit-job --config demo.toml changes                    # sessions that appeared or disappeared
  audit-job --config demo.toml violations --open          # sessions that must not exist
  audit-job --config demo.toml events --type 'violation.*'   # the event feed, JSON lines
  audit-job demo                                          # another run: some sessions flip
  sqlite3 {db} 'SELECT * FROM latest_session_state LIMIT 5'

Point it at your own Authing: copy config.example.toml to audit-job.toml, set [authing]
host, export AUTHING_ACCESS_KEY_ID and AUTHING_ACCESS_KEY_SECRET, import your pairs with
`audit-job targets import pairs.csv`, then `audit-job run`.
"""


async def _demo(database: Path, pairs: int, progress: bool) -> DemoResult:
    # Imported here: the demo brings the emulator and Alembic, which other commands do
    # not need loaded, and no process needs them for `--help`.
    import asyncio

    from audit_job.commands import demo as service
    from audit_job.progress import ProgressView

    stop = asyncio.Event()
    install_stop_signals(stop)
    view = ProgressView(bar=progress and sys.stderr.isatty())
    async with view.showing():
        return await service.run_demo(database, pairs, stop, on_start=view.attach)


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        database: Path = typer.Option(Path("demo.db"), "--database", help="SQLite file to use"),
        pairs: int = typer.Option(3000, "--pairs", min=1, max=1_000_000, help="sample pairs"),
        no_progress: bool = typer.Option(False, "--no-progress", help="log lines, no bar"),
    ) -> None:
        """Run an audit against the built-in emulator into a SQLite file, then report."""
        database = database.resolve()
        config_file = database.with_suffix(".toml")
        print(
            f"demo: emulator on loopback, {pairs} sample pairs, database {database}",
            file=sys.stderr,
        )
        result = run_async(_demo(database, pairs, not no_progress))
        print_summary(result.summary, as_json=False)
        print(f"  events written to {result.events_file} (one JSON object per line)")
        print()
        print_report(result.report, Format.table, UTC)
        if not config_file.exists():
            config_file.write_text(
                "# Written by `audit-job demo`: points the query commands at the demo database.\n"
                f'[database]\nurl = "sqlite+aiosqlite:///{database}"\n'
                "\n# Where the demo's runs deliver their events (audit-job events sinks).\n"
                f'[[sink]]\nname = "demo-file"\ntype = "jsonl"\npath = "{result.events_file}"\n',
                encoding="utf-8",
            )
            config_file.chmod(0o600)
        print(NEXT_STEPS.format(db=database).replace("demo.toml", str(config_file.name)))
        status = result.summary.status
        # Per-pair errors are part of the demo (unknown users, a retired app): not a failure.
        exit_with(0 if EXIT_BY_STATUS[status] in (0, 3) else EXIT_BY_STATUS[status])
