"""The archive's tables, one definition for SQLite and PostgreSQL, and their versioned migrations.

Columns are named as ZTF names them (``pid``, ``expid``, ``rcid``, ``fid``, ``magzp``, ``diffmaglim``,
``candid``, ``objectid``...). Four column types cover everything and map per engine:

========  ===================  ==================
type      SQLite               PostgreSQL
========  ===================  ==================
``int``   INTEGER (64-bit)     BIGINT
``float`` REAL (64-bit)        DOUBLE PRECISION
``text``  TEXT                 TEXT
``blob``  BLOB                 BYTEA
========  ===================  ==================

Every positional table carries ``hpx``, the nested HEALPix index of its position at order
`HPX_ORDER` (`~ztfsds.config.ArchiveParams.healpix_order`, 12.9" pixels), indexed, so that a cone
search is a few integer range scans (`ztfsds.archive.query.cone_search`). Quadrant-image footprints are
indexed in ``quadimage_cover`` by the order-`COVER_ORDER` pixels (13.7') they touch.

The reference images' table is ``refimages``: ``references`` is an SQL reserved word.

`migrate` applies the migrations a database lacks, in order, each in one transaction, and records
them in ``schema_version``; running it again does nothing.

Examples
--------
>>> from ztfsds.archive import connect, migrate, SCHEMA_VERSION
>>> db = connect("sqlite:///:memory:")
>>> migrate(db) == SCHEMA_VERSION, migrate(db) == SCHEMA_VERSION
(True, True)
>>> current_version(db) == SCHEMA_VERSION
True
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from ..errors import ArchiveError

__all__ = ["SCHEMA_VERSION", "HPX_ORDER", "COVER_ORDER", "TABLES", "PRIMARY_KEYS", "INDEXES", "migrate",
           "current_version", "column_dtype", "column_names", "create_table_sql"]

log = logging.getLogger(__name__)

#: HEALPix (nested) order of the ``hpx`` column of every positional table.
HPX_ORDER = 14
#: HEALPix order of the footprint-coverage index of quadrant and reference images.
COVER_ORDER = 8

_CORNERS = [(f"{c}{k}", "float") for k in range(1, 5) for c in ("ra", "dec")]

#: Table -> ordered (column, type) pairs.
TABLES: dict[str, list[tuple[str, str]]] = {
    "exposures": [
        ("expid", "int"), ("nid", "int"), ("night", "text"), ("field", "int"), ("fid", "int"),
        ("filtercode", "text"), ("programid", "int"), ("jd", "float"), ("exptime", "float"),
        ("ra", "float"), ("dec", "float"), ("airmass", "float"), ("imgtypecode", "text"), ("status", "int"),
    ],
    "quadimages": [
        ("pid", "int"), ("expid", "int"), ("field", "int"), ("ccdid", "int"), ("qid", "int"), ("rcid", "int"),
        ("fid", "int"), ("filtercode", "text"), ("programid", "int"), ("jd", "float"), ("nid", "int"),
        ("exptime", "float"), ("ra", "float"), ("dec", "float"), ("hpx", "int"), *_CORNERS,
        ("magzp", "float"), ("magzpunc", "float"), ("magzprms", "float"), ("clrcoeff", "float"),
        ("clrcounc", "float"), ("seeing", "float"), ("maglim", "float"), ("diffmaglim", "float"),
        ("infobits", "int"), ("status", "int"), ("nsources", "int"), ("ncands", "int"), ("rfid", "int"),
        ("sciimg", "text"), ("ingested_at", "text"),
    ],
    "quadimage_cover": [("hpx8", "int"), ("pid", "int")],
    "refimages": [
        ("rfid", "int"), ("field", "int"), ("fid", "int"), ("filtercode", "text"), ("ccdid", "int"),
        ("qid", "int"), ("rcid", "int"), ("nframes", "int"), ("jdstart", "float"), ("jdend", "float"),
        ("magzp", "float"), ("maglim", "float"), ("seeing", "float"), ("ra", "float"), ("dec", "float"),
        ("hpx", "int"), *_CORNERS, ("path", "text"), ("ingested_at", "text"),
    ],
    "sources": [
        ("sourceid", "int"), ("pid", "int"), ("ra", "float"), ("dec", "float"), ("hpx", "int"),
        ("xpos", "float"), ("ypos", "float"), ("mag", "float"), ("magerr", "float"), ("flux", "float"),
        ("fluxerr", "float"), ("snr", "float"), ("chi", "float"), ("sharp", "float"), ("flags", "int"),
    ],
    "candidates": [
        ("candid", "int"), ("pid", "int"), ("objectid", "text"), ("jd", "float"), ("fid", "int"),
        ("field", "int"), ("rcid", "int"), ("programid", "int"), ("nid", "int"), ("tblid", "int"),
        ("ra", "float"), ("dec", "float"), ("hpx", "int"), ("isdiffpos", "text"), ("xpos", "float"),
        ("ypos", "float"), ("magpsf", "float"), ("sigmapsf", "float"), ("chipsf", "float"),
        ("magap", "float"), ("sigmagap", "float"), ("magapbig", "float"), ("sigmagapbig", "float"),
        ("magdiff", "float"), ("flux", "float"), ("sigflux", "float"), ("diffmaglim", "float"),
        ("magzpsci", "float"), ("magzpsciunc", "float"), ("magzpscirms", "float"), ("clrcoeff", "float"),
        ("clrcounc", "float"), ("rb", "float"), ("drb", "float"), ("rbversion", "text"),
        ("drbversion", "text"), ("fwhm", "float"), ("elong", "float"), ("aimage", "float"),
        ("bimage", "float"), ("nbad", "int"), ("nneg", "int"), ("sumrat", "float"), ("mindtoedge", "float"),
        ("scorr", "float"), ("distnr", "float"), ("magnr", "float"), ("sigmagnr", "float"),
        ("chinr", "float"), ("sharpnr", "float"), ("sky", "float"), ("seeratio", "float"),
        ("onstreak", "int"), ("rfid", "int"), ("pdiffimfilename", "text"),
    ],
    "objects": [
        ("objectid", "text"), ("ra", "float"), ("dec", "float"), ("hpx", "int"), ("ndet", "int"),
        ("jdfirst", "float"), ("jdlast", "float"),
    ],
    "object_counters": [("year", "int"), ("n", "int")],
    "avro_schemas": [("fingerprint", "text"), ("version", "text"), ("schema_json", "text")],
    "alert_packets": [
        ("candid", "int"), ("objectid", "text"), ("jd", "float"), ("fid", "int"), ("ra", "float"),
        ("dec", "float"), ("hpx", "int"), ("isdiffpos", "text"), ("magpsf", "float"), ("sigmapsf", "float"),
        ("diffmaglim", "float"), ("rb", "float"), ("drb", "float"), ("programid", "int"), ("field", "int"),
        ("rcid", "int"), ("schemavsn", "text"), ("schema_fingerprint", "text"), ("packet", "blob"),
        ("source", "text"), ("ingested_at", "text"),
    ],
    # one row per detection or upper limit of an object seen in any stored packet (its candidate and
    # its prv_candidates), deduplicated on (objectid, jd, fid): the photometric history of an object
    "alert_history": [
        ("objectid", "text"), ("jd", "float"), ("fid", "int"), ("candid", "int"), ("pid", "int"),
        ("isdiffpos", "text"), ("magpsf", "float"), ("sigmapsf", "float"), ("diffmaglim", "float"),
        ("ra", "float"), ("dec", "float"), ("programid", "int"), ("field", "int"), ("rcid", "int"),
        ("rb", "float"), ("magzpsci", "float"), ("from_candid", "int"),
    ],
    "jobs": [
        ("quadrant", "text"), ("stage", "text"), ("status", "text"), ("message", "text"),
        ("elapsed_s", "float"), ("peak_mem_mb", "float"), ("started", "text"), ("finished", "text"),
        ("attempt", "int"), ("host", "text"), ("cpu_s", "float"),
    ],
}

#: Table -> primary-key columns.
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "exposures": ("expid",), "quadimages": ("pid",), "quadimage_cover": ("hpx8", "pid"),
    "refimages": ("rfid",), "sources": ("sourceid",), "candidates": ("candid",), "objects": ("objectid",),
    "object_counters": ("year",), "avro_schemas": ("fingerprint",), "alert_packets": ("candid",),
    "alert_history": ("objectid", "jd", "fid"), "jobs": ("quadrant", "stage", "attempt"),
}

#: (index name, table, columns).
INDEXES: list[tuple[str, str, tuple[str, ...]]] = [
    ("quadimages_fcqf_jd", "quadimages", ("field", "ccdid", "qid", "fid", "jd")),
    ("quadimages_jd", "quadimages", ("jd",)),
    ("quadimages_hpx", "quadimages", ("hpx",)),
    ("quadimage_cover_pid", "quadimage_cover", ("pid",)),
    ("refimages_fcqf", "refimages", ("field", "ccdid", "qid", "fid")),
    ("refimages_hpx", "refimages", ("hpx",)),
    ("exposures_jd", "exposures", ("jd",)),
    ("sources_hpx", "sources", ("hpx",)),
    ("sources_pid", "sources", ("pid",)),
    ("candidates_hpx", "candidates", ("hpx",)),
    ("candidates_objectid_jd", "candidates", ("objectid", "jd")),
    ("candidates_pid", "candidates", ("pid",)),
    ("objects_hpx", "objects", ("hpx",)),
    ("alert_packets_hpx", "alert_packets", ("hpx",)),
    ("alert_packets_objectid_jd", "alert_packets", ("objectid", "jd")),
    ("alert_packets_jd", "alert_packets", ("jd",)),
    ("alert_history_candid", "alert_history", ("candid",)),
    ("jobs_status", "jobs", ("status", "stage")),
]

_TYPES = {
    "sqlite": {"int": "INTEGER", "float": "REAL", "text": "TEXT", "blob": "BLOB"},
    "postgresql": {"int": "BIGINT", "float": "DOUBLE PRECISION", "text": "TEXT", "blob": "BYTEA"},
}
_DTYPES = {"int": np.int64, "float": np.float64, "text": np.str_, "blob": object}
_COLUMN_TYPES: dict[str, str] = {}
for _cols in TABLES.values():
    for _name, _type in _cols:
        _COLUMN_TYPES.setdefault(_name, _type)
_COLUMN_TYPES.update({"dist": "float", "hpx8": "int"})


def column_dtype(name: str):
    """numpy dtype of a schema column name (None when no table has it)."""
    kind = _COLUMN_TYPES.get(name)
    return None if kind is None else _DTYPES[kind]


def column_names(table: str) -> list[str]:
    """Columns of a table, in order."""
    try:
        return [c for c, _ in TABLES[table]]
    except KeyError:
        raise ArchiveError(f"no table {table!r} in the archive schema (tables: {', '.join(TABLES)})") from None


def create_table_sql(table: str, engine: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` statement of a table for an engine."""
    types = _TYPES[engine]
    cols = [f"{name} {types[kind]}" + (" NOT NULL" if name in PRIMARY_KEYS[table] else "")
            for name, kind in TABLES[table]]
    cols.append(f"PRIMARY KEY ({', '.join(PRIMARY_KEYS[table])})")
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)})"


