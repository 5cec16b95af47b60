"""The deploy check reads an actor's state where its checkpoint keeps it: in parts on the
actor's state/ stream, once the state is large (see "What a checkpoint writes" in
docs/actors.md)."""

from __future__ import annotations

import pathlib

import msgspec
import pytest

from actorflow import Actor, ManualClock, handler, testing
from tests.runtime.support import hold, reaches, running, stream_types

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0


class Notes(msgspec.Struct):
    pages: list[str] = []


class Notebook(Actor, name="Notebook", state=Notes):
    """Keeps a state large enough to be checkpointed in parts."""

    state: Notes

    @handler
    async def fill(self, pages: int) -> int:
        self.state.pages.extend(f"{index:04d}" + "x" * 2000 for index in range(pages))
        return len(self.state.pages)

    @handler
    async def wait(self) -> int:
        await hold(self.ctx)
        return len(self.state.pages)


async def test_the_deploy_check_reads_a_state_checkpointed_in_parts(db: pathlib.Path) -> None:
    async with running(db, [Notebook], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Notebook, "k")
        assert await actor.call(Notebook.fill, 40) == 40  # 80 KB: checkpointed in parts
        await actor.send(Notebook.wait)
        await reaches(actor, "waiting-event")
        assert await stream_types(rt.store, "state/Notebook/k")  # the parts are there
    report = await testing.replay_async([Notebook], journal=db)
    assert (report.checked, report.ok, report.unchecked) == (1, True, [])
