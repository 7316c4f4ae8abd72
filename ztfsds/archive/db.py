"""`Database`: one connection to the archive database, SQLite or PostgreSQL, with one SQL dialect.

SQL is written once, with ``?`` placeholders and the syntax both engines share (``INSERT ... ON CONFLICT``,
``RETURNING``, ``BEGIN``/``SAVEPOINT``); `Database` translates the placeholders for psycopg. Values may be
numpy scalars; NaN floats are stored as NULL (SQLite does so anyway) and come back as NaN in
`Database.query_table`.

- ``''`` / None: the embedded SQLite file of a `~ztfsds.products.ProductStore` (``<root>/ztfsds.sqlite``);
  ``sqlite:///path``: another SQLite file (``sqlite:///:memory:`` for a scratch database). Opened in WAL
  mode (readers never block the writer), with a busy timeout and foreign keys on.
- ``postgresql://user@host:port/dbname``: PostgreSQL through psycopg 3 (imported only then). ``schema``
  puts every table in that schema (created if missing) via the ``search_path``: tests isolate themselves so.

The connection runs in autocommit mode; `Database.transaction` opens ``BEGIN`` ... ``COMMIT`` (``ROLLBACK``
on an exception) and nests as savepoints, so an ingest function can be called inside a larger transaction.
A database that is briefly unreachable or locked (``OperationalError`` on connect, or on a statement outside
a transaction) is retried a few times with a growing pause before an `~ztfsds.errors.ArchiveError` that names
the URL.

Examples
--------
>>> from ztfsds.archive.db import connect
>>> with connect("sqlite:///:memory:") as db:
...     _ = db.execute("CREATE TABLE t (a INTEGER, b REAL)")
...     with db.transaction():
...         db.executemany("INSERT INTO t VALUES (?, ?)", [(1, 0.5), (2, float("nan"))])
...     db.query("SELECT a, b FROM t ORDER BY a")
[(1, 0.5), (2, None)]
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from astropy.table import MaskedColumn, Table

from ..errors import ArchiveError

__all__ = ["Database", "connect", "redact_url", "rows_to_table", "RETRIES"]

log = logging.getLogger(__name__)

#: Attempts of a connection or a statement outside a transaction that fails with ``OperationalError``.
RETRIES = 4
_BACKOFF = 0.2  # [s], doubled at each retry
_BUSY_TIMEOUT_MS = 30000
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def redact_url(url: str) -> str:
    """A database URL with its password (if any) replaced by ``***``.

    Examples
    --------
    >>> redact_url("postgresql://ztf:secret@db.example.org:5432/archive")
    'postgresql://ztf:***@db.example.org:5432/archive'
    """
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def _py(value):
    """A Python value psycopg and sqlite3 both bind (numpy scalars unwrapped, NaN -> NULL)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _row(params) -> tuple:
    return tuple(_py(v) for v in params)


