"""`actorflow.versioning.check`: unfinished turns replayed against new code, executing
nothing, reporting exactly the actors that would diverge."""

from __future__ import annotations

import os
import pathlib
import pty
import select
import subprocess
import sys
from collections import Counter

import anyio
import anyio.to_thread
import msgspec
import pytest
from click.testing import CliRunner

from actorflow import Actor, handler
from actorflow.cli import main
from actorflow.versioning import Selection, check
from tests.runtime.support import crashing, eventually, reaches

pytestmark = pytest.mark.anyio

#: Every call of a step function, by name: a dry run must add none.
calls: Counter[str] = Counter()
#: While set, `pay` (the step in flight at the crash) blocks, as a slow payment would.
paying = anyio.Event()
blocking = {"on": False}


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    blocking["on"] = False


def reserve(item: int) -> str:
    calls["reserve"] += 1
    return f"reserved {item}"


def hold(item: int) -> str:
    calls["hold"] += 1
    return f"held {item}"


def audit(item: int) -> str:
    calls["audit"] += 1
    return f"audited {item}"


async def pay(item: int) -> str:
    calls["pay"] += 1
    if blocking["on"]:
        await anyio.sleep_forever()  # the crash abandons it: never journaled
    return f"paid {item}"


async def notify(item: int) -> str:
    calls["notify"] += 1
    return f"notified {item}"


class Original(Actor, name="Shop"):
    @handler
    async def buy(self, item: int) -> str:
        await self.ctx.run(reserve, item)
        await self.ctx.run(audit, item)
        return await self.ctx.run(pay, item)


class Unchanged(Actor, name="Shop"):
    @handler
    async def buy(self, item: int) -> str:
        await self.ctx.run(reserve, item)
        await self.ctx.run(audit, item)
        return await self.ctx.run(pay, item)


class Renamed(Actor, name="Shop"):
    @handler
    async def buy(self, item: int) -> str:
        await self.ctx.run(hold, item)
        await self.ctx.run(audit, item)
        return await self.ctx.run(pay, item)


class Reordered(Actor, name="Shop"):
    @handler
    async def buy(self, item: int) -> str:
        await self.ctx.run(audit, item)
        await self.ctx.run(reserve, item)
        return await self.ctx.run(pay, item)


class AddedAtTheFrontier(Actor, name="Shop"):
    """A step added where the journal ends: the unfinished turn reaches it live."""

    @handler
    async def buy(self, item: int) -> str:
        await self.ctx.run(reserve, item)
        await self.ctx.run(audit, item)
        await self.ctx.run(notify, item)
        return await self.ctx.run(pay, item)


class Shortened(Actor, name="Shop"):
    """A recorded step dropped: the journal holds a step the code never asks for."""

    @handler
    async def buy(self, item: int) -> str:
        await self.ctx.run(reserve, item)
        return "done"


class Other(Actor):
    @handler
    async def ping(self) -> str:
        return "pong"


async def crash_mid_turn(db: pathlib.Path, count: int = 1, finished: int = 1) -> None:
    """``count`` Shop actors each journal reserve and audit, then crash while paying;
    ``finished`` Other actors end their turns before."""
    blocking["on"] = True
    async with crashing(db, [Original, Other]) as rt:
        for key in range(count):
            await rt.ref(Original, f"s{key}").send(Original.buy, key)
        for key in range(count):
            await reaches(rt.ref(Original, f"s{key}"), "running")

        async def all_paying() -> None:
            while calls["pay"] < count:  # noqa: ASYNC110 - watching a counter
                await anyio.sleep(0.002)

        with anyio.fail_after(5):
            await all_paying()
        for key in range(finished):
            await rt.ref(Other, f"o{key}").call(Other.ping)
    calls.clear()


async def test_unchanged_code_is_compatible_and_executes_nothing(db: pathlib.Path) -> None:
    await crash_mid_turn(db)
    report = await check([Unchanged, Other], journals=[db])
    assert (report.checked, report.diverged, report.unchecked) == (1, [], [])
    assert report.finished == 1  # Other/o: its only turn ended, nothing to replay
    assert calls == {}  # pay, where the journal ends, was not called


async def test_a_step_added_where_the_journal_ends_is_compatible(db: pathlib.Path) -> None:
    await crash_mid_turn(db)
    report = await check([AddedAtTheFrontier, Other], journals=[db])
    assert report.ok
    assert report.checked == 1
    assert calls == {}


