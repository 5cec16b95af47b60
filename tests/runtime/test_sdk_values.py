"""The values LLM SDKs return (pydantic models, pydantic-ai's dataclasses) and plain
dataclasses as step results, handler arguments, state and events: journaled on a real
SQLite file, rebuilt as the annotated class (equal to the original) live, on replay and
after a restart; and refused, naming the type, when the class is defined or before a
step's function runs, not after the paid call."""

from __future__ import annotations

import dataclasses
import pathlib
from collections import Counter
from typing import Any

import msgspec
import pydantic
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion, ChatCompletionMessage
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse

from actorflow import (
    NO_RETRY,
    Actor,
    ActorDefinitionError,
    HandlerFailed,
    InvalidMessageError,
    InvalidResultError,
    StepFailed,
    handler,
)
from actorflow._values import decoder_for, encode_result
from tests.runtime.sdk_values import (
    anthropic_message,
    chat_completion,
    model_request,
    model_response,
)
from tests.runtime.support import hold, replay_held, run_to_hold, running

pytestmark = pytest.mark.anyio

calls: Counter[str] = Counter()
#: (where, value) for every value a handler saw: live, then on replay.
seen: list[tuple[str, Any]] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    seen.clear()


class Answer(msgspec.Struct):
    """A Struct with a model in a field, and a list of them."""

    completion: ChatCompletion
    earlier: list[ChatCompletion] = []


@dataclasses.dataclass
class Turned:
    """A plain dataclass holding a model."""

    message: Message
    note: str = ""


async def ask_openai() -> ChatCompletion:
    calls["openai"] += 1
    return chat_completion()


async def ask_anthropic() -> Message | None:
    calls["anthropic"] += 1
    return anthropic_message()


def ask_pydantic_ai() -> list[ModelMessage]:  # a sync step: it runs in a worker thread
    calls["pydantic-ai"] += 1
    return [model_request(), model_response()]


async def nested() -> Answer:
    calls["nested"] += 1
    return Answer(chat_completion(), [chat_completion("earlier", tool=False)])


async def in_a_dataclass() -> Turned:
    calls["dataclass"] += 1
    return Turned(anthropic_message(), "kept")


class Agent(Actor, retry=NO_RETRY):
    @handler
    async def think(self) -> int:
        """Every kind of SDK value as a step result, held open for a restart."""
        for name, fn in (
            ("openai", ask_openai),
            ("anthropic", ask_anthropic),
            ("pydantic-ai", ask_pydantic_ai),
            ("nested", nested),
            ("dataclass", in_a_dataclass),
        ):
            seen.append((name, await self.ctx.run(fn)))
        await hold(self.ctx)
        return len(seen)


EXPECTED: dict[str, tuple[type, Any]] = {
    "openai": (ChatCompletion, chat_completion()),
    "anthropic": (Message, anthropic_message()),
    "pydantic-ai": (list, [model_request(), model_response()]),
    "nested": (Answer, Answer(chat_completion(), [chat_completion("earlier", tool=False)])),
    "dataclass": (Turned, Turned(anthropic_message(), "kept")),
}


def check_seen(values: list[tuple[str, Any]]) -> None:
    assert [name for name, _ in values] == list(EXPECTED)
    for name, value in values:
        kind, original = EXPECTED[name]
        assert type(value) is kind, name
        assert value == original, name
    openai, _, pydantic_ai, answer, turned = (value for _, value in values)
    assert type(openai.choices[0].message) is ChatCompletionMessage
    assert openai.x_local_server == {"gpu": "none", "ms": 12.5}  # a server's extra field
    assert [type(m) for m in pydantic_ai] == [ModelRequest, ModelResponse]
    assert type(answer.completion) is type(answer.earlier[0]) is ChatCompletion
    assert type(turned.message) is Message


async def test_sdk_results_come_back_as_their_classes_live_and_after_a_restart(
    db: pathlib.Path,
) -> None:
    async with running(db, [Agent]) as rt:
        agent = rt.ref(Agent, "a")
        invocation = await run_to_hold(agent, Agent.think)
    check_seen(seen)  # live: the handler got the values as the journal rebuilds them
    live = list(seen)
    seen.clear()
    assert await replay_held(db, [Agent], agent, invocation) == len(EXPECTED)
    check_seen(seen)  # replayed from the SQLite file by a new runtime
    assert seen == live
    assert calls == dict.fromkeys(EXPECTED, 1)  # no step ran twice


