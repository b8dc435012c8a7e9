"""Rows held back while an earlier slot waits for its row: tokens, the accounted bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from audit_job.commands.daemon.rows import HeldRows, SlotRow
from audit_job.models import RunStatus

T0 = datetime(2026, 5, 5, 10, tzinfo=UTC)


def skipped(seconds: int) -> SlotRow:
    return SlotRow(T0 + timedelta(seconds=seconds), RunStatus.SKIPPED_OVERLAP, "busy")


def test_rows_pass_while_nothing_is_held() -> None:
    held = HeldRows()
    assert not held.holding
    assert not held.hold(skipped(1))
    assert held.end(0, None) == []


def test_a_hold_keeps_rows_until_it_ends_and_gives_those_after_the_accounted_slot() -> None:
    held = HeldRows()
    token = held.start()
    rows = [skipped(s) for s in (1, 2, 3, 4)]
    assert all(held.hold(r) for r in rows)
    # The takeover (or the slot's run) accounted for slots up to 2 s: 1 and 2 have rows.
    assert held.end(token, T0 + timedelta(seconds=2)) == rows[2:]
    assert not held.holding
    assert not held.hold(skipped(5))
    assert held.end(token, None) == []  # ended once


def test_nothing_accounted_yet_gives_every_held_row() -> None:
    held = HeldRows()
    token = held.start()
    held.hold(skipped(1))
    assert held.end(token, None) == [skipped(1)]


def test_an_older_hold_cannot_end_a_newer_one() -> None:
    held = HeldRows()
    old = held.start()
    held.hold(skipped(1))
    new = held.start()  # leadership changed hands and came back: a new takeover
    assert held.holding
    held.hold(skipped(2))
    assert held.end(old, None) == []
    assert held.holding
    held.drop(old)  # nor drop it
    assert held.holding
    assert held.end(new, None) == [skipped(2)]  # the old hold's row went with it


def test_drop_forgets_the_held_rows_and_stale_tokens() -> None:
    held = HeldRows()
    token = held.start()
    held.hold(skipped(1))
    held.drop()  # leadership lost: the next takeover accounts for those slots
    assert not held.holding
    assert held.end(token, None) == []
    token = held.start()
    held.hold(skipped(2))
    held.drop(token)  # that takeover failed
    assert not held.holding and held.end(token, None) == []
