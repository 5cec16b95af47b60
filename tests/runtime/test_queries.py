"""`@actorflow.query`: the state as of the last step boundary, read without queueing behind
the running turn, journaling nothing, changing nothing, and never touching ctx."""

from __future__ import annotations

import pathlib
import types
from typing import Any

import anyio
import msgspec
import pytest

from actorflow import (
    Actor,
    ActorDefinitionError,
    ActorHandle,
    InvalidMessageError,
    InvalidResultError,
    NoSuchActorError,
    QueryContextError,
    QueryFailed,
    Runtime,
    UnknownActorError,
    UnknownQueryError,
    handler,
    query,
)
from actorflow._context import ActorRef
from actorflow._events import StepCompleted, TurnStarted
from actorflow.replay._recorded import RecordedTurn
from actorflow.runtime._query import _live
from tests.runtime.support import eventually, reaches, running

pytestmark = pytest.mark.anyio


class Chat(msgspec.Struct):
    messages: list[str] = msgspec.field(default_factory=list)
    approved_by: str | None = None


class Gate:
    """Lets a test hold the `think` step while it executes (made per test: events belong
    to a loop)."""

    entered: anyio.Event | None = None
    release: anyio.Event | None = None


gate = Gate()
thoughts: list[str] = []


async def think(prompt: str) -> str:
    thoughts.append(prompt)
    if gate.entered is not None and gate.release is not None:
        gate.entered.set()
        await gate.release.wait()
    return f"thought about {prompt}"


@pytest.fixture(autouse=True)
def _reset() -> None:
    gate.entered = gate.release = None
    thoughts.clear()


class Agent(Actor, state=Chat):
    @handler
    async def converse(self, prompt: str) -> str:
        self.state.messages.append(f"user: {prompt}")
        reply = await self.ctx.run(think, prompt, name="think")
        self.state.messages.append(f"agent: {reply}")
        by = await self.ctx.wait_for("approval", type=str)
        self.state.approved_by = by
        self.state.messages.append(f"approved by {by}")
        return reply

    @query
    def transcript(self, last: int = 100) -> list[str]:
        """The conversation so far."""
        return self.state.messages[-last:]

    @query
    async def approver(self) -> str | None:
        return self.state.approved_by

    @query
    def meddle(self) -> int:
        self.state.messages.append("meddled")
        self.state.approved_by = "nobody"
        self.state = Chat(["replaced"])
        return 0

    @query
    async def takes_a_step(self) -> str:
        result: str = await self.ctx.run(think, "in a query")
        return result

    @query
    def reads_the_clock(self) -> float:
        return self.ctx.now()

    @query
    def broken(self) -> int:
        raise ValueError("nope")

    @query
    def wrong_result(self) -> int:
        return "not an int"  # type: ignore[return-value]


def agent(runtime: Runtime, key: str = "a-1") -> ActorHandle[Agent]:
    return runtime.ref(Agent, key)


async def journal_size(runtime: Runtime, handle: ActorHandle[Any]) -> int:
    return len(await runtime.journal(handle.ref))


async def test_a_query_answers_while_the_turn_waits_for_an_approval(db: pathlib.Path) -> None:
    async with running(db, [Agent]) as runtime:
        handle = agent(runtime)
        invocation = await handle.send(Agent.converse, "hi")
        await reaches(handle, "waiting-event")
        before = await journal_size(runtime, handle)
        answer = await runtime.query(handle.ref, "transcript")
        assert answer.result == ["user: hi", "agent: thought about hi"]
        assert (answer.as_of, answer.invocation) == ("step", invocation)
        assert await handle.query(Agent.transcript, 1) == ["agent: thought about hi"]
        assert await handle.query(Agent.approver) is None
        assert await journal_size(runtime, handle) == before  # nothing journaled
        assert (await handle.status()).state == "waiting-event"
        await handle.deliver("approval", "ana")
        assert await runtime.result(invocation) == "thought about hi"
        after = await runtime.query(handle.ref, "approver")
        assert (after.result, after.as_of, after.invocation) == ("ana", "checkpoint", None)


