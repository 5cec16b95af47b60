"""The layering the design fixes, checked by walking imports, and the pinned public surface."""

from __future__ import annotations

import ast
import pathlib

import journal

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> set[tuple[str, str]]:
    """(file, imported top-level module) for every import in ``package``."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            found.update((str(path.relative_to(ROOT)), name.split(".")[0]) for name in names)
    return found


def test_journal_knows_nothing_of_actors() -> None:
    offenders = {f for f, module in imported_modules("journal") if module == "actorflow"}
    assert not offenders, f"journal/ must not import actorflow: {sorted(offenders)}"


def test_journal_never_unpickles() -> None:
    offenders = {f for f, module in imported_modules("journal") if module in {"pickle", "marshal"}}
    assert not offenders


def test_journal_public_surface_is_pinned() -> None:
    assert sorted(journal.__all__) == [
        "Appended",
        "Codec",
        "CommitStats",
        "ConflictError",
        "CorruptionError",
        "DEFAULT_MAX_RECORD_BYTES",
        "DecodeError",
        "Durability",
        "FencingError",
        "InvalidStreamError",
        "JournalError",
        "MemoryStore",
        "NewRecord",
        "Problem",
        "Record",
        "RecordTooLargeError",
        "SchemaVersionError",
        "Snapshot",
        "SnapshotError",
        "SqliteStore",
        "StorageError",
        "StorageFullError",
        "Store",
        "StoreClosedError",
        "StoreConfigurationError",
        "StoreLockedError",
        "StreamAppend",
        "StreamInfo",
        "VerifyReport",
    ]
    for name in set(journal.__all__) - {"DEFAULT_MAX_RECORD_BYTES", "Durability"}:
        assert getattr(journal, name).__module__.startswith("journal."), name
        assert getattr(journal, name).__doc__, f"journal.{name} has no docstring"


def test_every_journal_error_derives_from_journal_error() -> None:
    errors = [getattr(journal, n) for n in journal.__all__ if n.endswith("Error")]
    assert all(issubclass(e, journal.JournalError) for e in errors)
