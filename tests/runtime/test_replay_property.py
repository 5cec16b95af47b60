"""Property: replaying an actor, from the start of its journal or from a snapshot, gives
exactly what the live run saw, and runs no side effect again.

Hypothesis generates agent programs (steps, caught and uncaught errors, compensations,
durable sleeps, events delivered before or during the wait, timeouts, sends and calls to a
second actor type, `ctx.gather`, `ctx.first`, time and randomness); one generic handler
interprets them, one program per turn. Each example runs the programs live on a SQLite
journal twice, once without snapshots and once with a snapshot every 1 to 3 turns (the
journal truncated behind it), with the actors kept in memory or passivated whenever idle;
then it restarts each journal in a new runtime and compares what the restarted actors
hold and answer with what the live run saw. Effects count their executions by
idempotency key: none may run during replay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import pathlib
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import anyio
import anyio.lowlevel
import msgspec
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from actorflow import Actor, Context, HandlerFailed, ManualClock, Runtime, handler
from tests.runtime.support import running

T0 = 1_700_000_000.0

#: Seconds an example may take (live runs and restarts) before it counts as a hang.
LIMIT = 60.0

HELPERS = ("h1", "h2")
EVENT_NAMES = ("approval", "webhook")
AGENT_STREAM = "actor/Agent/a"

#: Raw executions of every effect (steps and undos), by idempotency key.
executions: Counter[str] = Counter()
#: The runtime running the programs now (for an effect that delivers an event).
hosting: list[Runtime] = []


def effect(i: int, idempotency_key: str) -> int:
    executions[idempotency_key] += 1
    return i * 3 + 1


async def async_effect(ctx: Context, i: int) -> int:
    await anyio.lowlevel.checkpoint()  # let concurrent branches interleave
    executions[ctx.idempotency_key] += 1
    return i * 5 + 2


def failing_effect(i: int, idempotency_key: str) -> int:
    executions[idempotency_key] += 1
    raise ValueError(f"effect {i} failed")


def undo(value: int, idempotency_key: str) -> None:
    executions[idempotency_key] += 1


async def ask_human(question: int, idempotency_key: str) -> None:
    """Ask for an answer; the human replies at once, before the step has returned."""
    executions[idempotency_key] += 1
    await hosting[-1].ref(Agent, "a").deliver("answer", f"answer-{question}")


# -- programs ------------------------------------------------------------------------------


class Step(msgspec.Struct, frozen=True, tag=True):
    """``ctx.run`` of an effect (async when ``asynchronous``), with an undo when ``undo``."""

    i: int
    undo: bool = False
    asynchronous: bool = False


class Fail(msgspec.Struct, frozen=True, tag=True):
    """A step that raises; caught by the program, or failing the turn (compensations run)."""

    i: int
    caught: bool = True


class Sleep(msgspec.Struct, frozen=True, tag=True):
    seconds: float


class Wait(msgspec.Struct, frozen=True, tag=True):
    """``ctx.wait_for(name)``; the test delivers the event before the turn starts (early)
    or right after sending it (before or after the wait starts)."""

    name: str
    early: bool = True


class Ask(msgspec.Struct, frozen=True, tag=True):
    """A step whose effect makes the answer event arrive, then ``ctx.wait_for`` of it; when
    ``distracted``, a wait for another event times out in between."""

    question: int
    distracted: bool = False


class WaitTimeout(msgspec.Struct, frozen=True, tag=True):
    """``ctx.wait_for`` of an event that never comes, with a durable timeout."""

    seconds: float


class Send(msgspec.Struct, frozen=True, tag=True):
    helper: str
    i: int
    fail: bool = False


class Call(msgspec.Struct, frozen=True, tag=True):
    helper: str
    i: int
    fail: bool = False


class Gather(msgspec.Struct, frozen=True, tag=True):
    """``ctx.gather`` of steps; the branch at ``failing`` (if any) raises; with ``nap``,
    a durable sleep runs as one more branch."""

    items: list[int]
    failing: int | None = None
    nap: bool = False


class First(msgspec.Struct, frozen=True, tag=True):
    """``ctx.first`` of steps; with ``wait``, also of a wait for an event that never
    comes (it loses, and is cancelled live and skipped on replay)."""

    items: list[int]
    wait: bool = False


class Compensate(msgspec.Struct, frozen=True, tag=True):
    pass


class Draw(msgspec.Struct, frozen=True, tag=True):
    kind: Literal["now", "random", "uuid"]


Op = (
    Step
    | Fail
    | Sleep
    | Wait
    | Ask
    | WaitTimeout
    | Send
    | Call
    | Gather
    | First
    | Compensate
    | Draw
)


# -- actors --------------------------------------------------------------------------------


class Seen(msgspec.Struct):
    """Everything an actor observed, in order."""

    log: list[Any] = msgspec.field(default_factory=list)


class Helper(Actor, state=Seen):
    @handler
    async def work(self, i: int, fail: bool) -> list[Any]:
        values = [await self.ctx.run(effect, i + k) for k in range(1 + i % 2)]
        entry = [self.ctx.turn, values, self.ctx.random()]
        self.state.log.append(entry)
        if fail:
            raise ValueError(f"helper {i} failed")
        return entry

    @handler
    async def get_state(self) -> list[Any]:
        log: list[Any] = self.state.log
        return log


class Agent(Actor, state=Seen):
    @handler
    async def run(self, program: list[Op]) -> list[Any]:
        """Interpret ``program``; return what it observed (also kept in the state)."""
        seen: list[Any] = [["turn", self.ctx.turn]]
        self.state.log.append(seen[0])
        for op in program:
            entry = await self.perform(op)
            seen.append(entry)
            self.state.log.append(entry)
        return seen

    @handler
    async def noop(self) -> None:
        pass

    @handler
    async def get_state(self) -> list[Any]:
        log: list[Any] = self.state.log
        return log

    def step_fn(self, asynchronous: bool) -> Any:
        if asynchronous:
            return functools.partial(async_effect, self.ctx)
        return effect

    async def perform(self, op: Op) -> list[Any]:
        """Run one operation; what it observed, as a list tagged with the operation."""
        ctx = self.ctx
        match op:
            case Step(i, undoable, asynchronous):
                fn = self.step_fn(asynchronous)
                compensate = undo if undoable else None
                return ["step", await ctx.run(fn, i, name="effect", compensate=compensate)]
            case Fail(i, caught=False):
                return ["unreachable", await ctx.run(failing_effect, i)]
            case Fail(i):
                try:
                    return ["unreachable", await ctx.run(failing_effect, i)]
                except ValueError as exc:
                    return ["error", type(exc).__name__, str(exc)]
            case Sleep(seconds):
                await ctx.sleep(seconds)
                return ["slept", ctx.now()]
            case Wait(name):
                return ["event", name, await ctx.wait_for(name)]
            case Ask(question, distracted):
                await ctx.run(ask_human, question)
                if distracted:
                    with contextlib.suppress(TimeoutError):
                        await ctx.wait_for("silence", timeout=0.5)
                return ["answer", await ctx.wait_for("answer")]
            case WaitTimeout(seconds):
                try:
                    return ["event", await ctx.wait_for("silence", timeout=seconds)]
                except TimeoutError:
                    return ["timeout", ctx.now()]
            case Send(helper, i, fail):
                return ["send", await ctx.send(ctx.ref(Helper, helper), Helper.work, i, fail)]
            case Call(helper, i, fail):
                try:
                    return ["call", await ctx.call(ctx.ref(Helper, helper), Helper.work, i, fail)]
                except HandlerFailed as exc:
                    return ["call-failed", exc.error_type, exc.message]
            case Gather(items, failing, nap):
                steps = [
                    ctx.run(failing_effect if k == failing else self.step_fn(k % 2 == 1), i)
                    for k, i in enumerate(items)
                ]
                if nap:
                    steps.append(ctx.sleep(0.5))
                try:
                    return ["gather", await ctx.gather(*steps)]
                except ValueError as exc:
                    return ["gather-error", str(exc)]
            case First(items, wait):
                steps = [ctx.run(self.step_fn(k % 2 == 1), i) for k, i in enumerate(items)]
                if wait:
                    steps.append(ctx.wait_for("silence"))
                winner, value = await ctx.first(*steps)
                return ["first", winner, value]
            case Compensate():
                return ["compensated", await ctx.compensate()]
            case Draw("now"):
                return ["now", ctx.now()]
            case Draw("random"):
                return ["random", ctx.random()]
            case Draw(_):
                return ["uuid", str(ctx.uuid())]
        raise AssertionError(f"unknown operation {op!r}")


ACTORS = [Agent, Helper]


class JumpingClock(ManualClock):
    """A `ManualClock` that a sleeper moves to its deadline at once: durable timers and
    timeouts take no real time, and the times a program sees depend only on the program."""

    async def sleep_until(self, deadline: float) -> None:
        while self.now() < deadline:
            self.advance(deadline - self.now())
        await anyio.lowlevel.checkpoint()


# -- strategies ----------------------------------------------------------------------------

_i = st.integers(0, 99)
_helper = st.sampled_from(HELPERS)
_items = st.lists(_i, min_size=1, max_size=3)

OPS: st.SearchStrategy[Op] = st.one_of(
    st.builds(Step, _i, st.booleans(), st.booleans()),
    st.builds(Fail, _i, st.booleans()),
    st.builds(Sleep, st.sampled_from([0.0, 0.5, 30.0])),
    st.builds(Wait, st.sampled_from(EVENT_NAMES), st.booleans()),
    st.builds(Ask, _i, st.booleans()),
    st.builds(WaitTimeout, st.sampled_from([0.0, 5.0])),
    st.builds(Send, _helper, _i, st.booleans()),
    st.builds(Call, _helper, _i, st.booleans()),
    _items.flatmap(
        lambda items: st.builds(
            Gather, st.just(items), st.none() | st.integers(0, len(items) - 1), st.booleans()
        )
    ),
    st.builds(First, _items, st.booleans()),
    st.just(Compensate()),
    st.builds(Draw, st.sampled_from(["now", "random", "uuid"])),
)

#: One program per invocation of the handler: several turns of one actor.
PROGRAMS = st.lists(st.lists(OPS, max_size=8), min_size=1, max_size=4)


# -- running and restarting ----------------------------------------------------------------

#: Seconds to wait for one invocation's result before calling it a hang.
WAIT = 3.0


@dataclasses.dataclass
class Observed:
    """What a runtime saw of the actors: invocation outcomes and the actors' states."""

    results: list[tuple[str, list[Any]]]  # (invocation, outcome) per program, in order
    sent: dict[str, list[Any]]  # outcome of every invocation the agent sent with ctx.send
    agent: list[Any]
    helpers: dict[str, list[Any]]