async def test_a_query_answers_while_a_step_runs(db: pathlib.Path) -> None:
    gate.entered, gate.release = anyio.Event(), anyio.Event()
    async with running(db, [Agent]) as runtime:
        handle = agent(runtime)
        invocation = await handle.send(Agent.converse, "hi")
        await gate.entered.wait()  # the step executes, and waits for the test
        answer = await runtime.query(handle.ref, "transcript")
        assert (answer.result, answer.as_of) == (["user: hi"], "step")
        gate.release.set()
        await reaches(handle, "waiting-event")
        assert await handle.query(Agent.transcript) == ["user: hi", "agent: thought about hi"]
        await handle.deliver("approval", "ana")
        await runtime.result(invocation)
    assert thoughts == ["hi"]


async def test_a_query_cannot_change_the_actors_state(db: pathlib.Path) -> None:
    async with running(db, [Agent]) as runtime:
        handle = agent(runtime)
        invocation = await handle.send(Agent.converse, "hi")
        await reaches(handle, "waiting-event")
        assert await handle.query(Agent.meddle) == 0
        assert await handle.query(Agent.transcript) == ["user: hi", "agent: thought about hi"]
        assert await handle.query(Agent.approver) is None
        await handle.deliver("approval", "ana")
        await runtime.result(invocation)
        assert await handle.query(Agent.meddle) == 0  # between turns too
        assert await handle.query(Agent.transcript) == [
            "user: hi",
            "agent: thought about hi",
            "approved by ana",
        ]


@pytest.mark.parametrize("name", ["takes_a_step", "reads_the_clock"])
async def test_a_query_that_uses_ctx_fails_and_journals_nothing(
    db: pathlib.Path, name: str
) -> None:
    async with running(db, [Agent]) as runtime:
        handle = agent(runtime)
        await handle.send(Agent.converse, "hi")
        await reaches(handle, "waiting-event")
        before = await journal_size(runtime, handle)
        with pytest.raises(QueryContextError, match=rf"query {name} of Agent/a-1 used self\.ctx"):
            await runtime.query(handle.ref, name)
        assert await journal_size(runtime, handle) == before
        assert thoughts == ["hi"]  # the query's step never ran
        assert (await handle.status()).state == "waiting-event"


async def test_refusals_name_what_was_wrong(db: pathlib.Path) -> None:
    async with running(db, [Agent]) as runtime:
        handle = agent(runtime)
        await handle.send(Agent.converse, "hi")
        await reaches(handle, "waiting-event")
        with pytest.raises(UnknownQueryError, match="has no query 'nope'; its queries: approver"):
            await runtime.query(handle.ref, "nope")
        with pytest.raises(UnknownQueryError, match="no query 'converse'"):
            await runtime.query(handle.ref, "converse")  # a handler is no query
        with pytest.raises(InvalidMessageError, match=r"Agent\.transcript"):
            await runtime.query(handle.ref, "transcript", (), {"last": "two"})
        with pytest.raises(UnknownActorError, match="unknown actor type 'Nobody'"):
            await runtime.query(ActorRef("Nobody", "x"), "transcript")
        with pytest.raises(NoSuchActorError, match="Agent/never-sent has never been sent"):
            await runtime.query(ActorRef("Agent", "never-sent"), "transcript")
        with pytest.raises(QueryFailed, match=r"builtins\.ValueError: nope"):
            await runtime.query(handle.ref, "broken")
        with pytest.raises(InvalidResultError, match="does not match its return annotation"):
            await runtime.query(handle.ref, "wrong_result")


async def test_a_passivated_actor_answers_from_its_checkpoint_without_activating(
    db: pathlib.Path,
) -> None:
    async with running(db, [Agent], idle_timeout=0.01) as runtime:
        handle = agent(runtime)
        invocation = await handle.send(Agent.converse, "hi")
        await reaches(handle, "waiting-event")
        await handle.deliver("approval", "ana")
        await runtime.result(invocation)

        async def passivated() -> bool:
            return handle.id not in runtime.hosted()

        await eventually(passivated, "the actor to be passivated")
        activations = runtime.metrics.activations
        answer = await runtime.query(handle.ref, "approver")
        assert (answer.result, answer.as_of) == ("ana", "checkpoint")
        assert runtime.metrics.activations == activations
        assert handle.id not in runtime.hosted()
    async with running(db, [Agent]) as runtime:  # and from another process
        assert await agent(runtime).query(Agent.approver) == "ana"
        assert runtime.hosted() == {}


