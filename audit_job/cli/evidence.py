"""`audit-job evidence RUN|latest --out FILE [--sign KEY]`, `audit-job evidence keygen`,
and `audit-job verify FILE... [--public-key KEY]` / `audit-job verify --db`.

`verify FILE` needs no database and no configuration: an auditor runs it on a bundle alone.
The services are imported when a command runs (cryptography is not needed by a run)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from typer.core import TyperGroup

from audit_job.cli.common import loaded_config, run_async
from audit_job.errors import ConfigError


class _RunOrCommand(TyperGroup):
    """`evidence RUN ...` is `evidence bundle RUN ...`; `evidence keygen` is a command."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["bundle", *args]
        return super().parse_args(ctx, args)


def _say(line: str) -> None:
    print(line, flush=True)


def register(app: typer.Typer) -> None:
    evidence = typer.Typer(
        cls=_RunOrCommand,
        help="Evidence bundles for auditors: evidence RUN|latest --out FILE, evidence keygen.",
        no_args_is_help=True,
    )
    app.add_typer(evidence, name="evidence")

    @evidence.command("bundle")
    def bundle(
        ctx: typer.Context,
        run: str = typer.Argument(..., help="run id, or latest"),
        out: Path = typer.Option(..., "--out", "-o", help="FILE.tar.gz, FILE.tgz or FILE.zip"),
        sign: Path | None = typer.Option(
            None, "--sign", help="Ed25519 private key (PEM) to sign the manifest with"
        ),
    ) -> None:
        """Write one reproducible archive of a run: its canonical files, the CSVs, the
        configuration without secrets, the chain link, a manifest and a README."""
        from audit_job.commands import evidence as service

        result = run_async(service.make_bundle(loaded_config(ctx).settings, run, out, sign))
        signed = f", signed by key {result.key_fingerprint}" if result.key_fingerprint else ""
        print(
            f"wrote {result.path}: run {result.run_id} ({result.status}), {result.checks} "
            f"checks, digest {result.digest} (link {result.seq}){signed}"
        )

    @evidence.command("keygen")
    def keygen(
        out: str = typer.Option(..., "--out", "-o", help="PREFIX: writes PREFIX.key, PREFIX.pub"),
    ) -> None:
        """Make an Ed25519 key pair for signing bundles (private key mode 600; refuses to
        overwrite)."""
        from audit_job.commands import evidence as service

        private, public, fingerprint = service.keygen(out)
        print(f"wrote {private} (private, mode 600) and {public}; fingerprint {fingerprint}")

    @app.command("verify")
    def verify(
        ctx: typer.Context,
        files: list[Path] = typer.Argument(None, help="bundles to check (offline)"),
        public_key: Path | None = typer.Option(
            None, "--public-key", help="the signer's Ed25519 public key (PEM)"
        ),
        db: bool = typer.Option(False, "--db", help="recompute the hash chain in the database"),
        first: int | None = typer.Option(None, "--from", help="--db: start at this run's link"),
        last: int | None = typer.Option(None, "--to", help="--db: end at this run's link"),
    ) -> None:
        """Check bundles offline (hashes, signature, digest, consistency), or with --db the
        chain over every run in the database. One line per check; exit 1 at the first
        failure, naming it."""
        if db == bool(files):
            raise ConfigError("verify: give bundle FILEs, or --db (not both)")
        if not db and (first is not None or last is not None):
            raise ConfigError("verify: --from and --to go with --db")
        if db and public_key is not None:
            raise ConfigError("verify: --public-key goes with bundle FILEs")
        if db:
            from audit_job.commands import evidence_chain

            settings = loaded_config(ctx).settings
            run_async(evidence_chain.verify_database(settings, _say, first, last))
            return
        from audit_job.commands import evidence as service

        service.verify_bundles(files, _say, public_key)
        count = len(files)
        print(f"valid: {count} bundle{'s' if count > 1 else ''}", file=sys.stderr)
