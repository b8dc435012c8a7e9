"""Configuration loading in-process: lookup order, env overrides, one precise line per error."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit_job import config
from audit_job.config import DEFAULT_DATABASE_URL, load, masked
from audit_job.errors import EXIT_USAGE, ConfigError


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, so no stray ./audit-job.toml is picked up."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def error_of(text: str, folder: Path, name: str = "bad.toml", relative: bool = False) -> str:
    path = write(folder / name, text)
    with pytest.raises(ConfigError) as caught:
        load(name if relative else str(path), env={})
    assert caught.value.exit_code == EXIT_USAGE
    return str(caught.value)


def test_defaults_without_any_file(cwd: Path) -> None:
    loaded = load(None, env={})
    settings = loaded.settings
    assert loaded.origin == "built-in defaults"
    assert loaded.warnings == []
    assert settings.database.url == DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///./audit.db"
    assert settings.authing.host == "https://api.authing.cn"
    assert settings.authing.auth == "signature"
    assert settings.authing.verify_tls is True
    assert settings.authing.timeout_seconds == 10
    assert settings.authing.access_key_id is None
    assert settings.authing.access_key_secret is None
    assert (settings.audit.concurrency, settings.audit.rate_per_second) == ("auto", 20)
    assert (settings.audit.max_attempts, settings.audit.batch_size) == (5, 500)
    assert settings.source.url is None and settings.source.query is None
    assert settings.schedule.cron == "0 * * * *"
    assert settings.schedule.interval_seconds is None
    assert settings.schedule.timezone == "UTC"


def test_lookup_order_explicit_then_env_then_cwd_then_defaults(cwd: Path, tmp_path: Path) -> None:
    explicit = write(tmp_path / "explicit.toml", "[audit]\nconcurrency = 3\n")
    from_env = write(tmp_path / "env.toml", "[audit]\nconcurrency = 5\n")
    write(cwd / "audit-job.toml", "[audit]\nconcurrency = 7\n")
    env = {"AUDIT_JOB_CONFIG": str(from_env)}

    first = load(str(explicit), env=env)
    assert (first.settings.audit.concurrency, first.origin) == (3, str(explicit))
    second = load(None, env=env)
    assert (second.settings.audit.concurrency, second.origin) == (5, str(from_env))
    third = load(None, env={})
    assert (third.settings.audit.concurrency, third.origin) == (7, "audit-job.toml")
    (cwd / "audit-job.toml").unlink()
    fourth = load(None, env={})
    assert (fourth.settings.audit.concurrency, fourth.origin) == ("auto", "built-in defaults")


def test_named_file_must_exist_even_when_cwd_has_one(cwd: Path, tmp_path: Path) -> None:
    write(cwd / "audit-job.toml", "[audit]\nconcurrency = 7\n")
    missing = tmp_path / "nope.toml"
    for explicit, env in ((str(missing), {}), (None, {"AUDIT_JOB_CONFIG": str(missing)})):
        with pytest.raises(ConfigError) as caught:
            load(explicit, env=env)
        assert str(caught.value) == f"{missing}: no such configuration file"


def test_environment_overrides_the_file(cwd: Path, tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        '[database]\nurl = "sqlite+aiosqlite:///./file.db"\n'
        '[authing]\naccess_key_id = "file-id"\naccess_key_secret = "file-secret"\n',
    )
    env = {
        "AUDIT_JOB_DATABASE_URL": "postgresql://app:pw@db.example/audit",
        "AUTHING_ACCESS_KEY_ID": "env-id",
        "AUTHING_ACCESS_KEY_SECRET": "env-secret",
    }
    loaded = load(str(path), env=env)
    # postgresql:// is accepted and given the async driver the tool ships with
    assert loaded.settings.database.url == "postgresql+asyncpg://app:pw@db.example/audit"
    assert loaded.require_credentials() == ("env-id", "env-secret")
    assert load(str(path), env={}).require_credentials() == ("file-id", "file-secret")
    # Overrides apply with no file at all, too.
    assert load(None, env=env).require_credentials() == ("env-id", "env-secret")


def test_missing_secret_is_named_when_required(cwd: Path) -> None:
    loaded = load(None, env={"AUTHING_ACCESS_KEY_ID": "only-the-id"})
    with pytest.raises(ConfigError) as caught:
        loaded.require_credentials()
    message = str(caught.value)
    assert message.startswith("built-in defaults: [authing] access_key_secret: required")
    assert "AUTHING_ACCESS_KEY_SECRET" in message
    assert caught.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[audit]\nconcurency = 3\n",
            "bad.toml: [audit] concurency: unknown key (did you mean 'concurrency'?) (line 2)",
        ),
        (
            '[audit]\nbatch_size = 10\nconcurrency = "ten"\n',
            'bad.toml: [audit] concurrency: must be "auto" or an integer >= 1 and <= 4096, '
            'got "ten" (line 3)',
        ),
        (
            "[audit]\nconcurrency = 0\n",
            'bad.toml: [audit] concurrency: must be "auto" or an integer >= 1 and <= 4096, '
            "got 0 (line 2)",
        ),
        (
            "[audit]\nconcurrency = 2.5\n",
            'bad.toml: [audit] concurrency: must be "auto" or an integer >= 1 and <= 4096, '
            "got 2.5 (line 2)",
        ),
        (
            "[audit]\nrate_per_second = -1\n",
            "bad.toml: [audit] rate_per_second: must be a number > 0 and <= 1000000, "
            "got -1 (line 2)",
        ),
        (
            '[authing]\nauth = "basic"\n',
            'bad.toml: [authing] auth: must be one of "signature", "token", got "basic" (line 2)',
        ),
        (
            '[authing]\nverify_tls = "no"\n',
            'bad.toml: [authing] verify_tls: must be a boolean (true or false), got "no" (line 2)',
        ),
        (
            '[schedule]\ntimezone = "Mars/Olympus"\n',
            "bad.toml: [schedule] timezone: must be an IANA time zone name such as UTC or "
            'Asia/Shanghai, got "Mars/Olympus" (line 2)',
        ),
    ],
    ids=["typo", "wrong-type", "out-of-range", "float-for-int", "negative", "enum", "bool", "tz"],
)
def test_each_validation_error_is_one_precise_line(
    text: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    message = error_of(text, tmp_path, relative=True)
    assert message == expected
    assert "\n" not in message


def test_unknown_section_suggests_the_known_one(tmp_path: Path) -> None:
    message = error_of("[audti]\nconcurrency = 1\n", tmp_path)
    assert message.startswith(f"{tmp_path / 'bad.toml'}: ")
    assert "audti" in message
    assert "unknown section (did you mean 'audit'?)" in message
    assert "(line 1)" in message


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    message = error_of("[audit]\nconcurrency = 4\nbatch_size = \n", tmp_path)
    assert message.startswith(f"{tmp_path / 'bad.toml'}: invalid TOML: ")
    assert "line 3" in message
    assert "\n" not in message


def test_non_utf8_file_is_refused_with_a_position(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[audit]\n# caf\xe9\nconcurrency = 2\n")
    with pytest.raises(ConfigError, match=r"latin1\.toml: not UTF-8 text \(byte 13\)"):
        load(str(path), env={})


def test_env_override_is_validated_and_its_password_not_echoed(cwd: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(None, env={"AUDIT_JOB_DATABASE_URL": "postgresql+asyncpgg://u:hunter2@h/db"})
    message = str(caught.value)
    assert message.startswith("built-in defaults: [database] url: must be a database URL")
    assert "hunter2" not in message
    assert "postgresql+asyncpgg://u:********@h/db" in message


def test_masked_hides_secret_and_database_password(cwd: Path) -> None:
    loaded = load(
        None,
        env={
            "AUTHING_ACCESS_KEY_SECRET": "very-secret-value",
            "AUDIT_JOB_DATABASE_URL": "postgresql+asyncpg://audit:p%40ss/word@db:5432/audit",
        },
    )
    assert "very-secret-value" not in repr(loaded.settings)
    shown = masked(loaded.settings)
    assert shown["authing"]["access_key_secret"] == "********"
    assert shown["database"]["url"] == "postgresql+asyncpg://audit:********@db:5432/audit"
    assert "very-secret-value" not in str(shown) and "word" not in str(shown)
    # Nothing to mask: nothing is invented.
    plain = masked(load(None, env={}).settings)
    assert plain["authing"]["access_key_secret"] is None
    assert plain["database"]["url"] == DEFAULT_DATABASE_URL


def test_world_readable_file_with_a_secret_warns(tmp_path: Path) -> None:
    text = '[authing]\naccess_key_secret = "s3cr3t-in-file"\n'
    loose = write(tmp_path / "loose.toml", text, mode=0o644)
    [warning] = load(str(loose), env={}).warnings
    assert warning.startswith(f"{loose}: holds the access key secret")
    assert "644" in warning and f"chmod 600 {loose}" in warning
    assert "s3cr3t-in-file" not in warning
    tight = write(tmp_path / "tight.toml", text, mode=0o600)
    assert load(str(tight), env={}).warnings == []


def test_verify_tls_false_warns(tmp_path: Path) -> None:
    path = write(tmp_path / "tls.toml", "[authing]\nverify_tls = false\n")
    [warning] = load(str(path), env={}).warnings
    assert "[authing] verify_tls = false" in warning
    assert "NOT verified" in warning
    assert load(str(write(tmp_path / "ok.toml", "")), env={}).warnings == []


def test_cron_and_interval_are_exclusive(tmp_path: Path) -> None:
    message = error_of('[schedule]\ncron = "*/5 * * * *"\ninterval_seconds = 60\n', tmp_path)
    assert "set either cron or interval_seconds, not both" in message
    assert (
        config.load(
            str(write(tmp_path / "iv.toml", "[schedule]\ninterval_seconds = 60\n")), env={}
        ).settings.schedule.interval_seconds
        == 60
    )
