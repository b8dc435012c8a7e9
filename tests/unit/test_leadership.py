"""The daemon's leadership state machine, on an injected monotonic clock."""

from __future__ import annotations

from audit_job.commands.daemon.leadership import Gained, Leadership, SteppedDown

LEASE = 15.0


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def leading(epoch: int = 1) -> tuple[Leadership, Clock]:
    clock = Clock()
    leadership = Leadership(LEASE, clock)
    assert leadership.checked(epoch, clock.now) == [Gained(epoch)]
    return leadership, clock


def test_a_new_node_does_not_lead_and_gains_the_epoch_it_is_given() -> None:
    clock = Clock()
    leadership = Leadership(LEASE, clock)
    assert not leadership.is_leader and leadership.epoch is None
    assert not leadership.holds(1)
    assert leadership.checked(None, clock.now) == []  # someone else leads: nothing changes
    assert leadership.checked(4, clock.now) == [Gained(4)]
    assert leadership.is_leader and leadership.epoch == 4
    assert leadership.holds(4) and not leadership.holds(3)


def test_a_renewal_in_time_moves_the_deadline_on_from_when_the_check_began() -> None:
    leadership, clock = leading()
    clock.now = 110.0
    began = clock.now
    clock.now = 112.0  # the check took 2 s: the deadline counts from its start
    assert leadership.checked(1, began) == []
    clock.now = began + LEASE - 0.001
    assert leadership.holds(1)
    clock.now = began + LEASE
    assert not leadership.is_leader and leadership.epoch == 1  # lapsed, epoch kept


def test_the_lease_lapses_on_the_clock_alone() -> None:
    leadership, clock = leading()
    clock.now = 100.0 + LEASE - 0.001
    assert leadership.is_leader
    clock.now = 100.0 + LEASE
    assert not leadership.is_leader and not leadership.holds(1)


def test_lapsed_then_renewed_is_a_new_leadership_of_the_same_epoch() -> None:
    leadership, clock = leading()
    clock.now = 130.0
    assert leadership.checked(1, clock.now) == [
        SteppedDown("the lease lapsed before it was renewed"),
        Gained(1),
    ]
    assert leadership.holds(1)
    clock.now = 130.0 + LEASE - 0.001
    assert leadership.is_leader


def test_a_takeover_with_a_new_epoch_steps_down_from_the_old_one() -> None:
    leadership, clock = leading(1)
    clock.now = 105.0
    assert leadership.checked(3, clock.now) == [SteppedDown("epoch moved to 3"), Gained(3)]
    assert leadership.holds(3) and not leadership.holds(1)


def test_lost_error_and_fenced_out_each_step_down_once() -> None:
    for leave, reason in (
        (lambda ls, now: ls.checked(None, now), "the lease is lost"),
        (lambda ls, now: ls.failed(), "error"),
        (lambda ls, now: ls.step_down("fenced out"), "fenced out"),
    ):
        leadership, clock = leading()
        clock.now = 101.0
        assert leave(leadership, clock.now) == [SteppedDown(reason)]
        assert not leadership.is_leader and leadership.epoch is None
        assert leave(leadership, clock.now) == []  # not leading: nothing more to say
        assert leadership.checked(2, clock.now) == [Gained(2)]  # and it can lead again


def test_an_error_after_the_lease_lapsed_still_steps_down() -> None:
    leadership, clock = leading()
    clock.now = 200.0
    assert leadership.failed() == [SteppedDown("error")]
    assert leadership.epoch is None


def test_release_gives_the_epoch_back_without_a_change() -> None:
    leadership, _clock = leading(7)
    assert leadership.release() == 7
    assert not leadership.is_leader and leadership.epoch is None
    assert leadership.release() is None
