"""A child process that the crash tests read line by line and SIGKILL at a moment they choose.

Its stdout is moved onto a queue by a thread, so the test can wait for a line with a
timeout, kill the child at any moment, and still read every line it printed before it died
(a line cut short by the kill arrives without its newline). Subclasses say what a line
means in `take`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

#: Seconds to reap a killed child and finish reading its output.
REAP_TIMEOUT = 10.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def _pump_lines(stream: Iterator[bytes], lines: queue.Queue[bytes | None]) -> None:
    """Move every line the child prints onto ``lines``; None marks the end of its output."""
    try:
        for line in stream:
            lines.put(line)
    finally:
        lines.put(None)


class LineChild:
    """``python -m module *args`` from the repository root, its stdout read on a thread."""

    def __init__(self, module: str, args: list[str], stderr_path: Path) -> None:
        self._stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        assert self.proc.stdout is not None
        self._reader = threading.Thread(
            target=_pump_lines, args=(self.proc.stdout, self.lines), daemon=True
        )
        self._reader.start()
        self.ended = False  # the child's output is over (it died or exited)

    def take(self, line: bytes) -> None:
        """Act on one line of the child's output."""
        raise NotImplementedError

    def next_line(self, timeout: float) -> bytes | None:
        """The next line (taken), or None once the output has ended; `queue.Empty` on timeout."""
        line = self.lines.get(timeout=timeout)
        if line is None:
            self.ended = True
        else:
            self.take(line)
        return line

    def kill(self) -> tuple[bool, int]:
        """SIGKILL the child if it still runs, reap it, and take every line it printed.

        Returns whether this call killed it, and its exit status.
        """
        killed = self.proc.poll() is None
        if killed:
            os.kill(self.proc.pid, signal.SIGKILL)
        status = self.proc.wait(REAP_TIMEOUT)
        self._reader.join(REAP_TIMEOUT)
        assert not self._reader.is_alive(), "the child's stdout stayed open after its death"
        while not self.ended:
            self.next_line(timeout=0)
        return killed, status

    def stderr(self) -> str:
        """The tail of what the child wrote to stderr (its traceback, if it failed)."""
        self._stderr.flush()
        return self._stderr_path.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        """Make sure the child is dead and reaped and every pipe and file is closed."""
        with contextlib.suppress(ProcessLookupError):
            if self.proc.poll() is None:
                self.proc.kill()
        self.proc.wait(REAP_TIMEOUT)
        self._reader.join(REAP_TIMEOUT)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()
