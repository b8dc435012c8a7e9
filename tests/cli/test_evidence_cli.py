"""`audit-job evidence`, `verify` and `verify --db` as real subprocesses, on runs made by
`audit-job run` against the in-process emulator: bundles are byte-identical when made
twice, any change to one is named, signatures hold only with the right key, a changed
database is named run by run, pruned runs keep the chain verifiable, and no secret
reaches a bundle."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import cli_env, write_config
from pgsupport import only_pg
from sqlalchemy import select, text

from audit_job.commands.evidence import write_scheduled_bundle
from audit_job.commands.prune import prune
from audit_job.config import Settings
from audit_job.emulator import Emulator, EmulatorOptions
from audit_job.evidence import archive, canonical
from audit_job.evidence.files import csv_value
from audit_job.evidence.manifest import describe_files, manifest_document, sums_document
from audit_job.store import targets as target_store
from audit_job.store.engine import opened
from audit_job.store.tables import audit_config, session_check

pytestmark = pytest.mark.timeout(120)
only_sqlite = pytest.mark.parametrize("backend", ["sqlite"])
PAIRS = [(app, f"user-{n:03d}") for app in ("crm", "mail") for n in range(40)]
PAIRS += [("crm", "missing-user-1")]  # a permanent per-pair error


async def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "audit_job",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


def write_cfg(path: Path, db_url: str, emulator_url: str, **sections: dict) -> str:  # type: ignore[type-arg]
    write_config(
        path,
        {
            "database": {"url": db_url},
            "authing": {
                "host": emulator_url,
                "access_key_id": "ak-demo",
                "access_key_secret": "sk-demo",
                "timeout_seconds": 5,
            },
            "audit": {"concurrency": 8, "rate_per_second": 5000, "batch_size": 20},
            **sections,
        },
    )
    return str(path)


async def audited(db_url: str, tmp_path: Path, runs: int, **sections: dict) -> str:  # type: ignore[type-arg]
    """A database with `runs` finished runs by `audit-job run`; the config's path."""
    async with opened(db_url) as engine, engine.begin() as conn:
        await target_store.save_batch(conn, [(a, u, None) for a, u in PAIRS])
    options = EmulatorOptions(seed=3)
    if "authing" in sections:
        options.access_key_secret = sections["authing"]["access_key_secret"]
    async with Emulator(options) as emu:
        cfg = write_cfg(tmp_path / "audit-job.toml", db_url, emu.url, **sections)
        for _ in range(runs):
            done = await cli("--config", cfg, "run", "--no-progress", "--json", cwd=tmp_path)
            assert done.returncode == 3, done.stderr  # the missing user: completed_with_errors
    return cfg


def unpack(bundle: Path, into: Path) -> Path:
    into.mkdir()
    archive.extract(bundle, into)
    return into


def repack(folder: Path, out: Path) -> Path:
    archive.write_archive(out, [(p.name, p) for p in folder.iterdir()], 0)
    return out


def reseal(folder: Path, digest: bool = False) -> None:
    """What a forger who knows the format does: recompute SHA256SUMS and the manifest (and,
    with `digest`, the run's digest in chain.json and the manifest) after an edit."""
    run_digest = hashlib.sha256(
        (folder / "run.json").read_bytes() + (folder / "results.jsonl").read_bytes()
    ).hexdigest()
    if digest:
        chain = json.loads((folder / "chain.json").read_bytes())
        chain["digest"] = run_digest
        (folder / "chain.json").write_bytes(canonical.line(chain))
    manifest = json.loads((folder / "manifest.json").read_bytes())
    names = [entry["name"] for entry in manifest["files"]]
    described = describe_files(folder, names)
    body = manifest_document(manifest["run_id"], run_digest if digest else manifest["digest"],
                             described)  # fmt: skip
    (folder / "manifest.json").write_bytes(body)
    sums = [(d["name"], d["sha256"]) for d in described] + [
        ("manifest.json", hashlib.sha256(body).hexdigest())
    ]
    (folder / "SHA256SUMS").write_bytes(sums_document(sums))


