"""Messages from outside: validated before anything is written; idempotent client retries."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from actorflow import (
    Actor,
    ActorRef,
    InvalidMessageError,
    ManualClock,
    Runtime,
    UnknownActorError,
    UnknownHandlerError,
    handler,
)
from journal import MemoryStore

pytestmark = pytest.mark.anyio

runs: list[tuple[str, int]] = []


class Order(msgspec.Struct):
    sku: str
    quantity: int


class Shop(Actor):
    @handler
    async def place(self, order: Order, rush: bool = False) -> int:
        runs.append((self.key, order.quantity))
        return order.quantity

    @handler
    async def add(self, a: int, b: int) -> int:
        runs.append((self.key, a + b))
        return a + b


class Bounded(Actor):
    @handler
    async def repeat(self, times: Annotated[int, msgspec.Meta(ge=0, le=100)]) -> int:
        return times


class NotHosted(Actor):
    @handler
    async def go(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _reset() -> None:
    runs.clear()


async def nothing_written(store: MemoryStore) -> None:
    assert await store.list_streams("inbox/") == []
    assert await store.last_position("inbox/Shop/k") == 0
    assert await store.list_streams() == []


@pytest.mark.parametrize(
    ("args", "kwargs", "complaint"),
    [
        (("not a number", 2), {}, r"invalid arguments for Shop\.add: Expected `int`, got `str`"),
        ((1,), {}, r"invalid arguments for Shop\.add: Object missing required field `b`"),
        ((1, 2, 3), {}, r"Shop\.add\(\) takes 2 arguments, got 3"),
        ((1,), {"a": 2}, r"Shop\.add\(\) got 'a' twice"),
    ],
)
async def test_wrong_arguments_are_refused_before_anything_is_written(
    args: tuple[Any, ...], kwargs: dict[str, Any], complaint: str
) -> None:
    async with MemoryStore() as store, Runtime(store, [Shop], clock=ManualClock()) as rt:
        with pytest.raises(InvalidMessageError, match=complaint):
            await rt.send(rt.ref(Shop, "k").ref, "add", args, kwargs)
        await nothing_written(store)
    assert runs == []


async def test_an_unexpected_keyword_argument_is_refused_before_anything_is_written() -> None:
    async with MemoryStore() as store, Runtime(store, [Shop], clock=ManualClock()) as rt:
        with pytest.raises(InvalidMessageError, match=r"Shop\.add: .*unknown field `c`"):
            await rt.send(rt.ref(Shop, "k").ref, "add", (1, 2), {"c": 3})
        await nothing_written(store)
    assert runs == []


async def test_a_struct_argument_is_validated_field_by_field() -> None:
    async with MemoryStore() as store, Runtime(store, [Shop], clock=ManualClock()) as rt:
        shop = rt.ref(Shop, "k")
        with pytest.raises(InvalidMessageError, match=r"Expected `int`, got `str` - at `\$\.order"):
            await shop.call(Shop.place, {"sku": "tea", "quantity": "many"})
        await nothing_written(store)
        assert await shop.call(Shop.place, {"sku": "tea", "quantity": 3}) == 3
        assert await shop.call(Shop.place, Order("tea", 4), rush=True) == 4


async def test_an_unknown_handler_is_refused_before_anything_is_written() -> None:
    async with MemoryStore() as store, Runtime(store, [Shop], clock=ManualClock()) as rt:
        with pytest.raises(
            UnknownHandlerError, match="has no handler 'refund'; its handlers: add, place"
        ):
            await rt.send(ActorRef("Shop", "k"), "refund", (1,))
        await nothing_written(store)


async def test_an_unknown_actor_type_is_refused_before_anything_is_written() -> None:
    async with MemoryStore() as store, Runtime(store, [Shop], clock=ManualClock()) as rt:
        with pytest.raises(UnknownActorError, match=r"unknown actor type .NotHosted.*hosts: Shop"):
            rt.ref(NotHosted, "k")
        with pytest.raises(UnknownActorError, match="unknown actor type 'Nope'"):
            await rt.send(ActorRef("Nope", "k"), "go")
        with pytest.raises(UnknownActorError, match="unknown actor type 'Nope'"):
            await rt.deliver(ActorRef("Nope", "k"), "approved", True)
        await nothing_written(store)


@pytest.mark.parametrize("key", ["", "has space", "slash/inside", "x" * 201, "new\nline"])
async def test_a_bad_key_is_refused_before_anything_is_written(key: str) -> None:
    async with MemoryStore() as store, Runtime(store, [Shop], clock=ManualClock()) as rt:
        with pytest.raises(InvalidMessageError, match=r"actor key .* is not valid"):
            rt.ref(Shop, key)
        with pytest.raises(InvalidMessageError, match=r"actor key .* is not valid"):
            await rt.send(ActorRef("Shop", key), "add", (1, 2))
        with pytest.raises(InvalidMessageError, match=r"actor key .* is not valid"):
            await rt.deliver(ActorRef("Shop", key), "approved", True)
        assert await store.list_streams() == []


async def test_an_unencodable_event_payload_is_refused_before_anything_is_written() -> None:
    async with MemoryStore() as store, Runtime(store, [Shop], clock=ManualClock()) as rt:
        with pytest.raises(InvalidMessageError, match="payload is not encodable"):
            await rt.ref(Shop, "k").deliver("approved", object())
        await nothing_written(store)


async def test_a_client_retry_with_the_same_idempotency_key_gets_the_same_invocation() -> None:
    async with MemoryStore() as store, Runtime(store, [Shop], clock=ManualClock()) as rt:
        shop = rt.ref(Shop, "k")
        first = await rt.send(shop.ref, "add", (1, 2), idempotency_key="client-7")
        again = await rt.send(shop.ref, "add", (1, 2), idempotency_key="client-7")
        other = await rt.send(shop.ref, "add", (1, 2), idempotency_key="client-8")
        assert again == first
        assert other != first
        assert await rt.result(first) == 3
        assert await rt.result(other) == 3
        assert runs == [("k", 3), ("k", 3)]
        inbox = [record.type async for record in store.read("inbox/Shop/k")]
        assert inbox == ["message", "message"]


async def test_the_same_idempotency_key_on_another_actor_is_another_invocation() -> None:
    async with MemoryStore() as store, Runtime(store, [Shop], clock=ManualClock()) as rt:
        one = await rt.send(ActorRef("Shop", "a"), "add", (1, 1), idempotency_key="k")
        two = await rt.send(ActorRef("Shop", "b"), "add", (2, 2), idempotency_key="k")
        assert one != two
        assert (await rt.result(one), await rt.result(two)) == (2, 4)


async def test_a_bad_idempotency_key_is_refused_before_anything_is_written() -> None:
    async with MemoryStore() as store, Runtime(store, [Shop], clock=ManualClock()) as rt:
        with pytest.raises(InvalidMessageError, match="idempotency key"):
            await rt.send(ActorRef("Shop", "k"), "add", (1, 2), idempotency_key="")
        await nothing_written(store)


async def test_constraints_annotated_on_a_parameter_are_enforced_before_anything_is_written() -> (
    None
):
    async with MemoryStore() as store, Runtime(store, [Bounded], clock=ManualClock()) as rt:
        with pytest.raises(InvalidMessageError, match=r"Expected `int` <= 100 - at `\$\.times`"):
            await rt.send(rt.ref(Bounded, "k").ref, "repeat", (1000,))
        assert await store.list_streams() == []
        assert await rt.ref(Bounded, "k").call(Bounded.repeat, 100) == 100
