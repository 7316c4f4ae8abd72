"""The database layer: one dialect on both engines, transactions, retries, migrations."""

import sqlite3
import time

import numpy as np
import pytest

from ztfsds.archive import SCHEMA_VERSION, TABLES, connect, current_version, migrate
from ztfsds.archive import db as dbmod
from ztfsds.errors import ArchiveError


def _make_t(db):
    db.execute("CREATE TABLE t (a BIGINT PRIMARY KEY, b DOUBLE PRECISION, c TEXT)")


def test_placeholders_numpy_and_nan(db):
    _make_t(db)
    db.executemany("INSERT INTO t (a, b, c) VALUES (?, ?, ?)",
                   [(np.int64(3), np.float32(0.5), "x%y"), (np.int32(1), float("nan"), None), (2, 2.5, "z")])
    assert db.query("SELECT a, b, c FROM t WHERE c LIKE ? ORDER BY a", ("x%",)) == [(3, 0.5, "x%y")]
    t = db.query_table("SELECT a, b, c FROM t ORDER BY a")
    assert t["a"].tolist() == [1, 2, 3] and t["a"].dtype == np.int64
    assert np.isnan(t["b"][0]) and t["b"][1:].tolist() == [2.5, 0.5]
    assert t["c"].tolist() == ["", "z", "x%y"]
    # a literal % without parameters is left alone on psycopg
    assert db.query("SELECT COUNT(*) FROM t WHERE c LIKE 'x%'") == [(1,)]


def test_empty_result_types(db):
    t = db.query_table("SELECT candid, objectid, magpsf FROM candidates")
    assert len(t) == 0 and t["candid"].dtype == np.int64 and t["magpsf"].dtype == np.float64
    assert t["objectid"].dtype.kind == "U"


def test_transaction_commit_rollback_nested(db):
    _make_t(db)
    with db.transaction():
        db.execute("INSERT INTO t (a) VALUES (1)")
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.execute("INSERT INTO t (a) VALUES (2)")
            raise RuntimeError("boom")
    assert db.query("SELECT a FROM t") == [(1,)]
    with db.transaction():
        db.execute("INSERT INTO t (a) VALUES (3)")
        with pytest.raises(RuntimeError):
            with db.transaction():           # a savepoint: only its own work is undone
                db.execute("INSERT INTO t (a) VALUES (4)")
                raise RuntimeError("inner")
        with db.transaction():
            db.execute("INSERT INTO t (a) VALUES (5)")
    assert [r[0] for r in db.query("SELECT a FROM t ORDER BY a")] == [1, 3, 5]
    assert not db.in_transaction


def test_failed_statement_is_archive_error_naming_url(db):
    with pytest.raises(ArchiveError, match="no_such_table") as info:
        db.query("SELECT * FROM no_such_table")
    assert db.url.split("://")[0] in str(info.value)
    # the connection is still usable afterwards
    assert db.query("SELECT 1") == [(1,)]


def test_migrate_is_idempotent(db):
    assert current_version(db) == SCHEMA_VERSION
    assert migrate(db) == SCHEMA_VERSION
    assert db.query("SELECT COUNT(*) FROM schema_version") == [(SCHEMA_VERSION,)]
    for table in TABLES:       # every table exists and is empty
        assert db.query(f"SELECT COUNT(*) FROM {table}") == [(0,)]


def test_newer_schema_is_refused(db):
    db.execute("INSERT INTO schema_version (version, applied) VALUES (?, ?)", (SCHEMA_VERSION + 1, "future"))
    with pytest.raises(ArchiveError, match="newer than this ztfsds"):
        migrate(db)


def test_sqlite_pragmas(tmp_path):
    with connect(f"sqlite:///{tmp_path / 'x.sqlite'}") as db:
        assert db.query("PRAGMA journal_mode")[0][0] == "wal"
        assert db.query("PRAGMA foreign_keys")[0][0] == 1
        assert db.query("PRAGMA busy_timeout")[0][0] >= 1000


def test_store_default_url(tmp_path):
    from ztfsds.products import ProductStore

    store = ProductStore(tmp_path / "root")
    with connect("", store=store) as db:
        migrate(db)
    assert store.database_path.is_file()
    with pytest.raises(ArchiveError, match="no database URL"):
        connect(None)
    with pytest.raises(ArchiveError, match="unknown database URL"):
        connect("mysql://x@y/z")


def test_connect_retries_then_names_url(monkeypatch):
    monkeypatch.setattr(dbmod, "_BACKOFF", 0.01)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return sqlite3.connect(":memory:", isolation_level=None)

    db = dbmod.Database("sqlite:///:memory:", "sqlite", flaky)
    assert len(calls) == 3 and db.query("SELECT 2") == [(2,)]

    def dead():
        calls.append(1)
        raise sqlite3.OperationalError("unable to open database file")

    calls.clear()
    with pytest.raises(ArchiveError, match=r"sqlite:///nowhere.*connect failed after 4 attempt"):
        dbmod.Database("sqlite:///nowhere", "sqlite", dead)
    assert len(calls) == dbmod.RETRIES


def test_postgres_unreachable_is_clear(monkeypatch):
    monkeypatch.setattr(dbmod, "_BACKOFF", 0.01)
    t0 = time.perf_counter()
    with pytest.raises(ArchiveError, match=r"postgresql://nobody:\*\*\*@127.0.0.1:1/none: connect failed after 4"):
        connect("postgresql://nobody:secret@127.0.0.1:1/none")
    assert time.perf_counter() - t0 < 10.0


def test_sqlite_concurrent_writers(tmp_path):
    """Two connections writing in turns: BEGIN IMMEDIATE + busy timeout serialise them."""
    import threading

    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    with connect(url) as db:
        _make_t(db)
    errors = []

    def writer(offset):
        try:
            with connect(url) as db:
                for i in range(50):
                    with db.transaction():
                        db.execute("INSERT INTO t (a) VALUES (?)", (offset + i,))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    with connect(url) as db:
        assert db.query("SELECT COUNT(*) FROM t") == [(150,)]


def test_jobs_table(db):
    from ztfsds.archive import job_status, record_job

    q = "ztf_20200924431759_000655_zr_c13_o_q3"
    record_job(db, q, "photom", "running", attempt=1)
    started = job_status(db)["started"][0]
    record_job(db, q, "photom", "failed", message="no stars", elapsed_s=2.5, peak_mem_mb=812.0, attempt=1)
    record_job(db, q, "photom", "ok", elapsed_s=1.9, attempt=2)
    t = job_status(db, quadrant=q)
    assert t["attempt"].tolist() == [1, 2] and t["status"].tolist() == ["failed", "ok"]
    assert t["started"][0] == started and t["peak_mem_mb"][0] == 812.0 and t["message"][0] == "no stars"
    assert len(job_status(db, status="failed")) == 1
