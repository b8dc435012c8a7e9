"""`audit-job db ...` and `audit-job config show`.

The service (and Alembic with it, ~10 MB) is imported when a command runs: every process
loads this module, and a long run has no use for migrations."""

from __future__ import annotations

import json
import sys

import typer

from audit_job.cli.common import loaded_config, run_async
from audit_job.render import Format


def register(app: typer.Typer) -> None:
    db = typer.Typer(help="Create and migrate the schema (Alembic).")
    app.add_typer(db, name="db")
    cfg = typer.Typer(help="Inspect the configuration.")
    app.add_typer(cfg, name="config")

    @db.command("upgrade")
    def upgrade(
        ctx: typer.Context, revision: str = typer.Argument("head", help="target revision")
    ) -> None:
        """Create or migrate the tables to the latest (or given) revision."""
        from audit_job.commands import admin as service

        result = run_async(service.db_upgrade(loaded_config(ctx), revision))
        print(f"{result['database']}: schema at revision {result['to']} (was {result['from']})")

    @db.command("downgrade")
    def downgrade(
        ctx: typer.Context, revision: str = typer.Argument(..., help="target revision, or base")
    ) -> None:
        """Migrate the schema back (base drops every audit-job table)."""
        from audit_job.commands import admin as service

        result = run_async(service.db_downgrade(loaded_config(ctx), revision))
        print(f"{result['database']}: schema at revision {result['to']} (was {result['from']})")

    @db.command("current")
    def current(ctx: typer.Context) -> None:
        """Show the schema revision of the database and the one this code needs."""
        from audit_job.commands import admin as service

        result = run_async(service.db_current(loaded_config(ctx)))
        state = (
            "up to date" if result["current"] == result["head"] else "needs: audit-job db upgrade"
        )
        print(
            f"{result['database']}: revision {result['current']} (head {result['head']}, {state})"
        )

    @cfg.command("show")
    def show(
        ctx: typer.Context,
        fmt: Format = typer.Option(Format.table, "--format", "-f", help="table (TOML) or json"),
    ) -> None:
        """Print the effective configuration, secrets masked."""
        from audit_job.commands import admin as service
        from audit_job.commands import policies

        loaded = loaded_config(ctx)
        origin, data = service.config_show(loaded)
        for warning in run_async(policies.warnings_for(loaded.settings, loaded.origin)):
            print(f"warning: {warning}", file=sys.stderr)
        if fmt is Format.json:
            json.dump({"origin": origin, "settings": data}, sys.stdout, indent=2)
            print()
            return
        print(f"# effective configuration from {origin}")
        for section, values in data.items():
            # [[policy]] and [[sink]] are arrays of tables: one header per block
            blocks = values if isinstance(values, list) else [values]
            if not blocks:
                print(f"\n# [[{section}]]: none")
            for block in blocks:
                print(f"\n[[{section}]]" if isinstance(values, list) else f"\n[{section}]")
                for key, value in block.items():
                    if value is None:
                        print(f"# {key} = (not set)")
                    else:
                        print(f"{key} = {json.dumps(value, ensure_ascii=False)}")
