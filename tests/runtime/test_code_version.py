"""Every turn records the code version that ran it: the app's build id when it names one,
else a version derived from the actor class's source. Status (in memory, after
passivation, after a restart, in listings) and the journal view show it."""

from __future__ import annotations

import importlib
import pathlib
import sys
import textwrap
from collections.abc import Iterator

import pytest

from actorflow import Actor, ActorRef, handler
from actorflow._actor import source_version
from tests.runtime.support import eventually, reaches, running

pytestmark = pytest.mark.anyio


class Worker(Actor):
    @handler
    async def echo(self, text: str) -> str:
        return text


def _module_source(body: str) -> str:
    return textwrap.dedent(
        f"""
        import actorflow


        class Agent(actorflow.Actor):
            @actorflow.handler
            async def run(self) -> str:
                {body}
        """
    )


@pytest.fixture
def agent_module(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A module ``versioned_agent`` in ``tmp_path``, importable while the test runs."""
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path / "versioned_agent.py"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("versioned_agent", None)


def test_the_source_version_follows_the_class_s_source(agent_module: pathlib.Path) -> None:
    agent_module.write_text(_module_source('return "one"'))
    first = source_version(importlib.import_module("versioned_agent").Agent)
    again = source_version(importlib.reload(sys.modules["versioned_agent"]).Agent)
    agent_module.write_text(_module_source('return "two"'))
    changed = source_version(importlib.reload(sys.modules["versioned_agent"]).Agent)

    assert first.startswith("src-")
    assert len(first) == len("src-") + 12
    assert again == first  # unchanged code, same version: a redeploy is not a new version
    assert changed != first


def test_a_class_without_source_has_an_unknown_version() -> None:
    made = type("Made", (), {})  # made at run time: no source to read
    assert source_version(made) == "src-unknown"


async def test_each_turn_records_the_build_id_and_status_shows_the_latest(
    tmp_path: pathlib.Path,
) -> None:
    db = tmp_path / "journal.db"
    ref = ActorRef("Worker", "w")
    async with running(db, [Worker], version="release-1") as rt:
        assert rt.versions == {"Worker": "release-1"}
        assert (await rt.status(ref)).version is None  # no turn yet
        await rt.ref(Worker, "w").call(Worker.echo, "a")
        await reaches(rt.ref(Worker, "w"), "idle")
        assert (await rt.status(ref)).version == "release-1"
    async with running(db, [Worker], version="release-2") as rt:
        assert (await rt.status(ref)).version == "release-1"  # from the checkpoint
        (listed,) = await rt.list_actors("Worker")
        assert listed.version == "release-1"
        await rt.ref(Worker, "w").call(Worker.echo, "b")
        await reaches(rt.ref(Worker, "w"), "idle")
        assert (await rt.status(ref)).version == "release-2"
        turns = [e for e in await rt.journal(ref) if e.type == "turn"]
        assert [turn.data["version"] for turn in turns] == ["release-1", "release-2"]


async def test_without_a_build_id_turns_record_the_source_version(
    tmp_path: pathlib.Path,
) -> None:
    async with running(tmp_path / "journal.db", [Worker], idle_timeout=0.05) as rt:
        await rt.ref(Worker, "w").call(Worker.echo, "a")

        async def passivated() -> bool:
            return rt.hosted() == {}

        await eventually(passivated, "the actor to be passivated")
        assert (await rt.status(ActorRef("Worker", "w"))).version == source_version(Worker)
