"""Large values on a shared PostgreSQL journal: two workers store one document once, and
a worker started after both stopped reads it back whole (the state and the results)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from actorflow import ClusterOptions, Runtime
from actorflow.cluster import NOTIFY_PREFIXES
from journal import PostgresStore
from tests.runtime.test_big_values import DOC, Reader, raw, read_doc

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def worker(dsn: str, name: str) -> AsyncIterator[Runtime]:
    store = await PostgresStore.open(dsn, notify_prefixes=NOTIFY_PREFIXES)
    try:
        async with Runtime(store, [Reader], cluster=ClusterOptions(worker_id=name)) as runtime:
            yield runtime
    finally:
        await store.close()


async def test_two_workers_store_a_document_once_and_a_later_worker_reads_it_whole(
    postgres_dsn: str,
) -> None:
    async with worker(postgres_dsn, "w1") as one, worker(postgres_dsn, "w2") as two:
        assert await one.ref(Reader, "a").call(Reader.read, "doc") == len(DOC)
        assert await two.ref(Reader, "b").call(Reader.read, "doc") == len(DOC)
        assert await two.ref(Reader, "a").call(Reader.read, "other") == len(read_doc("other"))
        [step, *_] = [r for r in await raw(one.store, "actor/Reader/a") if r.type == "step"]
        assert step.refs  # the record refers to the document
        assert len(step.data) < 500  # and does not hold it
    store = await PostgresStore.open(postgres_dsn)
    try:
        report = await store.verify()
        assert report.ok, report.problems
        assert report.values == 2  # the document once for both actors, and "other"
    finally:
        await store.close()
    async with worker(postgres_dsn, "w3") as three:
        assert await three.ref(Reader, "a").query(Reader.texts) == [DOC, read_doc("other")]
        assert await three.ref(Reader, "b").query(Reader.texts) == [DOC]