async def test_after_a_restart_the_replayed_turn_answers_at_its_last_step(
    db: pathlib.Path,
) -> None:
    async with running(db, [Agent]) as runtime:
        handle = agent(runtime)
        invocation = await handle.send(Agent.converse, "hi")
        await reaches(handle, "waiting-event")
    async with running(db, [Agent]) as runtime:  # recovery replays the turn to wait_for
        handle = agent(runtime)
        answer = await runtime.query(handle.ref, "transcript")
        assert answer.result == ["user: hi", "agent: thought about hi"]
        assert (answer.as_of, answer.invocation) == ("step", invocation)
        await handle.deliver("approval", "ana")
        assert await runtime.result(invocation) == "thought about hi"
    assert thoughts == ["hi"]  # the step ran once


def test_queries_are_checked_when_the_class_is_defined() -> None:
    with pytest.raises(ActorDefinitionError) as caught:

        class Bad(Actor):
            @handler
            async def work(self) -> None:
                pass

            @query
            def unannotated(self, n) -> int:  # type: ignore[no-untyped-def]
                return 0

            @query
            def unencodable(self) -> object:
                return object()

            @query
            def _private(self) -> int:
                return 0

            @handler
            @query
            async def both(self) -> int:
                return 0

    text = str(caught.value)
    assert "query Bad.unannotated: annotate parameter 'n' with its type" in text
    assert "query Bad.unencodable: its return type: object cannot be journaled" in text
    assert "query Bad._private: query names must not start with '_'" in text
    assert "Bad.both is marked both @handler and @query" in text


def test_a_class_lists_its_queries_sync_and_async() -> None:
    assert sorted(Agent.__actorflow_queries__) == [
        "approver",
        "broken",
        "meddle",
        "reads_the_clock",
        "takes_a_step",
        "transcript",
        "wrong_result",
    ]
    assert "transcript" not in Agent.__actorflow_handlers__


class Stateless(Actor):
    @handler
    async def touch(self) -> None:
        await self.ctx.run(think, "touch", name="think")

    @query
    def whose(self) -> str:
        return f"{self.key} has state {self.state!r}"


async def test_an_actor_without_state_answers_from_its_checkpoint_too(db: pathlib.Path) -> None:
    async with running(db, [Stateless], idle_timeout=0.01) as runtime:
        handle = runtime.ref(Stateless, "s-1")
        with pytest.raises(NoSuchActorError):
            await handle.query(Stateless.whose)
        await handle.call(Stateless.touch)

        async def passivated() -> bool:
            return handle.id not in runtime.hosted()

        await eventually(passivated, "the actor to be passivated")
        activations = runtime.metrics.activations
        answer = await runtime.query(handle.ref, "whose")
        assert (answer.result, answer.as_of) == ("s-1 has state None", "checkpoint")
        assert runtime.metrics.activations == activations


def test_a_turn_counts_as_live_only_once_its_replay_has_caught_up() -> None:
    """While a turn replays, its state in memory is that of an earlier step boundary than
    the journal's last one: a query then reads the checkpoint instead."""
    started = TurnStarted(2, "Agent/a-1#00", 1, "converse", msgspec.Raw(b"\x80"), 0.0)
    done = StepCompleted(2, "1", "think", "run", msgspec.Raw(b"\xa1x"))
    recorded = RecordedTurn("Agent/a-1", started, 10, [(11, done)])
    turn: Any = types.SimpleNamespace(recorded=recorded, failure=None, diverged=None)
    assert not _live(turn)  # step 1 is journaled, and not handed back yet
    recorded.take("1", "think", "run")
    assert _live(turn)  # caught up: from here on the turn runs live
    turn.diverged = object()
    assert not _live(turn)  # aborted
