"""A misdefined actor class fails when it is created, with every problem listed at once."""

from __future__ import annotations

import msgspec
import pytest

from actorflow import Actor, ActorDefinitionError, handler


class Opaque:
    """A type msgspec can't encode."""


class Counter(msgspec.Struct):
    value: int = 0


def test_every_problem_of_an_actor_class_is_listed_at_once() -> None:
    with pytest.raises(ActorDefinitionError) as raised:

        class Broken(Actor, name="1 bad name", state=int):  # type: ignore[arg-type]
            @handler
            def not_async(self, x: int) -> int:
                return x

            @handler
            async def unannotated(self, x) -> None:  # type: ignore[no-untyped-def]
                pass

            @handler
            async def opaque(self, x: Opaque) -> None:
                pass

    message = str(raised.value)
    assert "Broken" in message
    assert "'1 bad name'" in message
    assert "state=<class 'int'>" in message
    assert "Broken.not_async must be declared `async def`" in message
    assert "Broken.unannotated: annotate parameter 'x'" in message
    assert "Broken.opaque: parameter 'x': Opaque cannot be journaled" in message
    assert len([line for line in message.splitlines() if line.startswith("  - ")]) == 5


def test_a_sync_handler_is_refused_at_class_creation() -> None:
    with pytest.raises(ActorDefinitionError, match=r"Sync\.go must be declared `async def`"):

        class Sync(Actor):
            @handler
            def go(self) -> None:
                pass


def test_an_unannotated_parameter_is_refused_at_class_creation() -> None:
    with pytest.raises(ActorDefinitionError, match="annotate parameter 'amount'"):

        class Untyped(Actor):
            @handler
            async def go(self, amount) -> None:  # type: ignore[no-untyped-def]
                pass


def test_an_unencodable_parameter_type_is_refused_at_class_creation() -> None:
    with pytest.raises(ActorDefinitionError, match="parameter 'thing': Opaque cannot be journaled"):

        class Unencodable(Actor):
            @handler
            async def go(self, thing: Opaque) -> None:
                pass


def test_an_unencodable_return_type_is_refused_at_class_creation() -> None:
    with pytest.raises(ActorDefinitionError, match="its return type: Opaque cannot be journaled"):

        class BadResult(Actor):
            @handler
            async def go(self) -> Opaque:
                return Opaque()


@pytest.mark.parametrize("state", [int, dict, Opaque])
def test_a_state_that_is_not_a_struct_is_refused(state: type) -> None:
    with pytest.raises(ActorDefinitionError, match=r"must be a msgspec\.Struct subclass"):

        class Stateful(Actor, state=state):
            @handler
            async def go(self) -> None:
                pass


def test_a_state_without_defaults_is_refused() -> None:
    class Required(msgspec.Struct):
        value: int

    with pytest.raises(ActorDefinitionError, match="constructible with no arguments"):

        class Stateful(Actor, state=Required):
            @handler
            async def go(self) -> None:
                pass


def test_an_actor_without_handlers_is_refused() -> None:
    with pytest.raises(ActorDefinitionError, match="it has no handlers"):

        class Empty(Actor):
            async def not_a_handler(self) -> None:
                pass


@pytest.mark.parametrize("name", ["1starts-with-digit", "has space", "slash/inside", "x" * 101])
def test_a_bad_type_name_is_refused(name: str) -> None:
    with pytest.raises(ActorDefinitionError, match="actor type name"):

        class Named(Actor, name=name):
            @handler
            async def go(self) -> None:
                pass


def test_a_well_defined_actor_is_accepted_with_its_name_and_handlers() -> None:
    class Fine(Actor, name="billing.Account", state=Counter):
        @handler
        async def deposit(self, amount: int, note: str = "") -> int:
            return amount

    assert Fine.__actorflow_name__ == "billing.Account"
    assert set(Fine.__actorflow_handlers__) == {"deposit"}