class Signed(pydantic.BaseModel):
    by: str


class Approval(Signed):
    comment: str | None = None


class Conversation(pydantic.BaseModel):
    """A pydantic state: pydantic-ai messages and chat completions."""

    messages: list[ModelMessage] = []
    completions: list[ChatCompletion] = []


@dataclasses.dataclass
class Transcript:
    """A dataclass state."""

    replies: list[Message] = dataclasses.field(default_factory=list)


class Chat(Actor, state=Conversation, events={"approval": Approval}):
    @handler
    async def add(self, request: ModelRequest, completion: ChatCompletion | None = None) -> int:
        """Pydantic-ai's dataclass and an openai model as arguments, into the state."""
        seen.append(("args", (request, completion)))
        self.state.messages.append(request)
        if completion is not None:
            self.state.completions.append(completion)
        return len(self.state.messages)

    @handler
    async def respond(self) -> ModelResponse:
        """An event typed as a model, and a pydantic-ai dataclass as the handler's result."""
        approval = await self.ctx.wait_for("approval")
        seen.append(("approval", approval))
        seen.append(("state", self.state.model_copy(deep=True)))
        response = await self.ctx.run(model_response)
        self.state.messages.append(response)
        return response


class Desk(Actor, state=Transcript):
    @handler
    async def keep(self, reply: Message) -> list[Message]:
        self.state.replies.append(reply)
        return self.state.replies


async def test_models_as_arguments_state_events_and_results_survive_a_restart(
    db: pathlib.Path,
) -> None:
    async with running(db, [Chat, Desk]) as rt:
        chat = rt.ref(Chat, "c")
        assert await chat.call(Chat.add, model_request(), chat_completion()) == 1
        assert await chat.call(Chat.add, request=model_request()) == 2
        desk = rt.ref(Desk, "d")
        assert await desk.call(Desk.keep, anthropic_message()) == [anthropic_message()]
        with pytest.raises(InvalidMessageError, match="approval"):
            await chat.deliver("approval", {"comment": "no 'by'"})
        # what comes from outside validates, SDK models too (no construct for it)
        odd = chat_completion().model_dump()
        odd["choices"][0]["finish_reason"] = "eos"
        with pytest.raises(
            InvalidMessageError, match=r"choices.0.finish_reason(.|\n)*\$.completion"
        ):
            await chat.call(Chat.add, model_request(), odd)
    (_, (request, completion)), _ = seen
    assert type(request) is ModelRequest
    assert request == model_request()
    assert type(completion) is ChatCompletion
    assert completion == chat_completion()
    seen.clear()
    async with running(db, [Chat, Desk]) as rt:  # the state comes back from the checkpoint
        chat = rt.ref(Chat, "c")
        invocation = await chat.send(Chat.respond)
        await chat.deliver("approval", Approval(by="ana"))
        response = await rt.result(invocation)
        desk = rt.ref(Desk, "d")
        replies = await desk.call(Desk.keep, anthropic_message())
    assert type(response) is ModelResponse
    assert response == model_response()
    (_, approval), (_, state) = seen
    assert type(approval) is Approval
    assert approval == Approval(by="ana")
    assert state == Conversation(
        messages=[model_request(), model_request()], completions=[chat_completion()]
    )
    assert [type(m) for m in state.messages] == [ModelRequest, ModelRequest]
    assert [type(r) for r in replies] == [Message, Message]


# -- refused where the type is declared -----------------------------------------------------


class Opaque:
    """Neither a type msgspec encodes nor a pydantic model."""


class Unjournalable(pydantic.BaseModel):
    """A model pydantic cannot dump and validate as data."""

    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    handle: Opaque


def test_unjournalable_types_are_refused_when_the_actor_class_is_defined() -> None:
    with pytest.raises(ActorDefinitionError) as raised:

        class Broken(Actor, state=Unjournalable, events={"go": list[Unjournalable]}):
            @handler
            async def arg(self, x: Unjournalable) -> None:
                pass

            @handler
            async def nested(self, x: dict[str, Opaque]) -> None:
                pass

            @handler
            async def result(self) -> Unjournalable | None:
                return None

    message = str(raised.value)
    assert "state Unjournalable: the pydantic model Unjournalable cannot be journaled" in message
    assert "events: the payload type of 'go': the pydantic model Unjournalable (in " in message
    assert "Broken.arg: parameter 'x': the pydantic model Unjournalable cannot be" in message
    assert "Broken.nested: parameter 'x': Opaque (in dict[str, " in message
    assert "Broken.result: its return type: the pydantic model Unjournalable (in " in message
    assert len([line for line in message.splitlines() if line.startswith("  - ")]) == 5


