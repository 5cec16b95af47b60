"""`Waiters`: callers of `Runtime.result` are woken by actor, by invocation, or all at
once, and nothing is kept for a caller that stopped waiting."""

from __future__ import annotations

from actorflow.runtime._waiters import Waiters


def test_waking_an_actor_wakes_its_invocations_and_no_other_actors() -> None:
    waiters = Waiters()
    mine = [waiters.add("Agent/k#1"), waiters.add("Agent/k#2")]
    # (a key that starts with the other's key, and another type with the same key)
    others = [waiters.add("Agent/k2#1"), waiters.add("Other/k#1")]
    waiters.wake_actor("Agent/k")
    assert [event.is_set() for event in mine] == [True, True]
    assert [event.is_set() for event in others] == [False, False]
    assert len(waiters) == 2


def test_an_ended_invocation_wakes_its_callers_only() -> None:
    waiters = Waiters()
    first = [waiters.add("Agent/k#1"), waiters.add("Agent/k#1")]
    second = waiters.add("Agent/k#2")
    waiters.wake_invocation("Agent/k#1")
    assert [event.is_set() for event in first] == [True, True]
    assert not second.is_set()
    waiters.wake_invocation("Agent/k#2")
    assert second.is_set()
    assert len(waiters) == 0


def test_wake_all_wakes_everyone() -> None:
    waiters = Waiters()
    events = [waiters.add(f"Agent/{n}#{n}") for n in range(5)]
    waiters.wake_all()
    assert all(event.is_set() for event in events)
    assert len(waiters) == 0


def test_a_caller_that_stops_waiting_leaves_nothing_behind() -> None:
    waiters = Waiters()
    kept = waiters.add("Agent/k#1")
    gone = waiters.add("Agent/k#1")
    waiters.discard("Agent/k#1", gone)
    waiters.discard("Agent/k#1", gone)  # twice: no error
    assert len(waiters) == 1
    waiters.discard("Agent/k#1", kept)
    assert len(waiters) == 0
    assert waiters._by_actor == {}
    waiters.wake_actor("Agent/k")  # nothing filed: nothing to do
    waiters.wake_invocation("Agent/k#1")
