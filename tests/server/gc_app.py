"""What tests/server/test_gc_tuning.py serves: an actor that reports the process's
garbage-collector settings as `actorflow serve` left them."""

from __future__ import annotations

import gc

import actorflow


class Collector(actorflow.Actor):
    @actorflow.handler
    async def settings(self) -> list[int]:
        """The youngest generation's threshold, and how many objects are frozen."""
        return [gc.get_threshold()[0], gc.get_freeze_count()]
