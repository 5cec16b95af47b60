"""The single-writer lock of a journal file: a lock on the database file itself.

Why the database file, and why this kind of lock:

- A lock on a side file (``journal.db.lock``) is defeated by deleting that file: the next
  opener makes a new one and locks it, and two writers share the journal. A lock on the
  journal file's own inode cannot be taken away without taking the journal away.
- SQLite's unix VFS locks the database file with POSIX record locks (``fcntl``), which
  belong to the process, and the kernel drops *all* of a process's record locks on a file
  when the process closes *any* descriptor of it (SQLite's "How To Corrupt An SQLite
  Database File", section 2.2). So our lock must not be a classic record lock (SQLite
  unlocks the whole file, ``l_start = l_len = 0``, when it drops to no lock, and closes
  its descriptors when a connection closes), and our own code must never close a
  descriptor of a journal file whose SQLite locks this process holds.
- Linux's open file description locks (``F_OFD_SETLK``, Linux 3.15) belong to the open
  file, not to the process: closing other descriptors does not drop them, and they conflict
  with every other open of the file, in other processes and in this one. We take one on a
  single byte that SQLite never locks (in its lock-byte page, past the 512 bytes its own
  locks use), so it never meets SQLite's locks. ``flock`` would also survive the closes on
  Linux, but on the BSDs and macOS it interacts with ``fcntl`` locks, and over NFS Linux
  emulates it with whole-file record locks that would fight SQLite's.
- Stores of this process are told apart by a registry keyed by the file's device and
  inode, checked before any descriptor is opened: a second store on an open journal is
  refused without opening (and so without closing) anything. A descriptor opened by a race
  with another store of this process is parked with that store and closed when it closes.
- Older versions of actorflow locked only the side file; it is still taken, so that a
  deploy from such a version waits for the old process as before. Deleting it defeats
  nothing where open file description locks exist; elsewhere (macOS, BSD) it is the only
  lock, as before, and the writer's per-commit check against the file is the second line.

A hard link is another name for the file that no path can reveal, and SQLite keeps its
write-ahead log beside the name it was given: two processes (one after the other, say,
one of them killed) under two names would each have their own log and corrupt the file.
So a file with more than one name is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading

from journal._errors import StorageError, StoreConfigurationError, StoreLockedError

#: SQLite's ``PENDING_BYTE``: its own locks use this byte and the 511 after it.
_SQLITE_LOCK_BYTES = 0x4000_0000
#: The byte of the journal file the writer locks: in SQLite's lock-byte page (which holds
#: no data), past every byte SQLite locks itself.
WRITER_BYTE = _SQLITE_LOCK_BYTES + 1024


#: The journal files this process holds, by (device, inode).
_held: dict[tuple[int, int], FileLock] = {}
_registry = threading.Lock()


class _Flock(ctypes.Structure):
    """``struct flock``, as ``fcntl(2)`` takes it (field types per the platform's ABI)."""

    _fields_ = (
        ("l_type", ctypes.c_short),
        ("l_whence", ctypes.c_short),
        ("l_start", ctypes.c_int64),
        ("l_len", ctypes.c_int64),
        ("l_pid", ctypes.c_int),
    )


def _writer_byte(kind: int) -> bytes:
    return bytes(_Flock(kind, os.SEEK_SET, WRITER_BYTE, 1, 0))


class FileLock:
    """An exclusive lock on a journal file: one writing store at a time, in any process.

    `acquire` refuses with `StoreLockedError` while another store (in another process, or
    in this one) holds the file, and with `StoreConfigurationError` when the file has more
    than one name. `release` must come after every SQLite connection of the store is
    closed (see the module docstring).
    """

    def __init__(self, journal: str) -> None:
        self._journal = journal
        self._real = os.path.realpath(journal)
        self._fd: int | None = None
        self._side_fd: int | None = None
        self._key: tuple[int, int] | None = None
        #: Descriptors of this file opened by other would-be writers in this process,
        #: closed only when this lock is released (closing one earlier would drop the
        #: SQLite locks this store's connections hold).
        self._parked: list[int] = []

    def acquire(self) -> None:
        """Take the lock, or raise `StoreLockedError` / `StoreConfigurationError`."""
        with _registry:
            found = self._stat()
            self._refuse_hard_links(found)
            if found is not None and (found.st_dev, found.st_ino) in _held:
                raise self._locked()
            fd = self._open()
            info = os.fstat(fd)
            key = (info.st_dev, info.st_ino)
            holder = _held.get(key)
            if holder is not None:  # the path changed hands since the look above
                holder._parked.append(fd)
                raise self._locked()
            if not _lock_writer_byte(fd):
                os.close(fd)  # no store of this process has the file: nothing to drop
                raise self._locked()
            self._fd, self._key = fd, key
            _held[key] = self
        try:
            self._lock_side_file()
            self._refuse_hard_links(os.fstat(fd))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Let the file go (after the store's SQLite connections are closed)."""
        with _registry:
            if self._side_fd is not None:
                os.close(self._side_fd)
                self._side_fd = None
            for fd in [*self._parked, *([] if self._fd is None else [self._fd])]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._parked.clear()
            self._fd = None
            if self._key is not None and _held.get(self._key) is self:
                del _held[self._key]
            self._key = None

    def _stat(self) -> os.stat_result | None:
        try:
            return os.stat(self._journal)
        except FileNotFoundError:  # a new journal
            return None

    def _open(self) -> int:
        try:
            return os.open(self._journal, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(
                f"{self._journal}: cannot open the journal file for writing "
                f"({exc.strerror}); check that its folder exists and that this process may "
                f"write the file and the folder"
            ) from None

    def _lock_side_file(self) -> None:
        """The lock older versions of actorflow take: a side file's ``flock``."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks
            return
        fd = os.open(self._real + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise self._locked() from None
        self._side_fd = fd

    def _locked(self) -> StoreLockedError:
        named = self._journal
        if self._real != self._journal:
            named = f"{self._journal} (file {self._real})"
        return StoreLockedError(
            f"{named} is open for writing elsewhere (in another process, or another "
            f"store in this one); one writer at a time may open a journal file. Close "
            f"the other store or stop the other process first."
        )

    def _refuse_hard_links(self, found: os.stat_result | None) -> None:
        if found is None or found.st_nlink <= 1:
            return
        links = found.st_nlink
        raise StoreConfigurationError(
            f"{self._journal} has {links} names (hard links). A second writer could open "
            f"it under another name, which no lock can see, and SQLite would give each "
            f"name its own write-ahead log and corrupt the file. Remove the other names "
            f"(find them with: find / -samefile {self._journal}) or use a copy of the "
            f"file, then open it again."
        )


def _lock_writer_byte(fd: int) -> bool:
    """Lock the writer byte of the file open as ``fd``; False if another open holds it.

    Where the platform has no open file description locks, nothing is locked here (the
    side file is the lock there) and True is returned.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks
        return True
    ofd_setlk: int | None = getattr(fcntl, "F_OFD_SETLK", None)
    if ofd_setlk is None:  # pragma: no cover - not Linux
        return True
    try:
        fcntl.fcntl(fd, ofd_setlk, _writer_byte(fcntl.F_WRLCK))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise StorageError(f"cannot lock the journal file: {exc}") from None
    return True
