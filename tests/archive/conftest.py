"""Fixtures of the archive tests: a migrated database on each engine.

`db` is parametrized over SQLite (a file in the test's tmp_path) and PostgreSQL (the server on
127.0.0.1:5432, database ``test``, user ``postgres`` or the current user). Each PostgreSQL test gets its own
schema, named after this test session, dropped after the test (and any leftover at the session's end). The
PostgreSQL variants are skipped, with a message, only when no server answers.
"""

import getpass
import itertools
import os
import uuid

import pytest

from ztfsds.archive import connect, migrate

PG_HOST = "127.0.0.1:5432"
PG_DB = "test"
_SESSION = f"ztfsds_t{os.getpid()}_{uuid.uuid4().hex[:6]}"
_counter = itertools.count()


def _pg_candidates():
    users = ["postgres"]
    try:
        users.append(getpass.getuser())
    except Exception:  # no user name in the environment
        pass
    return [f"postgresql://{u}@{PG_HOST}/{PG_DB}" for u in dict.fromkeys(users)]


@pytest.fixture(scope="session")
def pg_url():
    """URL of the test PostgreSQL server, or a skip when none answers."""
    import psycopg

    errors = []
    for url in _pg_candidates():
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            errors.append(f"{url}: {str(exc).strip()}")
            continue
        yield url
        with psycopg.connect(url, autocommit=True) as conn:  # drop whatever this session left
            rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (_SESSION + "%",)).fetchall()
            for (name,) in rows:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        return
    pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432 (database 'test'): " + "; ".join(errors))


def _drop_schema(url, schema):
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_target(request, tmp_path):
    """(url, schema) of an empty database on each engine (the schema dropped after the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'archive.sqlite'}", None
        return
    url = request.getfixturevalue("pg_url")
    schema = f"{_SESSION}_{next(_counter)}"
    yield url, schema
    _drop_schema(url, schema)


@pytest.fixture
def db(db_target):
    """A migrated archive database on each engine."""
    url, schema = db_target
    database = connect(url, schema=schema)
    migrate(database)
    yield database
    database.close()