class Database:
    """A connection to the archive database (create it with `connect`).

    Attributes
    ----------
    engine : {'sqlite', 'postgresql'}
        The database engine.
    url : str
        The URL it was opened with (password redacted).
    schema : str or None
        PostgreSQL schema holding the tables (None: the server's default ``search_path``).
    """

    def __init__(self, url: str, engine: str, opener, schema: str | None = None):
        self.url = redact_url(url)
        self.engine = engine
        self.schema = schema
        self._opener = opener
        self._depth = 0
        self._conn = None
        self._conn = self._retry(opener, "connect")

    # -- plumbing -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"Database({self.url!r}, engine={self.engine!r})"

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def connection(self):
        """The underlying DB-API connection (sqlite3 or psycopg)."""
        if self._conn is None:
            raise ArchiveError(f"{self.url}: the database connection is closed")
        return self._conn

    @property
    def in_transaction(self) -> bool:
        """True inside `transaction`."""
        return self._depth > 0

    def _errors(self):
        if self.engine == "sqlite":
            return sqlite3.Error, sqlite3.OperationalError
        import psycopg

        return psycopg.Error, psycopg.OperationalError

    def _transient(self, exc) -> bool:
        """Whether an OperationalError may go away by itself (a lock, a server restarting)."""
        if self.engine == "sqlite":  # sqlite3 reports SQL errors ("no such table") as OperationalError too
            text = str(exc).lower()
            return any(w in text for w in ("locked", "busy", "unable to open", "disk i/o"))
        return True

    def _retry(self, call, what: str):
        error, operational = self._errors()
        pause = _BACKOFF
        for attempt in range(1, RETRIES + 1):
            try:
                return call()
            except operational as exc:
                if not self._transient(exc):
                    raise ArchiveError(f"{self.url}: {what} failed: {exc}") from exc
                if self._depth > 0 or attempt == RETRIES:
                    raise ArchiveError(f"{self.url}: {what} failed after {attempt} attempt(s): {exc}") from exc
                log.warning("%s: %s failed (%s); retrying in %.1f s", self.url, what, exc, pause)
                time.sleep(pause)
                pause *= 2
                if self.engine == "postgresql" and self._conn is not None and self._conn.closed:
                    self._conn = self._opener()
            except error as exc:
                raise ArchiveError(f"{self.url}: {what} failed: {exc}") from exc

    def sql(self, statement: str) -> str:
        """The statement in this engine's placeholder style (``?`` -> ``%s`` for psycopg)."""
        if self.engine == "postgresql":
            return statement.replace("%", "%%").replace("?", "%s")
        return statement

    def _prep(self, statement: str, params: Sequence) -> tuple[str, tuple | None]:
        values = _row(params) if params is not None else ()
        if not values and self.engine == "postgresql":
            return statement, None  # not parsed for placeholders: a literal % stays as it is
        return self.sql(statement), values

    @staticmethod
    def _what(statement: str) -> str:
        return "statement " + " ".join(statement.split())[:120]

    # -- statements -----------------------------------------------------------------------------
    def execute(self, statement: str, params: Sequence = ()) -> int:
        """Run one statement.

        Parameters
        ----------
        statement : str
            SQL with ``?`` placeholders.
        params : sequence, optional
            Values of the placeholders.

        Returns
        -------
        int
            Rows changed (-1 when the engine does not say).
        """
        sql, values = self._prep(statement, params)

        def run():
            cur = self.connection.execute(sql, values)
            return cur.rowcount

        return self._retry(run, self._what(statement))

    def executemany(self, statement: str, rows: Iterable[Sequence]) -> None:
        """Run one statement for each row of parameters (in one round of the driver)."""
        sql = self.sql(statement)
        rows = [_row(r) for r in rows]
        if not rows:
            return

        def run():
            if self.engine == "sqlite":
                self.connection.executemany(sql, rows)
            else:
                with self.connection.cursor() as cur:
                    cur.executemany(sql, rows)

        self._retry(run, self._what(statement))

    def query(self, statement: str, params: Sequence = ()) -> list[tuple]:
        """Rows of a query as tuples."""
        return self._fetch(statement, params, names=False)[1]

    def _fetch(self, statement: str, params: Sequence = (), *, names: bool = True
               ) -> tuple[list[str], list[tuple]]:
        sql, values = self._prep(statement, params)

        def run():
            cur = self.connection.execute(sql, values)
            # psycopg builds the description anew at each access: only when the names are wanted
            cols = [d[0] for d in cur.description] if names and cur.description else []
            return cols, cur.fetchall()

        return self._retry(run, self._what(statement))

    def query_table(self, statement: str, params: Sequence = (), *, dtypes: dict | None = None) -> Table:
        """Rows of a query as an astropy Table.

        Parameters
        ----------
        statement : str
            SQL with ``?`` placeholders.
        params : sequence, optional
        dtypes : dict, optional
            Column name -> numpy dtype, for columns whose type the rows cannot tell (an empty result,
            all NULL). Defaults to the archive schema's column types (`ztfsds.archive.schema.column_dtype`).

        Returns
        -------
        `~astropy.table.Table`
            Float NULLs are NaN; integer columns with NULLs are masked; text NULLs are ''.
        """
        names, rows = self._fetch(statement, params)
        return rows_to_table(names, rows, dtypes=dtypes)

    def query_rows(self, statement: str, params: Sequence = ()) -> tuple[list[str], list[tuple]]:
        """Column names and rows (tuples) of a query: the cheap form for code that filters rows itself."""
        return self._fetch(statement, params)

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> int:
        """Bulk-insert rows (``COPY`` on PostgreSQL, ``executemany`` on SQLite); no conflict handling.

        Returns
        -------
        int
            Rows written.
        """
        cols = ", ".join(columns)
        if self.engine == "sqlite":
            rows = [_row(r) for r in rows]
            marks = ", ".join("?" * len(columns))
            self.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
            return len(rows)
        n = 0

        def run():
            nonlocal n
            with self.connection.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(_row(r))
                    n += 1

        self._retry(run, f"COPY into {table}")
        return n

    # -- transactions ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator["Database"]:
        """``BEGIN`` ... ``COMMIT`` around a block (``ROLLBACK`` when it raises); nested blocks are savepoints.

        On SQLite the transaction takes the write lock at once (``BEGIN IMMEDIATE``), so that two writers
        queue on the busy timeout instead of failing when one of them upgrades a read lock.
        """
        conn = self.connection
        depth = self._depth
        savepoint = f"sp_{depth}"
        if depth == 0:
            begin = "BEGIN IMMEDIATE" if self.engine == "sqlite" else "BEGIN"
            self._retry(lambda: conn.execute(begin), "BEGIN")
        else:
            self._retry(lambda: conn.execute(f"SAVEPOINT {savepoint}"), "SAVEPOINT")
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth -= 1
            try:
                conn.execute("ROLLBACK" if depth == 0 else f"ROLLBACK TO SAVEPOINT {savepoint}")
                if depth > 0:
                    conn.execute(f"RELEASE SAVEPOINT {savepoint}")
            except Exception as exc:  # the connection may be gone; the server rolls back itself then
                log.warning("%s: rollback failed: %s", self.url, exc)
            raise
        else:
            self._depth -= 1
            self._retry(lambda: conn.execute("COMMIT" if depth == 0 else f"RELEASE SAVEPOINT {savepoint}"),
                        "COMMIT")

    def close(self) -> None:
        """Close the connection (a transaction still open is rolled back)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def rows_to_table(names: Sequence[str], rows: Sequence[tuple], *, dtypes: dict | None = None) -> Table:
    """An astropy Table from query rows (see `Database.query_table` for the NULL conventions)."""
    from .schema import column_dtype

    out = Table()
    columns = list(zip(*rows)) if rows else [() for _ in names]
    for name, values in zip(names, columns):
        dtype = (dtypes or {}).get(name) or column_dtype(name)
        out[name] = _column(values, dtype)
    return out


def _column(values, dtype):
    dtype = np.dtype(dtype) if dtype is not None else None
    types = set(map(type, values))          # C speed, unlike a per-value isinstance
    has_null = type(None) in types
    kinds = types - {type(None)}
    if kinds & {bytes, bytearray, memoryview}:
        return np.array([None if v is None else bytes(v) for v in values], dtype=object)
    if kinds and kinds <= {str}:
        return np.array(["" if v is None else v for v in values] if has_null else values, dtype=str)
    if kinds and kinds <= {int, bool} and (dtype is None or dtype.kind in "iub"):
        if has_null:
            data = np.array([0 if v is None else v for v in values], dtype=np.int64)
            return MaskedColumn(data, mask=[v is None for v in values])
        return np.array(values, dtype=np.int64)
    if kinds and kinds <= {int, float, bool}:
        return np.array([np.nan if v is None else v for v in values] if has_null else values, dtype=np.float64)
    if not kinds:
        if dtype is not None and dtype.kind in "US":
            return np.array([""] * len(values), dtype=str)
        if dtype is not None and dtype.kind in "iub":
            if values:
                return MaskedColumn(np.zeros(len(values), np.int64), mask=np.ones(len(values), bool))
            return np.zeros(0, dtype=np.int64)
        if dtype is not None and dtype.kind == "O":
            return np.array(list(values), dtype=object)
        return np.full(len(values), np.nan)
    return np.array(list(values), dtype=object)


def _sqlite_opener(path: str):
    def open_():
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_MS / 1000.0, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn
    return open_


def _postgres_opener(url: str, schema: str | None):
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency of the archive
        raise ArchiveError(f"{redact_url(url)}: PostgreSQL needs psycopg 3 (pip install 'psycopg[binary]'): "
                           f"{exc}") from exc

    def open_():
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        if schema is not None:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            conn.execute(f'SET search_path TO "{schema}"')
        return conn
    return open_


def connect(url: str | None = None, *, store=None, schema: str | None = None) -> Database:
    """Open the archive database.

    Parameters
    ----------
    url : str, optional
        ``''``/None for the SQLite file of ``store`` (``store.database_path``), ``sqlite:///path``, or
        ``postgresql://user@host:port/dbname``.
    store : `~ztfsds.products.ProductStore` or path-like, optional
        Data root of the embedded database (needed when ``url`` is empty).
    schema : str, optional
        PostgreSQL only: keep the tables in this schema (created if missing).

    Returns
    -------
    Database

    Raises
    ------
    ztfsds.errors.ArchiveError
        Unknown URL scheme, missing psycopg, or a server that does not answer after the retries.
    """
    url = url or ""
    if not url:
        if store is None:
            raise ArchiveError("no database URL and no data root: give a postgresql:// or sqlite:/// URL "
                               "or the ProductStore of the embedded database")
        root = getattr(store, "database_path", None)
        path = os.fspath(root if root is not None else Path(store) / "ztfsds.sqlite")
        url = f"sqlite:///{path}"
    if url.startswith("sqlite:///"):
        if schema is not None:
            raise ArchiveError(f"{url}: 'schema' applies to PostgreSQL only")
        path = url[len("sqlite:///"):]
        return Database(url, "sqlite", _sqlite_opener(path or ":memory:"))
    if url.startswith(("postgresql://", "postgres://")):
        if schema is not None and not _SCHEMA_RE.match(schema):
            raise ArchiveError(f"{redact_url(url)}: invalid schema name {schema!r}")
        return Database(url, "postgresql", _postgres_opener(url, schema), schema=schema)
    raise ArchiveError(f"{redact_url(url)}: unknown database URL (expected '', sqlite:///path or postgresql://...)")