def test_a_state_that_is_no_record_type_is_refused() -> None:
    with pytest.raises(ActorDefinitionError, match="a dataclass or a pydantic BaseModel"):

        class Listy(Actor, state=list):  # type: ignore[arg-type]
            @handler
            async def go(self) -> None:
                pass


def paid_call() -> Unjournalable:
    calls["paid"] += 1
    return Unjournalable(handle=Opaque())


def untyped_call():  # type: ignore[no-untyped-def]
    calls["untyped"] += 1
    return chat_completion()


def typed_any() -> dict[str, Any]:
    calls["any"] += 1
    return {"completion": chat_completion()}


def as_base() -> Signed:
    calls["base"] += 1
    return Approval(by="ana")


class Careless(Actor, retry=NO_RETRY):
    @handler
    async def go(self, which: str) -> str:
        fns = {"paid": paid_call, "untyped": untyped_call, "any": typed_any, "base": as_base}
        try:
            await self.ctx.run(fns[which])
        except (InvalidResultError, StepFailed) as exc:
            return f"{type(exc).__name__}: {exc}"
        return "ran"


async def test_an_unjournalable_result_type_is_refused_before_the_step_runs(
    db: pathlib.Path,
) -> None:
    async with running(db, [Careless]) as rt:
        refused = await rt.ref(Careless, "k").call(Careless.go, "paid")
    assert refused.startswith("InvalidResultError: step 'paid_call' cannot run")
    assert "the pydantic model Unjournalable cannot be journaled" in refused
    assert calls == {}  # the function was never called: nothing paid for is lost


@pytest.mark.parametrize(
    ("which", "kind", "step"),
    [
        ("untyped", "Any", "untyped_call"),
        ("any", "dict[str, Any]", "typed_any"),
        ("base", "Signed", "as_base"),
    ],
)
async def test_a_model_whose_annotation_does_not_name_its_class_is_refused(
    db: pathlib.Path, which: str, kind: str, step: str
) -> None:
    """Instead of coming back as a dict (or its base class) where it went in as a model."""
    async with running(db, [Careless]) as rt:
        refused = await rt.ref(Careless, "k").call(Careless.go, which)
    assert refused.startswith(f"InvalidResultError: step {step!r} returned a ")
    assert f"where its result type {kind} does not name that class" in refused
    assert "Annotate the return type with the model's class" in refused
    assert calls == {which: 1}


def test_an_sdk_response_its_own_types_do_not_validate_is_kept_as_the_sdk_built_it() -> None:
    """A local OpenAI-compatible server's finish reason the SDK does not list: the openai
    client builds the response anyway, and so does the journal (no failed paid call)."""
    odd = chat_completion()
    odd.choices[0].finish_reason = "eos"  # type: ignore[assignment]
    data, live = encode_result("step", odd, ChatCompletion)
    replayed = decoder_for(ChatCompletion).decode(data)
    assert type(live) is type(replayed) is ChatCompletion
    assert live == replayed == odd
    assert type(replayed.choices[0].message) is ChatCompletionMessage
    with pytest.raises(msgspec.ValidationError, match="by"):  # other models still validate
        decoder_for(Approval).decode(msgspec.msgpack.encode({"comment": "no by"}))


class Loose(Actor):
    @handler
    async def answer(self) -> Any:
        return Approval(by="ana")


async def test_a_handler_result_whose_annotation_does_not_name_its_model_is_refused(
    db: pathlib.Path,
) -> None:
    async with running(db, [Loose]) as rt:
        with pytest.raises(HandlerFailed, match=r"Loose.answer returned a .*Approval"):
            await rt.ref(Loose, "k").call(Loose.answer)


def test_equal_types_written_twice_are_not_taken_for_a_type_only_pydantic_validates() -> None:
    """The per-type cache hands back the first of equal types it saw; ``dict[str, Any]``
    written twice is two equal objects, neither of which pydantic alone validates (the
    model check of a step returning one depended on which test had run first)."""
    from actorflow import _journalable

    first, second = dict[str, Any], dict[str, Any]
    assert first == second
    assert first is not second
    _journalable.validated_type(first)
    assert not _journalable.by_pydantic(second)
