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
        "CopyError",
        "CopyReport",
        "CorruptValueError",
        "CorruptionError",
        "DEFAULT_MAX_RECORD_BYTES",
        "DecodeError",
        "Durability",
        "EncryptedStore",
        "EncryptionError",
        "FencingError",
        "InvalidStreamError",
        "JournalError",
        "KeyMissingError",
        "Keyring",
        "LeaseInfo",
        "Leases",
        "Listener",
        "Member",
        "MemoryStore",
        "MissingValueError",
        "NewRecord",
        "NotSealedError",
        "Notice",
        "PostgresStore",
        "Problem",
        "Record",
        "RecordTooLargeError",
        "Salvaged",
        "SalvagedSnapshot",
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
        "StoreNotEmptyError",
        "StoreReadOnlyError",
        "StreamAppend",
        "StreamInfo",
        "TamperedError",
        "VerifyReport",
        "WrongKeyError",
        "copy_journal",
        "load_keyring",
        "value_digest",
    ]
    for name in set(journal.__all__) - {"DEFAULT_MAX_RECORD_BYTES", "Durability"}:
        assert getattr(journal, name).__module__.startswith("journal."), name
        assert getattr(journal, name).__doc__, f"journal.{name} has no docstring"


def test_every_journal_error_derives_from_journal_error() -> None:
    errors = [getattr(journal, n) for n in journal.__all__ if n.endswith("Error")]
    assert all(issubclass(e, journal.JournalError) for e in errors)


#: The deterministic core: replay must see the same values, so no entropy or clocks here.
DETERMINISTIC = [
    "_actor.py",
    "_context.py",
    "_events.py",
    "replay/_recorded.py",
    "replay/_turn.py",
    "replay/_branches.py",
    "replay/_protocol.py",
]
ENTROPY = {
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("uuid", "uuid1"),
    ("uuid", "uuid4"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("os", "urandom"),
}


def test_deterministic_modules_take_no_entropy_or_time_except_through_ctx() -> None:
    offenders = []
    for name in DETERMINISTIC:
        path = ROOT / "actorflow" / name
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module in {"random", "secrets"}:
                    offenders.append(f"{name}: imports {node.module}")
                offenders += [f"{name}: imports {m}" for m in modules if m in {"random", "secrets"}]
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and (node.value.id, node.attr) in ENTROPY
            ):
                offenders.append(f"{name}: uses {node.value.id}.{node.attr}")
    assert not offenders, offenders


def test_replay_core_does_no_io() -> None:
    imports = {module for _, module in imported_modules("actorflow") if module}
    replay = {m for f, m in imported_modules("actorflow") if f.endswith("_replay.py")}
    assert replay <= {"__future__", "dataclasses", "actorflow"}, replay
    assert not imports & {"pickle", "marshal"}


def dotted_imports(path: pathlib.Path) -> set[str]:
    """The full names of the modules a file imports (``from a.b import c`` gives a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


_ENGINE = (
    "actorflow.replay",
    "actorflow.runtime",
    "actorflow.versioning",
    "actorflow.server",
    "actorflow.cli",
    "actorflow.testing",
)

#: Which parts of actorflow each layer may not import (dependencies point down only):
#: the core (entry types, Actor, ctx) knows no engine; the replay core no runtime; the
#: runtime no server, client or CLI; the client nothing of the engine. `versioning` (the
#: dry-run replay check) sits beside the runtime, on top of it: the runtime and the replay
#: core know nothing of it. `testing` (for users' test suites) is at the top, with the CLI.
#: `cluster` (worker settings and placement rules, pure) lies under the runtime.
#: `integrations` (pydantic-ai, ...) use the public `actorflow` API only.
FORBIDDEN = {
    "_actor.py": _ENGINE,
    "_context.py": _ENGINE,
    "_events.py": _ENGINE,
    "_values.py": _ENGINE,
    "_errors.py": _ENGINE,
    "cluster": _ENGINE,
    "replay": (
        "actorflow.runtime",
        "actorflow.versioning",
        "actorflow.server",
        "actorflow._client",
        "actorflow.cli",
        "actorflow.testing",
    ),
    "runtime": (
        "actorflow.versioning",
        "actorflow.server",
        "actorflow._client",
        "actorflow.cli",
        "actorflow.testing",
    ),
    "versioning": ("actorflow.server", "actorflow._client", "actorflow.cli", "actorflow.testing"),
    "testing.py": ("actorflow.cli", "actorflow._client"),
    "_client.py": (
        "actorflow.replay",
        "actorflow.runtime._host",
        "actorflow.runtime._runtime",
        "actorflow.server",
    ),
    # Integrations with other libraries build on the public API, like users' code.
    "integrations": ("actorflow._", *_ENGINE, "actorflow.cluster", "actorflow.versioning"),
    "server": (
        "actorflow.replay",
        "actorflow.runtime._host",
        "actorflow.versioning",
        "actorflow._client",
        "actorflow.testing",
    ),
}


def test_layers_import_only_what_lies_below_them() -> None:
    offenders = []
    for part, banned in FORBIDDEN.items():
        target = ROOT / "actorflow" / part
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        assert files, f"actorflow/{part} is gone: update FORBIDDEN"
        for path in files:
            for module in dotted_imports(path):
                if module.startswith(banned):
                    offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offenders, offenders


def test_every_module_stays_under_800_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)}: {len(path.read_text().splitlines())} lines"
        for package in ("actorflow", "journal")
        for path in (ROOT / package).rglob("*.py")
        if len(path.read_text().splitlines()) > 800
    ]
    assert not long, f"split these modules: {long}"