def _v1(db) -> None:
    for table in TABLES:
        db.execute(create_table_sql(table, db.engine))
    for name, table, cols in INDEXES:
        db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({', '.join(cols)})")


def _v2(db) -> None:
    """``jobs.cpu_s``: the CPU time of a stage run [s] (older rows keep NULL; their CPU time is in the message)."""
    if db.engine == "sqlite":
        have = {row[1] for row in db.query("PRAGMA table_info(jobs)")}
        if "cpu_s" not in have:
            db.execute("ALTER TABLE jobs ADD COLUMN cpu_s REAL")
    else:
        db.execute("ALTER TABLE jobs ADD COLUMN IF NOT EXISTS cpu_s DOUBLE PRECISION")


#: version -> function creating it from the previous version.
MIGRATIONS: dict[int, Callable] = {1: _v1, 2: _v2}
#: The schema version this code writes and reads.
SCHEMA_VERSION = max(MIGRATIONS)


def current_version(db) -> int:
    """The schema version of a database (0 for an empty one)."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied TEXT)")
    rows = db.query("SELECT MAX(version) FROM schema_version")
    return int(rows[0][0] or 0)


def migrate(db) -> int:
    """Bring a database to `SCHEMA_VERSION` (idempotent; safe to call at every connection).

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`

    Returns
    -------
    int
        The schema version after migration.

    Raises
    ------
    ztfsds.errors.ArchiveError
        The database is newer than this code (written by a later ztfsds).
    """
    import datetime

    version = current_version(db)
    if version > SCHEMA_VERSION:
        raise ArchiveError(f"{db.url}: schema version {version} is newer than this ztfsds ({SCHEMA_VERSION}); "
                           "upgrade ztfsds")
    for v in range(version + 1, SCHEMA_VERSION + 1):
        with db.transaction():
            if db.engine == "postgresql":  # one migrating session at a time (released at COMMIT)
                db.query("SELECT pg_advisory_xact_lock(7402718)")
            # another process may have migrated meanwhile: recheck inside the transaction
            if int(db.query("SELECT COUNT(*) FROM schema_version WHERE version = ?", (v,))[0][0]):
                continue
            MIGRATIONS[v](db)
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            db.execute("INSERT INTO schema_version (version, applied) VALUES (?, ?) ON CONFLICT (version) DO NOTHING",
                       (v, now))
        log.info("%s: schema migrated to version %d", db.url, v)
    return SCHEMA_VERSION
