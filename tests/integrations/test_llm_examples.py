"""The two LLM agent examples against the fake OpenAI server, in process: the answers, the
requests the server counted, and the tools' ledger."""

from __future__ import annotations

import hashlib
import json
import pathlib
import socket
import threading
import urllib.request
from collections.abc import Iterator

import openai
import pytest

from actorflow import Client, StreamEvent
from examples import fake_openai, llm_tools, openai_agent, pydantic_agent
from tests.runtime.support import crashing, eventually, reaches, running
from tests.server.processes import clean_env, served

pytestmark = pytest.mark.anyio

ANSWER = (
    "Answer to 'dinner in Lyon': get_weather said {weather}; book_table said table booked ({ref})."
)


@pytest.fixture
def server(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[fake_openai.FakeOpenAI]:
    """The fake server, with both examples and their tools pointed at it and at a fresh ledger."""
    monkeypatch.setattr(llm_tools, "LEDGER", tmp_path / "tools.db")
    monkeypatch.setattr(llm_tools, "DELAY", 0.0)
    with fake_openai.running(tmp_path / "openai-calls.log") as fake:
        monkeypatch.setattr(openai_agent, "BASE_URL", fake.url)
        yield fake


def expected_answer(key: str) -> str:
    """The fake model's final answer, given the booking's idempotency key."""
    ref = hashlib.sha256(key.encode()).hexdigest()[:8]
    return ANSWER.format(weather=llm_tools.weather_in("dinner in Lyon"), ref=ref)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_the_openai_sdk_agent_calls_each_tool_then_answers(
    tmp_path: pathlib.Path, server: fake_openai.FakeOpenAI, stream: bool
) -> None:
    Agent = openai_agent.OpenAIConcierge
    async with running(tmp_path / "journal.db", [Agent]) as runtime:
        answer = await runtime.ref(Agent, "ana").call(Agent.ask, "dinner in Lyon", stream)
    ((key, detail),) = llm_tools.bookings()
    assert detail == "table in dinner in Lyon"
    assert answer == expected_answer(key)
    assert [call["answer"] for call in server.calls] == ["get_weather", "book_table", "text"]
    assert len({call["digest"] for call in server.calls}) == 3
    assert [tool for tool, _ in llm_tools.attempts()] == ["get_weather", "book_table"]
    assert (tmp_path / "openai-calls.log").read_text().count("(stream)") == (3 if stream else 0)


async def test_the_openai_sdk_agent_resumes_after_a_crash_without_repeating_calls(
    tmp_path: pathlib.Path, server: fake_openai.FakeOpenAI
) -> None:
    Agent = openai_agent.OpenAIConcierge
    server.delay = 0.1
    journal = tmp_path / "journal.db"
    async with crashing(journal, [Agent]) as runtime:
        invocation = await runtime.ref(Agent, "bob").send(Agent.ask, "dinner in Lyon")

        async def answered_once() -> bool:
            return len(server.calls) >= 1

        await eventually(answered_once, "the first completion")
    async with running(journal, [Agent]) as runtime:
        answer = await runtime.result(invocation)
    ((key, _),) = llm_tools.bookings()
    assert answer == expected_answer(key)
    digests = [call["digest"] for call in server.calls]
    assert len(set(digests)) == 3
    assert len(digests) - len(set(digests)) <= 1  # only a call in flight at the crash ran again


async def test_the_pydantic_ai_agent_books_once_approved(
    tmp_path: pathlib.Path, server: fake_openai.FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    Agent = pydantic_agent.Concierge
    async with (
        # A client of this test's own, closed on its event loop.
        openai.AsyncOpenAI(base_url=server.url, api_key="-", max_retries=0) as client,
        running(tmp_path / "journal.db", [Agent]) as runtime,
    ):
        monkeypatch.setattr(pydantic_agent, "AGENT", pydantic_agent.build_agent(client))
        concierge = runtime.ref(Agent, "ana")
        invocation = await concierge.send(Agent.ask, "dinner in Lyon")
        await reaches(concierge, "waiting-event")
        assert [tool for tool, _ in llm_tools.attempts()] == ["get_weather"]
        await concierge.deliver("approval", {"approved": True, "by": "ana"})
        answer = await runtime.result(invocation)
        status = await concierge.status()
    ((key, detail),) = llm_tools.bookings()
    assert detail == "table in dinner in Lyon"
    assert key.endswith(":Concierge/ana/t1/s6")
    assert answer == expected_answer(key)
    assert [call["answer"] for call in server.calls] == ["get_weather", "book_table", "text"]
    assert status.turns == 1


async def test_the_openai_sdk_agent_streams_its_tokens_to_a_client(
    tmp_path: pathlib.Path, server: fake_openai.FakeOpenAI
) -> None:
    hold = server.hold = threading.Event()  # the answer stops after its first word, until set
    env = clean_env(
        ACTORFLOW_OPENAI_BASE_URL=server.url,
        ACTORFLOW_TOOL_LEDGER=str(llm_tools.LEDGER),
        ACTORFLOW_EXAMPLE_DELAY="0",
    )
    events: list[StreamEvent] = []
    with served(tmp_path, env=env, app="examples.openai_agent") as serve:
        async with Client(serve.url) as client:
            question = {"question": "dinner in Lyon", "stream": True}
            invocation = (await client.send("OpenAIConcierge/ana", "ask", question)).invocation
            async for event in client.stream(invocation):
                events.append(event)
                if not hold.is_set() and isinstance(event.data, str):
                    # The first word reached us while the model is still answering.
                    answered = [call["answer"] for call in server.calls]
                    assert answered == ["get_weather", "book_table"]
                    hold.set()
        assert serve.stop() == 0
    ((key, _),) = llm_tools.bookings()
    answer = expected_answer(key)
    calls = [e.data for e in events if e.kind == "chunk" and isinstance(e.data, dict)]
    assert [call["function"]["name"] for call in calls] == ["get_weather", "book_table"]
    words = [e.data for e in events if e.kind == "chunk" and isinstance(e.data, str)]
    assert "".join(words) == answer
    assert len(words) == len(answer.split(" "))  # a chunk per token the server sent
    assert [e.id for e in events if e.kind == "result"] == ["1:2", "2:2", f"3:{len(words) + 1}"]
    assert events[-2].data["value"] == {"role": "assistant", "content": answer}
    assert (events[-1].kind, events[-1].data["result"]) == ("end", answer)


def test_the_fake_server_answers_and_counts_no_request_cut_short(
    server: fake_openai.FakeOpenAI,
) -> None:
    """A client killed after sending a request's headers but not its body asked
    nothing: the fake server, like a real provider, neither answers it nor counts its key
    (it once read the missing body as `{}` and counted it, so that the same key coming
    again whole looked like a key reused for another question)."""
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=10) as cut:
        cut.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nIdempotency-Key: k1\r\n"
            b"Content-Length: 200\r\n\r\n"
        )  # and no body: the client was killed
        cut.shutdown(socket.SHUT_WR)
        assert cut.recv(100) == b""  # no answer
    body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
    request = urllib.request.Request(
        f"{server.url}/chat/completions",
        data=body.encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": "k1"},
    )
    with urllib.request.urlopen(request, timeout=10) as answered:
        assert answered.status == 200
    with urllib.request.urlopen(f"{server.url.removesuffix('/v1')}/usage", timeout=10) as got:
        usage = json.loads(got.read())
    assert (usage["keys"], usage["replayed"], usage["conflicts"]) == (1, 0, [])