async def test_a_renamed_step_diverges_where_it_was_recorded(
    db: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    await crash_mid_turn(db)
    caplog.clear()
    report = await check([Renamed, Other], journals=[db])
    assert not caplog.records  # reported, not logged as a stuck actor
    [found] = report.diverged
    assert (found.actor, found.position, found.turn, found.handler) == ("Shop/s0", 2, 1, "buy")
    assert found.recorded == "run step 'reserve' (step id 1)"
    assert found.new == "run step 'hold' (step id 1)"
    assert found.diff == "- run step 'reserve' (step id 1) | + run step 'hold' (step id 1)"
    assert found.source == str(db)
    assert calls == {}


async def test_reordered_steps_diverge(db: pathlib.Path) -> None:
    await crash_mid_turn(db)
    [found] = (await check([Reordered, Other], journals=[db])).diverged
    assert (found.position, found.recorded, found.new) == (
        2,
        "run step 'reserve' (step id 1)",
        "run step 'audit' (step id 1)",
    )
    assert calls == {}


async def test_a_recorded_step_the_code_skips_diverges(db: pathlib.Path) -> None:
    await crash_mid_turn(db)
    [found] = (await check([Shortened, Other], journals=[db])).diverged
    assert (found.position, found.recorded) == (3, "run step 'audit' (step id 2)")
    assert found.new == "the end of turn 1"
    assert calls == {}


async def test_filters_choose_the_actors_checked(db: pathlib.Path) -> None:
    await crash_mid_turn(db, count=3)
    by_actor = await check([Renamed, Other], journals=[db], selection=Selection(actors=["Shop/s1"]))
    assert [d.actor for d in by_actor.diverged] == ["Shop/s1"]
    by_type = await check([Renamed, Other], journals=[db], selection=Selection(types=["Other"]))
    assert (by_type.checked, by_type.finished) == (0, 1)


async def test_an_actor_type_missing_from_the_app_is_reported_unchecked(db: pathlib.Path) -> None:
    await crash_mid_turn(db)
    report = await check([Other], journals=[db])
    [skipped] = report.unchecked
    assert skipped.actor == "Shop/s0"
    assert "no actor type 'Shop'" in skipped.reason
    assert report.ok
    assert report.checked == 0


async def test_many_compatible_actors_give_no_false_divergence(db: pathlib.Path) -> None:
    await crash_mid_turn(db, count=40, finished=20)
    totals: list[int] = []
    report = await check(
        [Unchanged, Other], journals=[db], on_total=totals.append, progress=lambda n: None
    )
    assert (report.checked, report.diverged, report.unchecked) == (40, [], [])
    assert (report.finished, totals) == (20, [60])
    assert calls == {}


async def test_the_journal_is_not_changed(db: pathlib.Path) -> None:
    await crash_mid_turn(db)
    before = await anyio.Path(db).read_bytes()
    await check([Renamed, Other], journals=[db])
    await check([AddedAtTheFrontier, Other], journals=[db])
    assert await anyio.Path(db).read_bytes() == before


class Concurrent(Actor, name="Pair"):
    @handler
    async def both(self, item: int) -> list[str]:
        return list(await self.ctx.gather(self.ctx.run(pay, item), self.ctx.run(reserve, item)))


class ConcurrentRenamed(Actor, name="Pair"):
    @handler
    async def both(self, item: int) -> list[str]:
        return list(await self.ctx.gather(self.ctx.run(pay, item), self.ctx.run(hold, item)))


async def test_a_branch_that_diverges_beside_one_that_reaches_live_is_reported(
    db: pathlib.Path,
) -> None:
    """The first branch stops where the journal ends (its step was in flight at the crash)
    before the second one's replay finds a renamed step: the divergence is the verdict."""
    blocking["on"] = True
    async with crashing(db, [Concurrent]) as rt:
        actor = rt.ref(Concurrent, "p")
        await actor.send(Concurrent.both, 1)

        async def reserved() -> bool:
            steps = [e.data["name"] for e in await rt.journal(actor.ref) if e.type == "step"]
            return calls["pay"] == 1 and steps == ["reserve"]

        await eventually(reserved, "reserve journaled while pay runs")
    calls.clear()
    assert (await check([Concurrent], journals=[db])).ok
    [found] = (await check([ConcurrentRenamed], journals=[db])).diverged
    assert (found.recorded, found.new) == (
        "run step 'reserve' (step id 1.2.1)",
        "run step 'hold' (step id 1.2.1)",
    )
    assert calls == {}


async def test_a_turn_after_a_checkpoint_keeps_its_journal_positions(
    db: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Turn 1 ended (its checkpoint compacted the journal and inbox before it); turn 2 is
    in flight: the check, on the journal and on its export, replays turn 2 alone and
    reports the positions the journal has."""
    async with crashing(db, [Original], snapshot_every=1) as rt:
        shop = rt.ref(Original, "s")
        await shop.call(Original.buy, 1)
        blocking["on"] = True
        await shop.send(Original.buy, 2)

        async def paying() -> bool:
            return calls["pay"] == 2

        await eventually(paying, "turn 2 paying")
    calls.clear()
    export = tmp_path / "shop.jsonl"
    args = ["journal", "export", "Shop/s", "--journal", str(db), "--out", str(export)]
    result = await anyio.to_thread.run_sync(CliRunner().invoke, main, args)
    assert result.exit_code == 0, result.output
    for report in (
        await check([Renamed], journals=[db]),
        await check([Renamed], exports=[export]),
    ):
        [found] = report.diverged
        assert (found.position, found.turn) == (7, 2)
        assert found.recorded == "run step 'reserve' (step id 1)"
    assert (await check([Unchanged], exports=[export])).ok
    assert calls == {}


class Sleeper(Actor, name="Sleeper"):
    @handler
    async def nap(self) -> str:
        await self.ctx.run(reserve, 1)
        await self.ctx.sleep(3600)
        return await self.ctx.run(audit, 1)


async def test_a_turn_waiting_on_a_timer_is_checked_without_waiting(db: pathlib.Path) -> None:
    """An hour's timer journaled and not yet due: the check does not wait for it (this
    test's deadline is 20 s) and calls nothing after it."""
    async with crashing(db, [Sleeper]) as rt:
        sleeper = rt.ref(Sleeper, "z")
        await sleeper.send(Sleeper.nap)
        await reaches(sleeper, "waiting-timer")
    calls.clear()
    report = await check([Sleeper], journals=[db])
    assert (report.checked, report.diverged) == (1, [])
    assert calls == {}


class WithoutBuy(Actor, name="Shop"):
    @handler
    async def browse(self) -> str:
        return "nothing bought"


async def test_a_handler_removed_under_an_unfinished_turn_is_reported(db: pathlib.Path) -> None:
    await crash_mid_turn(db)
    [found] = (await check([WithoutBuy, Other], journals=[db])).diverged
    assert (found.kind, found.position, found.turn, found.handler) == ("error", 1, 1, "buy")
    assert found.recorded == "turn 1 (buy) as journaled"
    assert found.new == "no handler 'buy' in Shop (it has: browse): the turn would fail"
    assert calls == {}


class CountV1(msgspec.Struct):
    n: int = 0


class CountV2(msgspec.Struct):
    n: list[str] = []


class Counter1(Actor, name="Counter", state=CountV1):
    @handler
    async def add(self) -> int:
        self.state.n += 1
        return len(await self.ctx.run(pay, self.state.n))


class Counter2(Actor, name="Counter", state=CountV2):
    @handler
    async def add(self) -> int:
        self.state.n.append("x")
        return len(await self.ctx.run(pay, len(self.state.n)))


async def test_a_checkpointed_state_that_no_longer_decodes_is_reported(db: pathlib.Path) -> None:
    async with crashing(db, [Counter1]) as rt:
        counter = rt.ref(Counter1, "c")
        await counter.call(Counter1.add)
        blocking["on"] = True
        await counter.send(Counter1.add)

        async def paying() -> bool:
            return calls["pay"] == 2

        await eventually(paying, "turn 2 paying")
    calls.clear()
    assert (await check([Counter1], journals=[db])).ok
    [found] = (await check([Counter2], journals=[db])).diverged
    assert found.kind == "error"
    assert "Expected `array`, got `int`" in found.new
    assert calls == {}


#: What `test_a_progress_bar_shows_on_a_terminal` checks the journal against.
COMPATIBLE = [Unchanged, Other]


async def test_a_progress_bar_shows_on_a_terminal(db: pathlib.Path) -> None:
    """Standard error a terminal and 50 actors or more: the check draws a progress bar
    there (and not with --no-progress); the report still goes to standard output."""
    await crash_mid_turn(db, count=50, finished=0)
    app = "tests.versioning.test_dry_run:COMPATIBLE"

    def run(*extra: str) -> tuple[int, str, str]:
        primary, secondary = pty.openpty()  # standard error is a terminal
        try:
            command = ["replay", app, "--journal", str(db), *extra]
            done = subprocess.run(
                [sys.executable, "-c", "from actorflow.cli import main; main()", *command],
                cwd=pathlib.Path(__file__).parents[2],
                stdout=subprocess.PIPE,
                stderr=secondary,
                timeout=60,
                check=False,
            )
            os.close(secondary)
            secondary = -1
            drawn = b""
            while select.select([primary], [], [], 0.1)[0]:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # the terminal closed
                    break
                if not chunk:
                    break
                drawn += chunk
            return done.returncode, done.stdout.decode(), drawn.decode(errors="replace")
        finally:
            os.close(primary)
            if secondary != -1:
                os.close(secondary)

    status, report, terminal = await anyio.to_thread.run_sync(run)
    assert status == 0, (report, terminal)
    assert "unfinished turns checked: 50 (would diverge: 0," in report
    assert "replaying" in terminal
    assert "100%" in terminal
    status, report, terminal = await anyio.to_thread.run_sync(run, "--no-progress")
    assert status == 0
    assert "replaying" not in terminal
    assert calls == {}
