"""pyproject.toml lists the packages a wheel ships by hand (the migrations folder is mapped
into `audit_job.migrations`, which automatic discovery cannot do): every package folder of
the source tree must be in that list, or an installed audit-job would miss a module."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _source_packages() -> set[str]:
    found = set()
    for init in (ROOT / "audit_job").rglob("__init__.py"):
        parts = init.parent.relative_to(ROOT).parts
        if "__pycache__" not in parts:
            found.add(".".join(parts))
    for init in (ROOT / "migrations").rglob("__init__.py"):
        parts = init.parent.relative_to(ROOT).parts
        found.add(".".join(("audit_job", *parts)))
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
            "packages"
        ]
    )
    missing = _source_packages() - listed
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    assert listed - _source_packages() == set(), "pyproject.toml lists a package that is gone"
