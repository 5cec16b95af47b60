"""`actorflow serve` of an app that cannot be loaded: real processes on small app files
written by each test. It exits 1 before listening, with one clear error: a misdefined
actor's problems (no traceback), or the traceback of the app's own code that failed (no
frames of actorflow, click or the import machinery)."""

from __future__ import annotations

import pathlib
import re
import textwrap

import pytest

from tests.server.processes import cli, free_port

MISDEFINED = """
    import actorflow


    class Bad(actorflow.Actor, shutdown="later"):
        @actorflow.handler
        def sync(self, x: int) -> int:
            return x
"""
RAISES = """
    import settings

    ACTORS = settings.actors()
"""
SETTINGS = """
    def actors():
        raise RuntimeError("no API key in the environment")
"""
SYNTAX = """
    import actorflow

    def plan(:
        pass
"""
MISSING = """
    import actorflow
    import a_dependency_that_is_not_installed
"""
TWINS = """
    import actorflow


    class Greeter(actorflow.Actor):
        @actorflow.handler
        async def greet(self) -> str:
            return "hi"


    class Welcomer(actorflow.Actor, name="Greeter"):
        @actorflow.handler
        async def greet(self) -> str:
            return "welcome"
"""


def write(folder: pathlib.Path, **files: str) -> None:
    """Write ``name.py`` for each ``name=source`` into ``folder``."""
    for name, source in files.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source).lstrip())


def serve_app(folder: pathlib.Path, app: str) -> tuple[int, str]:
    """Run `actorflow serve APP` from ``folder``; its exit code and stderr, which must show
    that it stopped before opening its journal or listening."""
    journal = folder / "journal.db"
    done = cli("serve", app, "--port", str(free_port()), "--journal", str(journal), cwd=folder)
    assert "event=listening" not in done.stderr
    assert not journal.exists()
    return done.returncode, done.stderr


def frames(stderr: str) -> list[str]:
    """The files of the traceback frames shown."""
    return re.findall(r'^  File "([^"]+)"', stderr, flags=re.M)


@pytest.mark.parametrize("app", ["app.py", "app"], ids=["file", "module"])
def test_a_misdefined_actor_is_reported_with_its_problems_and_no_traceback(
    tmp_path: pathlib.Path, app: str
) -> None:
    write(tmp_path, app=MISDEFINED)
    code, stderr = serve_app(tmp_path, app)
    assert code == 1
    assert "Traceback" not in stderr
    assert frames(stderr) == []
    assert stderr.strip() == (
        f"Error: cannot load the app {app}: actor class Bad is misdefined:\n"
        f"  - shutdown='later'; use 'drain', 'checkpoint' or 'compensate'\n"
        f"  - handler Bad.sync must be declared `async def`"
    )


@pytest.mark.parametrize("app", ["app.py", "app"], ids=["file", "module"])
def test_an_exception_at_import_shows_the_apps_frames_only(
    tmp_path: pathlib.Path, app: str
) -> None:
    write(tmp_path, app=RAISES, settings=SETTINGS)
    code, stderr = serve_app(tmp_path, app)
    assert code == 1
    assert stderr.startswith(
        f"Error: cannot load the app {app}: importing it raised RuntimeError. Fix the code "
        f"below and start the server again.\nTraceback (most recent call last):\n"
    ), stderr
    assert frames(stderr) == [str(tmp_path / "app.py"), str(tmp_path / "settings.py")], stderr
    assert "ACTORS = settings.actors()" in stderr
    assert 'raise RuntimeError("no API key in the environment")' in stderr
    assert stderr.rstrip().endswith("RuntimeError: no API key in the environment")


def test_a_syntax_error_shows_the_line(tmp_path: pathlib.Path) -> None:
    write(tmp_path, app=SYNTAX)
    code, stderr = serve_app(tmp_path, "app.py")
    assert code == 1
    assert "importing it raised SyntaxError" in stderr
    assert f'  File "{tmp_path / "app.py"}", line 3\n    def plan(:\n' in stderr
    assert frames(stderr) == [str(tmp_path / "app.py")], stderr
    assert stderr.rstrip().endswith("SyntaxError: invalid syntax")


def test_a_missing_dependency_is_told_apart_from_a_missing_app(tmp_path: pathlib.Path) -> None:
    write(tmp_path, app=MISSING)
    code, stderr = serve_app(tmp_path, "app")
    assert code == 1
    assert "cannot import 'app'" not in stderr  # the app was found; what it imports was not
    assert "importing it raised ModuleNotFoundError" in stderr
    assert frames(stderr) == [str(tmp_path / "app.py")], stderr
    assert "import a_dependency_that_is_not_installed" in stderr
    code, stderr = serve_app(tmp_path, "no_such_app")
    assert code == 1
    assert "Traceback" not in stderr
    assert "cannot import 'no_such_app': No module named 'no_such_app'; run actorflow" in stderr


def test_two_actor_classes_with_one_name_are_refused_before_listening(
    tmp_path: pathlib.Path,
) -> None:
    write(tmp_path, app=TWINS)
    code, stderr = serve_app(tmp_path, "app.py")
    assert code == 1
    assert "Traceback" not in stderr
    assert (
        "Error: cannot load the app app.py: two actor classes are both named 'Greeter' "
        "(app.Greeter and app.Welcomer); rename one"
    ) in stderr
