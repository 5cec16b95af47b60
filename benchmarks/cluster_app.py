"""What ``python -m benchmarks cluster`` serves on every worker: one agent type, `Walker`.

- `Walker.walk` takes ``steps`` trivial durable steps one after another (``ctx.run`` of an
  ``async def`` returning a small int) and returns their sum: the throughput scenario,
  where the figure is the journal's cost per step across workers.
- `Walker.stroll` takes ``steps`` steps that each pause ``pause`` seconds (an agent waiting
  on a model or a tool) and log which process ran them: the hand-off and take-over
  scenarios, where agents must be mid-turn, on a step boundary now and then, when their
  worker is stopped. With ``ACTORFLOW_BENCH_STEP_LOG=DIR`` in its environment each worker
  appends one line per step it runs to ``DIR/steps-<pid>.log``: ``<key> <index> <pid>
  <unix time>``, written with one unbuffered ``write`` so that a line survives SIGKILL the
  moment it is written. Without it, nothing is logged.

`Walker` checkpoints at SIGTERM (``shutdown="checkpoint"``, the default, said explicitly):
its turn stops at its next step boundary and another worker continues it.
"""

from __future__ import annotations

import asyncio
import os
import time

import actorflow

#: The environment variable naming the directory of the step logs.
STEP_LOG = "ACTORFLOW_BENCH_STEP_LOG"

_log_fd: int | None = None


def expected_total(steps: int) -> int:
    """What `Walker.walk` and `Walker.stroll` return after ``steps`` steps."""
    return sum(i % 10 for i in range(steps))


async def stride(i: int) -> int:
    """The trivial step: a small int derived from its index."""
    return i % 10


def log_step(key: str, i: int) -> None:
    """Append ``key i pid time`` to this process's step log, if there is one."""
    global _log_fd
    folder = os.environ.get(STEP_LOG)
    if not folder:
        return
    if _log_fd is None:
        path = os.path.join(folder, f"steps-{os.getpid()}.log")
        _log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_log_fd, f"{key} {i} {os.getpid()} {time.time():.6f}\n".encode())


async def paced_stride(key: str, i: int, pause: float) -> int:
    """A step that is logged as it starts, then waits ``pause`` seconds."""
    log_step(key, i)
    await asyncio.sleep(pause)
    return i % 10


class Walker(actorflow.Actor, shutdown="checkpoint"):
    """The benchmarked agent."""

    @actorflow.handler
    async def walk(self, steps: int) -> int:
        """Take ``steps`` trivial durable steps; return the sum of their results."""
        total = 0
        for i in range(steps):
            total += await self.ctx.run(stride, i, name="stride")
        return total

    @actorflow.handler
    async def stroll(self, steps: int, pause: float) -> int:
        """Take ``steps`` durable steps of ``pause`` seconds each, logging who ran them."""
        total = 0
        for i in range(steps):
            total += await self.ctx.run(paced_stride, self.ctx.key, i, pause, name="stride")
        return total


ACTORS = [Walker]