async def outcome(runtime: Runtime, invocation: str) -> list[Any]:
    """``Runtime.result(invocation)`` as ``["ok", result]`` or ``["failed", type, message]``."""
    try:
        return ["ok", await runtime.result(invocation, timeout=WAIT)]
    except HandlerFailed as exc:
        return ["failed", exc.error_type, exc.message]
    except TimeoutError:
        raise AssertionError(f"Runtime.result({invocation!r}) still waits after {WAIT} s") from None


async def query(runtime: Runtime, actor: type[Actor], key: str, name: str) -> Any:
    """Call a handler that takes no arguments; its result."""
    result = await outcome(runtime, await runtime.send(runtime.ref(actor, key).ref, name))
    assert result[0] == "ok", result
    return result[1]


def events(programs: list[list[Op]]) -> list[tuple[int | None, str, str]]:
    """Every event the programs wait for, in order: (the program after whose send it is
    delivered, or None for before the first; its name; its payload)."""
    waits = [(index, op) for index, program in enumerate(programs) for op in program]
    return [
        (None if op.early else index, op.name, f"{op.name}-{n}")
        for n, (index, op) in enumerate(waits)
        if isinstance(op, Wait)
    ]


async def read_back(runtime: Runtime, results: list[tuple[str, list[Any]]]) -> Observed:
    """The agent's and helpers' states, and the outcomes of everything the agent sent."""
    agent = await query(runtime, Agent, "a", "get_state")
    sent = [entry[1] for entry in agent if entry[0] == "send"]
    outcomes = {invocation: await outcome(runtime, invocation) for invocation in sent}
    helpers = {key: await query(runtime, Helper, key, "get_state") for key in HELPERS}
    return Observed(results, outcomes, agent, helpers)


