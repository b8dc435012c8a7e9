"""The event and violation commands load their services when they run: registering them
(what `audit-job --help` does) imports none of the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("sqlalchemy", "aiohttp", "pydantic", "rich", "tenacity", "orjson", "asyncpg")
PROBE = f"""
import json, sys
import audit_job.cli.common, audit_job.render, typer  # what every command module shares
before = set(sys.modules)
import audit_job.cli.events, audit_job.cli.violations
app = typer.Typer()
audit_job.cli.events.register(app)
audit_job.cli.violations.register(app)
added = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in {HEAVY!r})
print(json.dumps(added))
"""


def test_registering_the_commands_imports_nothing_heavy() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == []
