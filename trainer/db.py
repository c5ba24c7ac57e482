"""A small synchronous database layer over asyncpg (PostgreSQL) and sqlite3 (the embedded default).

Queries are written once, in PostgreSQL's dialect with $n parameters; for SQLite the parameters become ?n,
casts and FOR UPDATE are dropped (BEGIN IMMEDIATE already serialises writers). Parameters are always
bound, never formatted into SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from trainer.errors import ConfigError, RegistryError

_CAST = re.compile(r"::[a-z_]+")
_PARAM = re.compile(r"\$(\d+)")
_MIGRATION_LOCK = 727274  # pg_advisory_xact_lock key for applying migrations


def redact(text: str) -> str:
    """Removes passwords from any URL in a message, so errors can be logged and reported safely."""
    return re.sub(r"(://[^:/@\s]*):[^\s/]*@", r"\1:***@", text)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Database(Protocol):
    dialect: str

    def fetch(self, sql: str, *args: Any) -> list[dict]: ...
    def execute(self, sql: str, *args: Any) -> None: ...
    def transaction(self) -> contextlib.AbstractContextManager[Database]: ...
    def close(self) -> None: ...


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, dsn: str, connect_timeout: float = 10.0, attempts: int = 5):
        import asyncpg

        self._asyncpg = asyncpg
        self._runner = asyncio.Runner()
        self._dsn = dsn
        self._conn = None
        self._in_tx = False
        self._connect(connect_timeout, attempts)

    def _connect(self, timeout: float, attempts: int) -> None:
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                self._conn = self._runner.run(self._asyncpg.connect(self._dsn, timeout=timeout))
                return
            except (
                TimeoutError,
                OSError,
                self._asyncpg.CannotConnectNowError,
                self._asyncpg.TooManyConnectionsError,
            ) as exc:
                last = exc
                time.sleep(min(8.0, 0.5 * 2**attempt))
            except self._asyncpg.PostgresError as exc:
                raise RegistryError(f"PostgreSQL refused the connection: {redact(str(exc))}") from None
            except ValueError as exc:
                raise ConfigError(f"DATABASE_URL is malformed: {redact(str(exc))}") from None
        raise RegistryError(f"cannot reach PostgreSQL after {attempts} attempts: {redact(str(last))}")

    def _lost(self, exc: BaseException) -> bool:
        return isinstance(
            exc,
            (
                OSError,
                self._asyncpg.InterfaceError,
                self._asyncpg.ConnectionDoesNotExistError,
                self._asyncpg.AdminShutdownError,
                self._asyncpg.CannotConnectNowError,
            ),
        )

    def _call(self, make_coro):
        """Runs one statement; a connection lost between transactions (a restarted server) is re-opened and
        the statement retried once. Inside a transaction the loss is an error: the transaction is gone."""
        return self._retrying(make_coro, reconnect=not self._in_tx)

    def _retrying(self, make_coro, reconnect: bool):
        for attempt in (0, 1):
            try:
                return self._runner.run(make_coro())
            except Exception as exc:  # noqa: BLE001 - mapped to RegistryError, or raised as it is
                if self._lost(exc) and attempt == 0 and reconnect:
                    self._reconnect()
                    continue
                raise self._as_registry_error(exc) from None
        raise AssertionError("unreachable")

    def _as_registry_error(self, exc: Exception) -> Exception:
        if self._lost(exc):
            return RegistryError(f"lost the PostgreSQL connection: {redact(str(exc))}")
        if isinstance(exc, self._asyncpg.PostgresError):
            return RegistryError(f"PostgreSQL error: {redact(str(exc))}")
        return exc

    def _reconnect(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.terminate()
        self._connect(10.0, 6)

    def fetch(self, sql: str, *args: Any) -> list[dict]:
        return [dict(r) for r in self._call(lambda: self._conn.fetch(sql, *args))]

    def execute(self, sql: str, *args: Any) -> None:
        self._call(lambda: self._conn.execute(sql, *args))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PostgresDatabase]:
        # Nothing is done yet when the transaction starts: a fresh connection is safe. The transaction is
        # made inside the retried call so that it belongs to the connection it runs on.
        tx = None

        def start():
            nonlocal tx
            tx = self._conn.transaction()
            return tx.start()

        self._retrying(start, reconnect=True)
        self._in_tx = True
        try:
            yield self
        except BaseException:
            self._in_tx = False
            with contextlib.suppress(Exception):
                self._runner.run(tx.rollback())
            raise
        else:
            try:
                self._call(tx.commit)  # a connection lost here is an error, never a silent retry
            finally:
                self._in_tx = False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._runner.run(self._conn.close(timeout=5))
        self._runner.close()


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")

    @staticmethod
    def _sql(sql: str) -> str:
        sql = sql.replace(" FOR UPDATE", "")
        return _PARAM.sub(r"?\1", _CAST.sub("", sql))

    @staticmethod
    def _args(args: Sequence[Any]) -> list[Any]:
        return [a.isoformat() if isinstance(a, datetime) else a for a in args]

    def fetch(self, sql: str, *args: Any) -> list[dict]:
        try:
            return [dict(r) for r in self._conn.execute(self._sql(sql), self._args(args)).fetchall()]
        except sqlite3.Error as exc:
            raise RegistryError(f"SQLite error: {exc}") from None

    def execute(self, sql: str, *args: Any) -> None:
        try:
            self._conn.execute(self._sql(sql), self._args(args))
        except sqlite3.Error as exc:
            raise RegistryError(f"SQLite error: {exc}") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SqliteDatabase]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every bundled migration, in order."""
    out = []
    for entry in resources.files("trainer.migrations").iterdir():
        m = re.match(r"(\d+)_(\w+)\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(out)


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def migrate(db: Database) -> list[int]:
    """Applies the migrations not yet applied, each in its own transaction; safe to run concurrently."""
    # CREATE TABLE IF NOT EXISTS is not safe against a concurrent creator in PostgreSQL (both pass the
    # existence check, one fails on the catalog's unique index), so it runs under the same lock.
    with db.transaction():
        if db.dialect == "postgresql":
            db.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        db.execute(
            "CREATE TABLE IF NOT EXISTS trainer_schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
    applied: list[int] = []
    for version, name, sql in migrations():
        with db.transaction():
            if db.dialect == "postgresql":
                db.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            if db.fetch("SELECT 1 FROM trainer_schema_migrations WHERE version = $1", version):
                continue
            for statement in _statements(sql):
                db.execute(statement)
            db.execute(
                "INSERT INTO trainer_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                version,
                name,
                utcnow(),
            )
            applied.append(version)
    return applied


def connect(database_url: str | None, local_dir: Path) -> Database:
    if database_url:
        return PostgresDatabase(database_url)
    return SqliteDatabase(local_dir / "registry.sqlite")