@contextlib.asynccontextmanager
async def hosted(path: pathlib.Path, clock: ManualClock, **options: Any) -> AsyncIterator[Runtime]:
    """A runtime hosting the actors on the journal at ``path`` (closed on leaving)."""
    async with running(path, ACTORS, clock=clock, **options) as runtime:
        hosting.append(runtime)
        try:
            yield runtime
        finally:
            hosting.remove(runtime)


async def run_live(
    path: pathlib.Path, programs: list[list[Op]], clock: ManualClock, **options: Any
) -> Observed:
    """Run each program as one turn of ``Agent/a``, one after the other."""
    to_deliver = events(programs)
    async with hosted(path, clock, **options) as runtime:
        agent = runtime.ref(Agent, "a")
        for after, name, payload in to_deliver:
            if after is None:
                await agent.deliver(name, payload)
        results = []
        for index, program in enumerate(programs):
            clock.advance(1.25)
            invocation = await agent.send(Agent.run, program)
            for after, name, payload in to_deliver:
                if after == index:
                    await agent.deliver(name, payload)
            results.append((invocation, await outcome(runtime, invocation)))
        return await read_back(runtime, results)


async def check_journal(runtime: Runtime, turns: int, snapshot_every: int, idle: float) -> None:
    """The agent replays from a snapshot, its journal truncated, when one is due."""
    snapshot = await runtime.store.load_snapshot(AGENT_STREAM)
    first = (await runtime.store.stream_info(AGENT_STREAM)).first_position
    if not snapshot_every:
        assert (snapshot, first) == (None, 1)
    elif snapshot is not None:
        assert first == snapshot.position + 1
    else:
        # Turns count across activations: an actor passivated between turns is snapshotted too.
        assert turns < snapshot_every, f"no snapshot after {turns} turns (idle_timeout={idle})"


