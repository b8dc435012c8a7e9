"""Fixtures of the reliability suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from relsupport import Processes, processes


@pytest.fixture
def procs() -> Iterator[Processes]:
    """CLI subprocesses of one test, killed (whole process group) when it ends."""
    with processes() as started:
        yield started
