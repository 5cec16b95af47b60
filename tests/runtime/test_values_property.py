"""Generated pydantic models and dataclasses survive the journal's encoding as their own
class and equal; their canonical bytes do not depend on the order dicts and sets were
built in, nor on the process's hash seed."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import os
import pathlib
import subprocess
import sys
import uuid
from typing import Any

import msgspec
import pydantic
from hypothesis import given, settings
from hypothesis import strategies as st

from actorflow._values import canonical, decoder_for, encode_result


class Mood(enum.Enum):
    CALM = "calm"
    TENSE = "tense"


class Tool(pydantic.BaseModel):
    name: str
    arguments: dict[str, int] = {}


class Reply(pydantic.BaseModel):
    """Fields of most of the kinds pydantic and msgspec both know."""

    model_config = pydantic.ConfigDict(extra="allow")

    text: str
    score: float
    tokens: int
    raw: bytes
    at: datetime.datetime
    id: uuid.UUID
    mood: Mood
    tags: set[str]
    pair: tuple[int, str]
    tools: list[Tool]
    parent: Reply | None = None
    alias_field: str = pydantic.Field("", alias="aliasField")


@dataclasses.dataclass
class Exchange:
    """A dataclass holding models, as msgspec decodes it natively."""

    question: str
    replies: list[Reply]
    best: Reply | None = None
    counts: dict[str, int] = dataclasses.field(default_factory=dict)


texts = st.text(max_size=20)
ints = st.integers(-(2**63), 2**63 - 1)
tools = st.builds(Tool, name=texts, arguments=st.dictionaries(texts, ints, max_size=3))
aware = st.datetimes(timezones=st.just(datetime.UTC))


def replies(parent: st.SearchStrategy[Reply | None]) -> st.SearchStrategy[Reply]:
    return st.builds(
        Reply,
        text=texts,
        score=st.floats(allow_nan=False),
        tokens=ints,
        raw=st.binary(max_size=20),
        at=aware,
        id=st.uuids(),
        mood=st.sampled_from(Mood),
        tags=st.sets(texts, max_size=4),
        pair=st.tuples(ints, texts),
        tools=st.lists(tools, max_size=3),
        parent=parent,
        aliasField=texts,
    )


reply = replies(st.none() | replies(st.none()))
exchanges = st.builds(
    Exchange,
    question=texts,
    replies=st.lists(reply, max_size=3),
    best=st.none() | reply,
    counts=st.dictionaries(texts, ints, max_size=4),
)


@settings(max_examples=60, deadline=None)
@given(exchanges)
def test_models_and_dataclasses_come_back_as_themselves(value: Exchange) -> None:
    for kind, item in ((Exchange, value), (list[Reply], value.replies), (Reply | None, value.best)):
        data, decoded = encode_result("step", item, kind)
        replayed = decoder_for(kind).decode(data)
        assert decoded == item
        assert replayed == item
        assert type(replayed) is type(item)
        assert canonical(replayed) == data  # the same bytes as the value it was rebuilt from


@settings(max_examples=60, deadline=None)
@given(reply, st.randoms(use_true_random=False))
def test_a_model_s_canonical_bytes_do_not_depend_on_insertion_order(value: Reply, rnd: Any) -> None:
    shuffled = value.model_copy(
        update={
            "tags": set(rnd.sample(sorted(value.tags), len(value.tags))),
            "tools": [
                tool.model_copy(
                    update={
                        "arguments": dict(
                            rnd.sample(list(tool.arguments.items()), len(tool.arguments))
                        )
                    }
                )
                for tool in value.tools
            ],
        }
    )
    assert canonical(shuffled) == canonical(value)


def canonical_hex() -> str:
    """The canonical bytes of a model holding sets and dicts of strings, in hex."""
    tool = Tool(name="search", arguments={f"k{n}": n for n in range(30)})
    reply = Reply(
        text="t",
        score=0.5,
        tokens=3,
        raw=b"\x00\xff",
        at=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        id=uuid.UUID(int=7),
        mood=Mood.CALM,
        tags={f"tag-{n}" for n in range(30)},
        pair=(1, "a"),
        tools=[tool],
    )
    return canonical(reply).hex()


def test_a_model_s_canonical_bytes_are_the_same_under_every_hash_seed() -> None:
    root = pathlib.Path(__file__).resolve().parents[2]
    code = "from tests.runtime.test_values_property import canonical_hex; print(canonical_hex())"
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout.strip())
    assert outputs == {canonical_hex()}


def test_msgspec_sees_the_same_bytes_as_plain_data() -> None:
    """A model is journaled as the map pydantic dumps (by alias), readable without it."""
    tool = Tool(name="f", arguments={"b": 2, "a": 1})
    assert msgspec.msgpack.decode(canonical(tool)) == {"arguments": {"a": 1, "b": 2}, "name": "f"}
