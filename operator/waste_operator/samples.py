"""Counts new samples for TrainingSchedules: the Inference API's table, read-only, with asyncpg.

The rule and its SQL live in trainer/feedback.py, shared with the trainer's incremental selection. One
connection, kept open and re-opened after a failure, on an event loop of its own (the operator's handlers
are threads). Every read is one read-only repeatable-read transaction: the cutoff and the count come from
the same snapshot, and the session itself is read-only (default_transaction_read_only), so a mistake here
can never write to the Inference API's database.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from datetime import datetime

from trainer.feedback import LATEST_SQL, REGISTRY_PRESENT_SQL, VERSIONS_SQL, deployed_cutoff, new_samples_sql

from .schedule import SampleCount

log = logging.getLogger("waste_operator")
_URL_SECRET = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]+):[^\s@]+@", re.IGNORECASE)
NOT_CONFIGURED = (
    "DATABASE_URL is not set: mount the database Secret into the operator's Deployment "
    "(manifests/operator-deployment.yaml) to count new samples"
)


def _masked(error: BaseException) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return _URL_SECRET.sub(r"\1:***@", text)[:400]


class SampleCounter:
    def __init__(self, database_url: str | None, timeout: float = 10.0):
        self._url = database_url
        self._timeout = timeout
        self._conn = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sample-counter", daemon=True)
        self._thread.start()

    def count(self, min_detections: int, limit: int) -> SampleCount:
        """New samples with at least `min_detections` detections, counted up to `limit`; never raises."""
        if not self._url:
            return SampleCount(limit=limit, problem="DatabaseNotConfigured", detail=NOT_CONFIGURED)
        with self._lock:
            future = asyncio.run_coroutine_threadsafe(self._count(min_detections, limit), self._loop)
            try:
                new, cutoff = future.result(self._timeout * 3)
            except Exception as error:  # noqa: BLE001 - every failure is a status, never a crash
                future.cancel()
                asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(self._timeout)
                problem = "DatabaseError" if _is_sql_error(error) else "DatabaseUnavailable"
                detail = f"cannot count new samples: {_masked(error)}"
                log.warning("%s: %s", problem, detail)
                return SampleCount(limit=limit, problem=problem, detail=detail)
        return SampleCount(new=new, cutoff=cutoff, limit=limit)

    async def _count(self, min_detections: int, limit: int) -> tuple[int, datetime | None]:
        import asyncpg

        if self._conn is None or self._conn.is_closed():
            try:
                self._conn = await asyncpg.connect(
                    self._url,
                    timeout=self._timeout,
                    command_timeout=self._timeout,
                    server_settings={
                        "application_name": "waste-operator",
                        "default_transaction_read_only": "on",
                    },
                )
            except ValueError:  # a malformed URL: its text may hold the password, so it is not shown
                raise ValueError("DATABASE_URL is malformed") from None
        conn = self._conn
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            cutoff = None
            if await conn.fetchval(REGISTRY_PRESENT_SQL):
                latest = await conn.fetchval(LATEST_SQL)
                if latest is not None:
                    cutoff = deployed_cutoff(latest, await conn.fetch(VERSIONS_SQL))
            args: list = [min_detections, limit] + ([cutoff] if cutoff is not None else [])
            new = await conn.fetchval(new_samples_sql(since=cutoff is not None), *args)
        return int(new), cutoff

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)


def _is_sql_error(error: BaseException) -> bool:
    """The server answered, and refused the query (a missing table, no permission): not a network blip."""
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a base dependency
        return False
    return isinstance(error, asyncpg.PostgresError) and not isinstance(
        error, (asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.TooManyConnectionsError)
    )
