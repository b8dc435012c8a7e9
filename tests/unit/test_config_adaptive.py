"""[audit] keys of the adaptive limits and the learned rate: defaults, and one precise line
for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit_job.config import AuditSettings, load
from audit_job.errors import EXIT_USAGE, ConfigError


def load_text(tmp_path: Path, text: str) -> AuditSettings:
    path = tmp_path / "audit-job.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return load(str(path), env={}).settings.audit


def test_defaults(tmp_path: Path) -> None:
    audit = load(None, env={}).settings.audit
    assert (audit.max_concurrency, audit.use_learned_rate, audit.learned_rate_days) == (
        256,
        True,
        7,
    )


def test_set_in_the_file(tmp_path: Path) -> None:
    audit = load_text(
        tmp_path,
        "[audit]\nmax_concurrency = 64\nuse_learned_rate = false\nlearned_rate_days = 0.5\n",
    )
    assert (audit.max_concurrency, audit.use_learned_rate, audit.learned_rate_days) == (
        64,
        False,
        0.5,
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("max_concurrency = 0", "max_concurrency: must be an integer >= 1 and <= 4096, got 0"),
        ("learned_rate_days = 0", "learned_rate_days: must be a number > 0 and <= 3650, got 0"),
        (
            'use_learned_rate = "no"',
            'use_learned_rate: must be a boolean (true or false), got "no"',
        ),
    ],
)
def test_bad_values_are_one_line_each(tmp_path: Path, line: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, f"[audit]\n{line}\n")
    assert caught.value.exit_code == EXIT_USAGE
    assert str(caught.value).endswith(f"[audit] {expected} (line 2)")