async def test_bundles_are_byte_identical_and_verify_with_standard_tools(
    db_url: str, tmp_path: Path
) -> None:
    cfg = await audited(db_url, tmp_path, runs=2)
    outputs = {}
    for name in ("a.tar.gz", "b.tar.gz", "a.zip", "b.zip", "one.tar.gz"):
        run = "1" if name == "one.tar.gz" else "latest"
        made = await cli("--config", cfg, "evidence", run, "--out", name, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        outputs[name] = (tmp_path / name).read_bytes()
    assert outputs["a.tar.gz"] == outputs["b.tar.gz"]
    assert outputs["a.zip"] == outputs["b.zip"]
    assert "run 1 (completed_with_errors), 81 checks" in made.stdout

    checked = await cli("verify", "a.tar.gz", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[0] == "a.tar.gz:" and all(line[:3] in ("ok ", "-- ") for line in lines[1:])
    assert any(line.startswith("ok snapshot.csv: 81 pairs, each with exactly one result")
               for line in lines)  # fmt: skip
    both = await cli("verify", "one.tar.gz", "a.zip", cwd=tmp_path)
    assert both.returncode == 0, both.stderr
    assert "ok chain: link 2 (run 2) follows link 1" in both.stdout

    folder = unpack(tmp_path / "a.tar.gz", tmp_path / "x")
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True,
                          text=True)  # fmt: skip
    listed = json.loads((folder / "manifest.json").read_text())["files"]
    # SHA256SUMS covers the manifest too
    assert sums.returncode == 0 and sums.stdout.count(": OK") == len(listed) + 1 >= 9, sums.stdout
    concatenated = subprocess.run("cat run.json results.jsonl | sha256sum", shell=True,
                                  cwd=folder, capture_output=True, text=True)  # fmt: skip
    chain = json.loads((folder / "chain.json").read_text())
    assert concatenated.stdout.split()[0] == chain["digest"]
    header = json.loads((folder / "run.json").read_text())
    assert (header["id"], header["chain_seq"], header["total"]) == (2, 2, 81)
    assert (
        header["prev_digest"]
        == json.loads((unpack(tmp_path / "one.tar.gz", tmp_path / "y") / "chain.json").read_text())[
            "digest"
        ]
    )


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def add_row(folder: Path) -> None:
    lines = (folder / "results.jsonl").read_bytes().splitlines(keepends=True)
    row = json.loads(lines[-1])
    row["user_id"] += "-x"
    (folder / "results.jsonl").write_bytes(b"".join([*lines, canonical.line(row)]))


def repeat_row(folder: Path) -> None:
    lines = (folder / "results.jsonl").read_bytes().splitlines(keepends=True)
    (folder / "results.jsonl").write_bytes(b"".join([*lines[:5], lines[4], *lines[6:]]))


def swap_answers(folder: Path) -> None:
    lines = (folder / "results.jsonl").read_bytes().splitlines(keepends=True)
    rows = [json.loads(line) for line in lines]
    first = next(n for n, r in enumerate(rows) if r["status"] == "active")
    second = next(n for n, r in enumerate(rows) if r["status"] == "inactive")
    for key in ("status", "active"):
        rows[first][key], rows[second][key] = rows[second][key], rows[first][key]
    (folder / "results.jsonl").write_bytes(b"".join(canonical.line(r) for r in rows))
    with (folder / "results.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(canonical.CHECK_FIELDS)
        writer.writerows([csv_value(r[k]) for k in canonical.CHECK_FIELDS] for r in rows)


# (edit, reseal: none / manifest / manifest + digest, what verify must name)
FORGERIES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "remove results.csv": (lambda d: (d / "results.csv").unlink(), "none",
                           "results.csv: listed in manifest.json but missing"),
    "remove SHA256SUMS": (lambda d: (d / "SHA256SUMS").unlink(), "none", "SHA256SUMS: missing"),
    "remove manifest.json": (lambda d: (d / "manifest.json").unlink(), "none",
                             "manifest.json: missing"),
    "add a file": (lambda d: (d / "extra.txt").write_text("x"), "none",
                   "extra.txt: in the bundle but not in manifest.json"),
    "add a row": (add_row, "manifest", "digest: SHA-256 of run.json + results.jsonl"),
    "add a row, digest redone": (add_row, "digest",
                                 "run.json: total is 81 but results.jsonl has 82"),
    "repeat a row": (repeat_row, "digest",
                     "results.jsonl line 6: pair (crm, user-003) appears twice"),
    "swap two answers": (swap_answers, "manifest", "digest: SHA-256 of run.json + results.jsonl"),
}  # fmt: skip


@only_sqlite
async def test_any_change_to_a_bundle_is_named(db_url: str, tmp_path: Path) -> None:
    cfg = await audited(db_url, tmp_path, runs=1)
    made = await cli("--config", cfg, "evidence", "1", "--out", "good.tar.gz", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    original = unpack(tmp_path / "good.tar.gz", tmp_path / "good")
    cases = [(f"flip a byte of {p.name}", p.name, "none", p.name) for p in original.iterdir()]
    cases += [(label, None, how, named) for label, (_edit, how, named) in FORGERIES.items()]
    for number, (label, flipped, how, named) in enumerate(cases):
        folder = tmp_path / f"case-{number}"
        shutil.copytree(original, folder)
        if flipped is not None:
            flip(folder / flipped)
        else:
            FORGERIES[label][0](folder)
        if how != "none":
            reseal(folder, digest=how == "digest")
        bundle = repack(folder, tmp_path / f"case-{number}.tar.gz")
        checked = await cli("verify", bundle.name, cwd=tmp_path)
        assert checked.returncode == 1, (label, checked.stdout)
        assert "Traceback" not in checked.stderr
        message = checked.stderr.strip()
        assert message.startswith(f"{bundle.name}: "), (label, message)
        assert named in message, (label, message)


@only_sqlite
async def test_a_signed_bundle_verifies_only_with_its_key(db_url: str, tmp_path: Path) -> None:
    cfg = await audited(db_url, tmp_path, runs=1)
    for prefix in ("signer", "stranger"):
        made = await cli("evidence", "keygen", "--out", prefix, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
    again = await cli("evidence", "keygen", "--out", "signer", cwd=tmp_path)
    assert again.returncode == 2 and "not overwriting" in again.stderr
    made = await cli("--config", cfg, "evidence", "latest", "--out", "s.tar.gz", "--sign",
                     "signer.key", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    fingerprint = made.stdout.split("signed by key ")[1].strip()
    good = await cli("verify", "s.tar.gz", "--public-key", "signer.pub", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert f"valid Ed25519 signature of manifest.json by key {fingerprint}" in good.stdout
    unchecked = await cli("verify", "s.tar.gz", cwd=tmp_path)
    assert unchecked.returncode == 0 and "not checked (pass --public-key)" in unchecked.stdout
    wrong = await cli("verify", "s.tar.gz", "--public-key", "stranger.pub", cwd=tmp_path)
    assert wrong.returncode == 1
    assert "manifest.json.sig: made with key" in wrong.stderr

    # A forger who redoes every hash still cannot redo the signature.
    folder = unpack(tmp_path / "s.tar.gz", tmp_path / "s")
    swap_answers(folder)
    reseal(folder, digest=True)
    forged = repack(folder, tmp_path / "forged.tar.gz")
    unsigned_check = await cli("verify", forged.name, cwd=tmp_path)
    assert unsigned_check.returncode == 0  # self-consistent: only the signature can tell
    signed_check = await cli("verify", forged.name, "--public-key", "signer.pub", cwd=tmp_path)
    assert signed_check.returncode == 1
    assert "manifest.json.sig: the signature does not verify" in signed_check.stderr
    unsigned = await cli("verify", "s.tar.gz", "--public-key", "signer.pub", cwd=tmp_path)
    assert unsigned.returncode == 0
    plain = await cli("--config", cfg, "evidence", "latest", "--out", "p.tar.gz", cwd=tmp_path)
    assert plain.returncode == 0
    needs_signature = await cli("verify", "p.tar.gz", "--public-key", "signer.pub", cwd=tmp_path)
    assert needs_signature.returncode == 1 and "not signed" in needs_signature.stderr


async def test_verify_db_names_the_run_whose_check_was_changed(db_url: str, tmp_path: Path) -> None:
    cfg = await audited(db_url, tmp_path, runs=3)
    clean = await cli("--config", cfg, "verify", "--db", cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.splitlines()[-1].startswith("ok chain: links 1-3 verify")
    async with opened(db_url) as engine, engine.begin() as conn:
        row_id = (await conn.execute(
            select(session_check.c.id).where(session_check.c.run_id == 2,
                                             session_check.c.active.is_not(None)).limit(1)
        )).scalar_one()  # fmt: skip
        await conn.execute(
            text("UPDATE session_check SET active = NOT active WHERE id = :id"), {"id": row_id}
        )
    changed = await cli("--config", cfg, "verify", "--db", cwd=tmp_path)
    assert changed.returncode == 1
    assert changed.stderr.startswith("run 2 (link 2): its stored digest"), changed.stderr
    assert "ok run 1 (link 1)" in changed.stdout
    partial = await cli("--config", cfg, "verify", "--db", "--to", "1", cwd=tmp_path)
    assert partial.returncode == 0, partial.stderr
    refused = await cli("--config", cfg, "evidence", "2", "--out", "b.tar.gz", cwd=tmp_path)
    assert refused.returncode == 1 and "no longer give the digest" in refused.stderr
    assert not (tmp_path / "b.tar.gz").exists()


@only_sqlite
async def test_pruned_runs_keep_the_chain_verifiable(db_url: str, tmp_path: Path) -> None:
    cfg = await audited(db_url, tmp_path, runs=3)
    async with opened(db_url) as engine:
        pruned = await prune(engine, 30, now=datetime.now(UTC) + timedelta(days=60))
    assert pruned.runs == [1, 2]
    checked = await cli("--config", cfg, "verify", "--db", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert "content pruned" in lines[0] and "content pruned" in lines[1]
    assert "81 checks give its digest" in lines[2]
    refused = await cli("--config", cfg, "evidence", "1", "--out", "b.tar.gz", cwd=tmp_path)
    assert refused.returncode == 1 and "were pruned" in refused.stderr


@only_pg
async def test_no_secret_reaches_a_bundle(db_url: str, tmp_path: Path) -> None:
    secret, db_password, source_password = "sk-Evidence-4f1b9", "pw-Db-93ac1", "pw-Src-77e0"
    with_password = db_url.replace("postgres@", f"postgres:{db_password}@")
    source = f"{db_url}?password={source_password}"  # a password as a query parameter
    cfg = await audited(
        with_password,
        tmp_path,
        runs=1,
        authing={"access_key_id": "ak-demo", "access_key_secret": secret, "timeout_seconds": 5},
        source={"url": source, "query": "SELECT app_id, user_id FROM audit_target"},
    )
    made = await cli("--config", cfg, "evidence", "latest", "--out", "b.zip", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    folder = unpack(tmp_path / "b.zip", tmp_path / "b")
    config = json.loads((folder / "config.json").read_text())
    assert config["source"]["query"] == "SELECT app_id, user_id FROM audit_target"
    assert "access_key_secret" not in config["authing"]
    for path in [*folder.iterdir(), tmp_path / "b.zip"]:
        data = path.read_bytes()
        for needle in (secret, db_password, source_password):
            assert needle.encode() not in data, (path.name, needle)
    async with opened(db_url) as engine, engine.connect() as conn:
        bodies = [row.body for row in await conn.execute(select(audit_config.c.body))]
    assert bodies and not any(s in body for body in bodies for s in (secret, db_password))


@only_sqlite
async def test_the_daemons_bundles_are_written_signed_and_kept_to_a_number(
    db_url: str, tmp_path: Path
) -> None:
    await audited(db_url, tmp_path, runs=3)
    made = await cli("evidence", "keygen", "--out", "k", cwd=tmp_path)
    assert made.returncode == 0
    folder = tmp_path / "evidence"
    settings = Settings.model_validate(
        {
            "database": {"url": db_url},
            "evidence": {"dir": str(folder), "keep": 2, "sign_key": str(tmp_path / "k.key")},
        }
    )
    async with opened(db_url) as engine:
        written = [await write_scheduled_bundle(settings, engine, run_id) for run_id in (1, 2, 3)]
        assert await write_scheduled_bundle(settings, engine, 99) is None  # no such run: logged
    assert [p.name for p in sorted(folder.iterdir())] == [
        "audit-job-run-00000002.tar.gz",
        "audit-job-run-00000003.tar.gz",
    ]
    assert written[2] == folder / "audit-job-run-00000003.tar.gz"
    checked = await cli("verify", *(str(p) for p in sorted(folder.iterdir())), "--public-key",
                        "k.pub", cwd=tmp_path)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "ok chain: link 3 (run 3) follows link 2" in checked.stdout


async def test_verify_usage_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for args in (("verify",), ("verify", "x.tar.gz", "--db"), ("verify", "x.tar.gz", "--to", "3")):
        done = await cli(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    missing = await cli("verify", "nope.tar.gz", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.startswith("nope.tar.gz: cannot read")


@only_sqlite
async def test_tar_members_of_a_bundle_are_plain(db_url: str, tmp_path: Path) -> None:
    cfg = await audited(db_url, tmp_path, runs=1)
    made = await cli("--config", cfg, "evidence", "1", "--out", "b.tgz", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    with tarfile.open(tmp_path / "b.tgz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, "", "", 0o644)}
