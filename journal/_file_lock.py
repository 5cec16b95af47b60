"""The single-writer lock of a journal file."""

from __future__ import annotations

import os

from journal._errors import StoreConfigurationError, StoreLockedError


class FileLock:
    """An exclusive advisory lock on a side file: one writing process per journal.

    SQLite's own locks are per transaction; the writer also caches stream positions between
    transactions, which is only right while no other process writes the file. The lock file
    sits beside the journal's real path (symlinks, ``.`` and ``..`` resolved, made
    absolute), so every way of naming one file takes the same lock.

    A hard link is another name for the file that no path can reveal, and SQLite keeps its
    write-ahead log beside the name it was given: two writers under two names would each
    have their own log, see nothing of the other's commits, and corrupt the file when they
    checkpoint. No check inside a transaction can make that safe, so a file with more than
    one name is refused.
    """

    def __init__(self, journal: str) -> None:
        self._journal = journal
        self._path = os.path.realpath(journal) + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no advisory locks on this platform
            return
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            real = self._path.removesuffix(".lock")
            named = self._journal if real == self._journal else f"{self._journal} (file {real})"
            raise StoreLockedError(
                f"{named} is open for writing elsewhere (in another process, or another "
                f"store in this one); one writer at a time may open a journal file. Close "
                f"the other store or stop the other process first."
            ) from None
        self._fd = fd
        self._refuse_hard_links()

    def _refuse_hard_links(self) -> None:
        try:
            links = os.stat(self._journal).st_nlink
        except FileNotFoundError:  # a new journal
            return
        if links > 1:
            self.release()
            raise StoreConfigurationError(
                f"{self._journal} has {links} names (hard links). A second writer could open "
                f"it under another name, which no lock can see, and SQLite would give each "
                f"name its own write-ahead log and corrupt the file. Remove the other names "
                f"(find them with: find / -samefile {self._journal}) or use a copy of the "
                f"file, then open it again."
            )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
