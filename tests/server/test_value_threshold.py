"""`actorflow serve --value-threshold BYTES`: payloads encoded in more bytes are stored once
as journal values (default `DEFAULT_VALUE_THRESHOLD`); ``0`` or ``off`` turns that off."""

from __future__ import annotations

import pathlib
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner

import actorflow.cli
from actorflow.runtime._big_values import DEFAULT_VALUE_THRESHOLD
from actorflow.server import ServeConfig
from journal import SqliteStore
from tests.server.processes import served


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ([], DEFAULT_VALUE_THRESHOLD),
        (["--value-threshold", "4096"], 4096),
        (["--value-threshold", "0"], 0),
        (["--value-threshold", "off"], 0),
    ],
)
def test_serve_takes_the_threshold_from_its_flag(
    monkeypatch: pytest.MonkeyPatch, arguments: list[str], expected: int
) -> None:
    seen: list[ServeConfig] = []

    def run(config: ServeConfig) -> Any:
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(actorflow.cli, "_run", run)
    result = CliRunner().invoke(actorflow.cli.main, ["serve", "examples.agents", *arguments])
    assert result.exit_code == 0, result.output
    assert [config.value_threshold for config in seen] == [expected]


@pytest.mark.parametrize("flag", ["-1", "lots"])
def test_a_threshold_that_is_not_a_byte_count_is_refused(flag: str) -> None:
    result = CliRunner().invoke(
        actorflow.cli.main, ["serve", "examples.agents", "--value-threshold", flag]
    )
    assert result.exit_code == 2
    assert "--value-threshold" in result.output


@pytest.mark.parametrize(("arguments", "values"), [([], 2), (["--value-threshold", "off"], 0)])
def test_a_served_journal_stores_large_arguments_as_values_unless_off(
    tmp_path: pathlib.Path, arguments: list[str], values: int
) -> None:
    name = "n" * 20_000
    with served(tmp_path, *arguments) as server:
        answer = httpx.post(
            f"{server.url}/v1/actors/Greeter/k/messages/greet?wait=10",
            json={"name": name},
            timeout=20,
        )
        assert answer.status_code == 200, answer.text
        assert name in answer.json()["result"]

    async def count() -> int:
        store = await SqliteStore.open(tmp_path / "journal.db")
        try:
            report = await store.verify()
            assert report.ok, report.problems
            return report.values
        finally:
            await store.close()

    # On: the arguments, and the greeting (the step's result, the turn's and the reply's).
    assert anyio.run(count) == values
