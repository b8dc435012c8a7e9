"""The short soak for CI: 25,000 pairs through a real `audit-job run` against a faulty
emulator, RSS sampled throughout; memory stays flat, the rate steady and capped, every pair
final. The long version: `python benchmarks/soak.py` (500,000 pairs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def load_soak():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("audit_job_soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_short_soak_memory_flat_rate_steady(tmp_path: Path) -> None:
    soak = load_soak()
    result = soak.soak(25_000, 2000.0, tmp_path)
    outcome = soak.verdict(result)
    assert outcome["passed"], (outcome, result["duration_seconds"], result["log_tail"])
    assert result["duration_seconds"] < 60, result["duration_seconds"]
    assert len(result["rss"]) >= 20  # sampled throughout, not once
