"""Queries against a real `actorflow serve` on a SQLite file: an assistant waits for a human's
approval; over HTTP (and the CLI) a query reads its conversation as of its last step,
without waiting for the turn, before and after a SIGKILL; the approval then completes it."""

from __future__ import annotations

import contextlib
import json
import pathlib
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx

from actorflow import SyncClient
from tests.server.processes import (
    ACTORFLOW,
    GRACE,
    ROOT,
    Server,
    _wait_until_answered,
    clean_env,
    cli,
    free_port,
)

TOKEN = "query-token-" + "q" * 16
ACTOR = "Assistant/conv-1"
#: Longest one request may take: a query that queued behind the turn (which waits for an
#: approval nobody sends meanwhile) would never be answered, and fails the test here.
REQUEST_TIMEOUT = 10.0


@contextlib.contextmanager
def serving(workdir: pathlib.Path, env: dict[str, str]) -> Iterator[Server]:
    """`actorflow serve` of tests/server/query_app.py on ``workdir/journal.db``, with a
    token; killed if still running at the end."""
    port = free_port()
    log = workdir / f"serve-{port}.log"
    token_file = workdir / "token"
    token_file.write_text(TOKEN)
    command = [ACTORFLOW, "serve", "tests.server.query_app", "--port", str(port)]
    command += ["--grace", str(GRACE), "--journal", str(workdir / "journal.db")]
    command += ["--token-file", str(token_file)]
    with open(log, "wb") as err:
        process = subprocess.Popen(command, cwd=ROOT, stdout=err, stderr=err, env=env)
        server = Server(process, f"http://127.0.0.1:{port}", log)
        try:
            _wait_until_answered(server, "/readyz", None)
            yield server
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


def wait_for_state(client: SyncClient, state: str) -> None:
    give_up = time.monotonic() + REQUEST_TIMEOUT
    while client.status(ACTOR).state != state:
        assert time.monotonic() < give_up, f"{ACTOR} never became {state!r}"
        time.sleep(0.02)


def get_query(
    server: Server, name: str, args: str | None = None, token: str = TOKEN
) -> httpx.Response:
    params = {"args": args} if args is not None else {}
    return httpx.get(
        f"{server.url}/v1/actors/{ACTOR}/query/{name}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=REQUEST_TIMEOUT,
    )


def test_a_query_answers_while_the_turn_waits_for_approval_across_a_sigkill(
    tmp_path: pathlib.Path,
) -> None:
    calls = tmp_path / "calls.log"
    env = clean_env(QUERY_APP_CALLS=str(calls))
    drafted = ["user: tides?", "assistant (draft): a draft answer to tides?"]
    with (
        serving(tmp_path, env) as server,
        SyncClient(server.url, token=TOKEN, timeout=REQUEST_TIMEOUT) as client,
    ):
        sent = client.send(ACTOR, "ask", {"question": "tides?"})
        wait_for_state(client, "waiting-event")
        response = get_query(server, "transcript")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "actor": ACTOR,
            "query": "transcript",
            "result": drafted,
            "as_of": "step",
            "invocation": sent.invocation,
        }
        assert get_query(server, "transcript", '{"last": 1}').json()["result"] == drafted[-1:]
        refused = get_query(server, "transcript", token="wrong")
        assert (refused.status_code, refused.json()["error"]["type"]) == (401, "unauthorized")
        assert client.status(ACTOR).state == "waiting-event"  # the turn still waits
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
    with (
        serving(tmp_path, env) as server,  # recovery replays the turn up to its wait
        SyncClient(server.url, token=TOKEN, timeout=REQUEST_TIMEOUT) as client,
    ):
        answer = get_query(server, "transcript").json()
        assert (answer["result"], answer["as_of"]) == (drafted, "step")
        printed = cli(
            "query", ACTOR, "transcript", '{"last": 1}', "--url", server.url,
            env={**env, "ACTORFLOW_TOKEN": TOKEN},
        )  # fmt: skip
        assert printed.returncode == 0, printed.stderr
        assert json.loads(printed.stdout)["result"] == drafted[-1:]
        unknown = cli(
            "query", ACTOR, "nope", "--url", server.url, env={**env, "ACTORFLOW_TOKEN": TOKEN}
        )
        assert unknown.returncode == 1
        assert "has no query 'nope'; its queries: approver, transcript" in unknown.stderr
        assert "(HTTP 404, unknown_query)" in unknown.stderr
        client.deliver(ACTOR, "approval", "ana")
        assert client.result(sent.invocation, timeout=REQUEST_TIMEOUT) == drafted[1][19:]
        after = get_query(server, "approver").json()
        assert (after["result"], after["as_of"], after["invocation"]) == ("ana", "checkpoint", None)
        assert server.stop() == 0
    assert calls.read_text() == "draft tides?\n"  # the drafting step ran once
