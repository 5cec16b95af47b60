"""`actorflow serve` as a real process, and the CLI commands against it over loopback HTTP."""

from __future__ import annotations

import json
import pathlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from actorflow import ClientError, SyncClient
from actorflow._actor import source_version
from actorflow.cli import main
from actorflow.server import ACTOR_STATES
from tests.server import app_under_test
from tests.server.processes import (
    ACTORFLOW,
    APP,
    GRACE,
    ROOT,
    Server,
    clean_env,
    cli,
    free_port,
    served,
)


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    """Run an `actorflow` command that must succeed; its stdout."""
    done = cli(*args, env=env)
    assert done.returncode == 0, f"actorflow {' '.join(args)}:\n{done.stderr}"
    return done.stdout


def ok_json(*args: str) -> Any:
    """Run an `actorflow` command that prints JSON; the value."""
    return json.loads(ok(*args))


def wait_for_state(url: str, actor: str, state: str) -> None:
    """Poll the server until ``actor`` is in ``state``."""
    give_up = time.monotonic() + 10
    with SyncClient(url) as client:
        while client.status(actor).state != state:
            assert time.monotonic() < give_up, f"{actor} never became {state!r}"
            time.sleep(0.02)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server shared by the CLI tests of this module."""
    with served(tmp_path_factory.mktemp("serve"), "--max-body-bytes", "4096") as running:
        yield running
        assert running.stop() == 0
        assert re.search(r"event=exit code=0\b", running.logged())


# -- the commands -----------------------------------------------------------------------------


def test_send_with_wait_prints_the_result_and_show_prints_the_invocation(server: Server) -> None:
    url = ("--url", server.url)
    sent = ok_json(
        "send", "Greeter/cli", "greet", '{"name": "ann", "times": 2}', "--wait", "5", *url
    )
    assert sent["state"] == "completed"
    assert sent["result"] == "hello ann hello ann"
    assert sent["invocation"].startswith("Greeter/cli#")
    shown = ok_json("show", sent["invocation"], *url)
    assert shown == sent
    assert ok_json("show", sent["invocation"], "--wait", "1", *url) == sent


def test_status_journal_list_and_cancel_of_a_running_trip(server: Server) -> None:
    url = ("--url", server.url)
    sent = ok_json("send", "Booking/cli", "trip", '{"destination": "oslo"}', *url)
    assert sent["state"] in ("queued", "running")
    invocation = sent["invocation"]
    wait_for_state(server.url, "Booking/cli", "waiting-timer")

    status = ok_json("status", "Booking/cli", *url)
    assert status["state"] == "waiting-timer"
    assert status["invocation"] == invocation

    lines = ok("journal", "Booking/cli", *url).splitlines()
    assert len(lines) == 4, lines
    clock = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # ISO 8601, in UTC
    assert re.match(rf"actor\s+1\s+{clock}\s+turn\s+turn 1: trip\(", lines[0]), lines[0]
    assert re.match(rf"actor\s+2\s+{clock}\s+step\s+turn 1 step 1 reserve: ", lines[1]), lines[1]
    assert re.search(r"\+\d+\.\d{3}s$", lines[1]), lines[1]
    assert re.match(
        rf"actor\s+3\s+{clock}\s+timer\s+turn 1 step 2 departure: sleep timer due {clock}", lines[2]
    ), lines[2]
    assert re.match(rf"inbox\s+1\s+{clock}\s+message\s+trip\(", lines[3]), lines[3]
    assert invocation in lines[3]
    as_json = json.loads(ok("journal", "Booking/cli", "--json", *url))
    assert [entry["type"] for entry in as_json] == ["turn", "step", "timer", "message"]

    listed = ok("list", "--type", "Booking", *url).splitlines()
    version = source_version(app_under_test.Booking)
    assert [line.split() for line in listed] == [
        ["Booking/cli", "waiting-timer", version, "-", invocation]
    ]
    by_state = ok("list", "--state", "waiting-timer", *url)
    assert "Booking/cli" in by_state
    assert "Greeter/" not in by_state

    cancelled = ok_json("cancel", invocation, *url)
    assert cancelled["invocation"] == invocation
    ended = ok_json("show", invocation, "--wait", "5", *url)
    assert ended["state"] == "cancelled"
    assert ended["compensated"] == ["reserve"]


def test_deliver_hands_an_event_to_a_waiting_handler(server: Server) -> None:
    url = ("--url", server.url)
    sent = ok_json("send", "Approval/cli", "request", '{"what": "deploy"}', *url)
    delivered = ok("deliver", "Approval/cli", "decision", '{"by": "ops", "approved": true}', *url)
    assert delivered.strip() == "delivered decision to Approval/cli"
    ended = ok_json("show", sent["invocation"], "--wait", "5", *url)
    assert ended["state"] == "completed"
    assert ended["result"] == {"what": "deploy", "by": "ops", "approved": True}


def test_an_unknown_handler_fails_with_a_message_naming_the_handlers(server: Server) -> None:
    done = cli("send", "Greeter/cli", "shout", '{"name": "a"}', "--url", server.url)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "has no handler 'shout'" in done.stderr
    assert "its handlers: greet" in done.stderr
    assert "HTTP 404" in done.stderr
    assert done.stdout == ""


def test_arguments_that_are_not_json_fail_with_an_example(server: Server) -> None:
    done = cli("send", "Greeter/cli", "greet", "{name: a}", "--url", server.url)
    assert done.returncode == 2
    assert "not valid JSON" in done.stderr
    assert '{"topic": "x"}' in done.stderr
    listed = cli("send", "Greeter/cli", "greet", '["a"]', "--url", server.url)
    assert listed.returncode == 2
    assert "JSON object" in listed.stderr


def test_an_actor_named_without_a_key_fails_saying_how_to_name_it(server: Server) -> None:
    done = cli("status", "Greeter", "--url", server.url)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "Type/key" in done.stderr
    assert "cannot reach the server" not in done.stderr  # it was reached; the name was wrong


def test_list_refuses_an_unknown_state_naming_the_valid_ones() -> None:
    shown = CliRunner().invoke(main, ["list", "--help"])
    assert "|".join(ACTOR_STATES) in shown.output
    for state in ("bogus", "waiting"):
        refused = CliRunner().invoke(
            main, ["list", "--state", state, "--url", "http://127.0.0.1:9"]
        )
        assert refused.exit_code == 2, refused.output
        assert f"Invalid value for '--state': '{state}' is not one of" in refused.output
        assert "'waiting-retry', 'retrying'" in refused.output


def test_list_by_state_passes_states_the_runtime_is_adding_to_the_server(server: Server) -> None:
    for state in ("waiting-retry", "retrying"):
        done = cli("list", "--state", state, "--url", server.url)
        assert done.returncode == 0, (state, done.stderr)
        assert all(line.split()[1] == state for line in done.stdout.splitlines()), done.stdout


def test_a_server_that_is_not_there_fails_saying_what_to_check() -> None:
    done = cli("list", "--url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "Is `actorflow serve` running" in done.stderr


def test_bodies_over_the_limit_are_refused_over_real_http(server: Server) -> None:
    url = f"{server.url}/v1/actors/Greeter/big/messages/greet"
    json = {"Content-Type": "application/json"}
    declared = httpx.post(url, content=b" " * 5000, headers=json)
    assert declared.status_code == 413
    assert declared.json()["error"]["type"] == "body_too_large"
    chunked = httpx.post(url, content=iter([b" " * 1024] * 8), headers=json)
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413
    assert chunked.json()["error"]["type"] == "body_too_large"
    with SyncClient(server.url) as client:
        assert "Greeter/big" not in [actor.actor for actor in client.list_actors("Greeter")]


def test_every_command_has_help() -> None:
    runner = CliRunner()
    overview = runner.invoke(main, ["--help"])
    assert overview.exit_code == 0
    commands = ["serve", "send", "show", "status", "journal", "list", "deliver", "cancel", "query"]
    assert set(commands) <= set(main.commands)
    for name in commands:
        assert name in overview.output
        shown = runner.invoke(main, [name, "--help"], prog_name="actorflow")
        assert shown.exit_code == 0, name
        assert shown.output.startswith(f"Usage: actorflow {name}"), name
        description = shown.output.split("\n\n")[1].strip()
        assert len(description) > 10, (name, shown.output)
        if name != "serve":
            assert "--url" in shown.output, name
    serve_help = runner.invoke(main, ["serve", "--help"]).output
    for option in (
        "--journal", "--host", "--port", "--grace", "--log-level", "--token-file",
        "--header-timeout", "--keep-alive", "--max-connections", "--idle-timeout",
    ):  # fmt: skip
        assert option in serve_help
    assert "ACTORFLOW_TOKEN" in serve_help


# -- the server process -----------------------------------------------------------------------


def test_sigterm_stops_a_server_mid_run_with_exit_code_0(tmp_path: pathlib.Path) -> None:
    with served(tmp_path) as server:
        with SyncClient(server.url) as client:
            client.send("Booking/b", "trip", {"destination": "rome"})
        wait_for_state(server.url, "Booking/b", "waiting-timer")
        began = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - began < GRACE
        logged = server.logged()
    assert "event=start" in logged
    assert "event=listening" in logged
    assert "event=draining signal=SIGTERM" in logged
    assert re.search(r"event=stopped-turns running=1 checkpointed=1 ", logged), logged
    assert re.search(r"event=exit code=0\b", logged), logged


def test_serve_refuses_a_public_address_without_a_token(tmp_path: pathlib.Path) -> None:
    journal = tmp_path / "journal.db"
    port = str(free_port())
    command = [
        ACTORFLOW,
        "serve",
        APP,
        "--host",
        "0.0.0.0",
        "--port",
        port,
        "--journal",
        str(journal),
    ]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "refusing to listen on 0.0.0.0" in done.stderr
    assert "--token-file" in done.stderr
    assert "ACTORFLOW_TOKEN" in done.stderr
    assert "--allow-public-without-token" in done.stderr
    assert "event=listening" not in done.stderr
    assert not journal.exists()


def test_a_token_from_the_environment_guards_every_endpoint_but_the_health_checks(
    tmp_path: pathlib.Path,
) -> None:
    token = "tok-" + "x" * 20
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    with served(tmp_path, env=clean_env(ACTORFLOW_TOKEN=token)) as server:
        assert httpx.get(f"{server.url}/livez").status_code == 200
        refused = httpx.get(f"{server.url}/v1/actors")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"]["type"] == "unauthorized"
        # A Kubernetes probe: no token, and the pod's IP address as Host.
        probe = httpx.get(f"{server.url}/readyz", headers={"Host": "10.1.2.3:8787"})
        assert (probe.status_code, probe.json()) == (200, {"status": "ready"})
        wrong = httpx.get(f"{server.url}/readyz", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 200

        with SyncClient(server.url, token=token) as client:
            assert client.call("Greeter/tok", "greet", {"name": "tok"}) == "hello tok"
        with SyncClient(server.url) as anonymous, pytest.raises(ClientError) as failure:
            anonymous.status("Greeter/tok")
        assert (failure.value.status, failure.value.kind) == (401, "unauthorized")

        listed = ok("list", "--url", server.url, "--token-file", str(token_file))
        assert "Greeter/tok" in listed
        by_env = ok("list", "--url", server.url, env=clean_env(ACTORFLOW_TOKEN=token))
        assert "Greeter/tok" in by_env
        without = cli("list", "--url", server.url)
        assert without.returncode == 1
        assert "Authorization: Bearer" in without.stderr
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("app", "says"),
    [
        ("nosuch.module", "cannot import 'nosuch.module'"),
        ("json", "names no actor classes"),
        ("tests/server/nowhere.py", "no such file"),
    ],
)
def test_serve_explains_an_app_it_cannot_load(tmp_path: pathlib.Path, app: str, says: str) -> None:
    journal = tmp_path / "journal.db"
    done = cli("serve", app, "--port", str(free_port()), "--journal", str(journal))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert says in done.stderr
    assert not journal.exists()


def test_serve_explains_a_port_already_in_use(tmp_path: pathlib.Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = cli("serve", APP, "--port", port, "--journal", str(tmp_path / "journal.db"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Choose another --port" in done.stderr


def test_invocations_lists_an_actor_s_runs_and_retry_explains_a_refusal(server: Server) -> None:
    sent = ok_json(
        "send", "Greeter/listed", "greet", '{"name": "ana"}', "--wait", "5", "--url", server.url
    )
    listed = ok("invocations", "Greeter/listed", "--url", server.url)
    assert sent["invocation"] in listed
    assert "completed" in listed
    assert "hello ana" in listed
    as_json = ok_json("invocations", "Greeter/listed", "--json", "--url", server.url)
    assert [i["invocation"] for i in as_json] == [sent["invocation"]]
    refused = cli("retry", sent["invocation"], "--url", server.url)
    assert refused.returncode == 1
    assert "only failed invocations can be retried" in refused.stderr
    assert "HTTP 409, not_retryable" in refused.stderr


# -- listings a page at a time ----------------------------------------------------------------

#: Actors for the paging test: more than one page of the CLI's (1000).
MANY = 1010


def test_list_journal_and_invocations_page_through_the_server(tmp_path: pathlib.Path) -> None:
    with served(tmp_path, "--idle-timeout", "0.5") as server:
        url = ("--url", server.url)
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for n in range(MANY):  # accepted at once; their turns run meanwhile
                path = f"/v1/actors/Greeter/p{n:04d}/messages/greet"
                assert http.post(path, json={"name": "p"}).status_code == 202
            sent = [
                http.post("/v1/actors/Greeter/many/messages/greet", json={"name": f"m{n}"})
                for n in range(5)
            ]
        invocations = [answer.json()["invocation"] for answer in sent]
        for invocation in invocations:
            ok_json("show", invocation, "--wait", "10", *url)

        listed = ok("list", "--type", "Greeter", *url).splitlines()
        assert [line.split()[0] for line in listed] == sorted(
            [f"Greeter/p{n:04d}" for n in range(MANY)] + ["Greeter/many"]
        )
        assert len(ok("list", "--limit", "3", *url).splitlines()) == 3

        with SyncClient(server.url) as client:
            pages = list(client.invocation_pages("Greeter/many", limit=2))
            journal = list(client.journal_pages("Greeter/many", limit=7))
            actors = list(client.actor_pages("Greeter", limit=400))
        assert [len(page.items) for page in pages] == [2, 2, 1]
        assert [s.invocation for page in pages for s in page.items] == invocations[::-1]
        assert [len(page.items) for page in journal] == [7, 7, 6]  # 15 actor, 5 inbox
        assert [len(page.items) for page in actors] == [400, 400, MANY + 1 - 800]

        shown = ok("invocations", "Greeter/many", "--limit", "2", *url).splitlines()
        assert [line.split()[0] for line in shown] == invocations[:2:-1][:2]
        as_json = ok_json("invocations", "Greeter/many", "--json", "--limit", "2", *url)
        assert [i["invocation"] for i in as_json] == invocations[:2:-1][:2]
        lines = ok("journal", "Greeter/many", "--limit", "4", *url).splitlines()
        assert [line.split()[:2] for line in lines] == [["actor", str(n)] for n in range(1, 5)]
        entries = ok_json("journal", "Greeter/many", "--json", *url)
        assert len(entries) == 20


@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_build_id_is_recorded_by_every_turn_and_shown(tmp_path: pathlib.Path, how: str) -> None:
    build = "2026.11.30-abc1234"
    options = ("--build-id", build) if how == "option" else ()
    env = clean_env() if how == "option" else clean_env(ACTORFLOW_BUILD_ID=build)
    with served(tmp_path, *options, env=env) as server, httpx.Client(base_url=server.url) as http:
        sent = http.post("/v1/actors/Greeter/v/messages/greet?wait=5", json={"name": "v"})
        assert sent.status_code == 200, sent.text
        assert http.get("/v1/actors/Greeter/v").json()["version"] == build
        (turn,) = [
            e for e in http.get("/v1/actors/Greeter/v/journal").json() if e["type"] == "turn"
        ]
        assert turn["data"]["version"] == build
        metrics = http.get("/metrics").text
        assert f'actorflow_code_version_info{{type="Greeter",version="{build}"}} 1' in metrics
        assert server.stop() == 0
