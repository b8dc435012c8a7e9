"""The `audit-job` command line: global options, command families, errors to exit codes.

Each family lives in its own module exposing `register(app)`. Commands call services in
`audit_job.commands` and print what they return; expected failures are AuditJobError
subclasses, printed here as one line on stderr with the exit code the class carries.
"""

from __future__ import annotations

import logging
import sys
import traceback
from enum import StrEnum

import typer

from audit_job import __version__, logs
from audit_job.cli import admin, check, daemon, demo, emulator, kick, report, run, targets
from audit_job.cli import events as events_cli
from audit_job.cli import evidence as evidence_cli
from audit_job.cli import violations as violations_cli
from audit_job.cli.common import Globals
from audit_job.errors import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_USAGE, AuditJobError

app = typer.Typer(
    name="audit-job",
    help="Audit Authing login sessions for user/app pairs into SQL tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def _version(value: bool) -> None:
    if value:
        print(f"audit-job {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    config_path: str | None = typer.Option(
        None, "--config", "-c", help="TOML file (default: $AUDIT_JOB_CONFIG or ./audit-job.toml)"
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logs and tracebacks."),
    log_format: LogFormat = typer.Option(LogFormat.text, "--log-format", help="text or json."),
    log_file: str | None = typer.Option(None, "--log-file", help="Write logs here, not stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    logs.setup(verbose=verbose, fmt=log_format.value, file=log_file)
    ctx.obj = Globals(config_path=config_path, verbose=verbose, log_format=log_format.value)


for family in (
    admin,
    targets,
    run,
    demo,
    check,
    emulator,
    report,
    daemon,
    events_cli,
    violations_cli,
    kick,
):
    family.register(app)
evidence_cli.register(app)  # evidence bundles, keygen, verify


def main(argv: list[str] | None = None) -> int:
    command = typer.main.get_command(app)
    verbose = "-v" in (argv or sys.argv) or "--verbose" in (argv or sys.argv)
    try:
        # Standalone mode prints usage errors (exit 2) itself and turns Exit into SystemExit.
        command.main(args=argv, prog_name="audit-job", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
    except KeyboardInterrupt:
        print("audit-job: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except AuditJobError as exc:
        if verbose:
            traceback.print_exc()
        print(logs.redact(str(exc)), file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        logging.getLogger("audit_job").debug("unexpected error", exc_info=True)
        detail = logs.redact(f"{type(exc).__name__}: {exc}")
        hint = "" if verbose else " (run with --verbose for the traceback)"
        print(f"audit-job: internal error: {detail}{hint}", file=sys.stderr)
        return EXIT_FATAL
    return 0
