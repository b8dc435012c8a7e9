"""What ships in the package is portable: no path of one machine in its text."""

from __future__ import annotations

import re
from pathlib import Path

import audit_job

PACKAGE = Path(audit_job.__file__).resolve().parent
ROOT = PACKAGE.parent
# An absolute path under a user's or a workspace's folder names one machine's layout.
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|home|Users|root|mnt|srv)/[\w.-]+")


def shipped_text_files() -> list[Path]:
    files = [p for p in PACKAGE.rglob("*") if p.suffix in (".py", ".mako", ".md", ".txt")]
    files += [p for p in (ROOT / "migrations").rglob("*") if p.suffix in (".py", ".mako")]
    files += [p for p in (ROOT / "tests").rglob("*.py")]
    return sorted(files)


def test_no_machine_specific_path_in_the_package_or_its_tests() -> None:
    found = []
    for path in shipped_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