async def restart(
    path: pathlib.Path, live: Observed, clock: ManualClock, **options: Any
) -> Observed:
    """Start a new runtime on the journal; activate (replay) every actor and read it back."""
    async with hosted(path, clock, **options) as runtime:
        turns = len(live.results) + 1  # and get_state
        await check_journal(runtime, turns, options["snapshot_every"], options["idle_timeout"])
        await query(runtime, Agent, "a", "noop")  # activation replays every finished turn first
        results = [
            (invocation, await outcome(runtime, invocation)) for invocation, _ in live.results
        ]
        observed = await read_back(runtime, results)
        assert (await runtime.ref(Agent, "a").status()).error is None
    return observed


async def live_then_replay(
    path: pathlib.Path, programs: list[list[Op]], **options: Any
) -> Observed:
    """Run the programs live, then restart: the replay must match and run no effect."""
    executions.clear()
    clock = JumpingClock(T0)
    live = await run_live(path, programs, clock, **options)
    assert set(executions.values()) <= {1}, f"an effect ran twice live: {executions}"
    ran = Counter(executions)
    replayed = await restart(path, live, JumpingClock(clock.now() + 1), **options)
    assert executions == ran, "effects ran again during replay"
    assert replayed == live
    return live


@contextlib.contextmanager
def unwrapped() -> Iterator[None]:
    """Raise a failure from inside a runtime's task group as itself, not as a group of one."""
    try:
        yield
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        raise error from None


def comparable(observed: Observed) -> Observed:
    """What two live runs of the same programs must agree on.

    Each run sends its invocations with new random ids, and `ctx.random` and `ctx.uuid` are
    derived from the invocation; which branch wins a `ctx.first` is a race. Each run's
    replay must still reproduce those exactly (see `live_then_replay`).
    """

    def mask(entry: list[Any]) -> list[Any]:
        return entry[:1] if entry[0] in ("random", "uuid", "first") else entry

    def masks(outcome: list[Any]) -> list[Any]:
        if outcome[0] == "ok":
            return ["ok", [mask(entry) for entry in outcome[1]]]
        return outcome

    return Observed(
        [("", masks(outcome)) for _, outcome in observed.results],
        observed.sent,
        [mask(entry) for entry in observed.agent],
        observed.helpers,
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # Explaining a failure re-runs it hundreds of times; when it is a hang, that takes minutes.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
@given(
    programs=PROGRAMS,
    snapshot_every=st.sampled_from([1, 2, 3]),
    idle_timeout=st.sampled_from([3600.0, 0.0]),
)
# Found by this test: replaying ctx.first did not move the turn's logical time to when the
# live run journaled the winner, so a later ctx.now() differed after a durable sleep.
@example(
    programs=[[Gather([0], 0, True), First([0], False), Draw("now")]],
    snapshot_every=1,
    idle_timeout=3600.0,
)
def test_replay_from_the_start_and_from_a_snapshot_gives_what_the_live_run_saw(
    programs: list[list[Op]], snapshot_every: int, idle_timeout: float
) -> None:
    async def check(tmp: pathlib.Path) -> None:
        with unwrapped(), anyio.fail_after(LIMIT):
            from_start = await live_then_replay(
                tmp / "start.db", programs, snapshot_every=0, idle_timeout=idle_timeout
            )
            from_snapshot = await live_then_replay(
                tmp / "snapshot.db",
                programs,
                snapshot_every=snapshot_every,
                idle_timeout=idle_timeout,
            )
        assert comparable(from_snapshot) == comparable(from_start)

    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(check, pathlib.Path(tmp))
