"""Developer sessions: `nox -s tests`, `lint`, `typecheck`, `bench`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]


def install(session: nox.Session, *extras: str) -> None:
    """Install the project (editable) with the given extras into the session."""
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", spec)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the whole test suite (pass pytest arguments after `--`)."""
    install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over everything."""
    install(session, "dev")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over actorflow/ and journal/."""
    install(session, "dev")
    session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmark suite; e.g. `nox -s bench -- journal --quick --json out.json`."""
    install(session)
    session.run("python", "-m", "benchmarks", *(session.posargs or ["journal"]))
