"""The archive database: schema, ingestion of pipeline products, image and catalog queries, alert archive.

- `connect` -> `Database`: SQLite (the embedded default, ``<data root>/ztfsds.sqlite``) or PostgreSQL (a
  ``postgresql://`` URL), one SQL dialect, transactions, retries (`ztfsds.archive.db`).
- `migrate`, `SCHEMA_VERSION`: the tables and their versioned migrations (`ztfsds.archive.schema`).
- `ingest_quadrant`, `ingest_reference`, `ingest_candidates`: products -> rows, one transaction each,
  idempotent (`ztfsds.archive.ingest`).
- `search_images`, `cone_search`, `candidate_history`, `nondetections`, `object_for_position`,
  `new_object_id` (`ztfsds.archive.query`).
- `ingest_alerts`, `search_alerts`, `get_alerts`, `get_packet_bytes`, `alert_history`, `alert_cutouts`:
  the searchable alert archive (`ztfsds.archive.alertstore`).
- `record_job`, `job_status`: per-stage status, timing and memory of the night runner (`ztfsds.archive.jobs`).

Examples
--------
>>> from ztfsds.archive import connect, migrate, new_object_id
>>> db = connect("sqlite:///:memory:")
>>> _ = migrate(db)
>>> new_object_id(db, 2018), new_object_id(db, 2018)
('ZTF18aaaaaaa', 'ZTF18aaaaaab')
"""

from .alertstore import (
    ALERT_SUMMARY_COLUMNS,
    alert_cutouts,
    alert_history,
    get_alerts,
    get_packet_bytes,
    ingest_alerts,
    schema_fingerprint,
    search_alerts,
)
from .db import Database, connect
from .ingest import IngestResult, ingest_candidates, ingest_quadrant, ingest_reference, upsert_rows
from .query import (
    POSITION_TABLES,
    candidate_histories,
    candidate_history,
    cone_search,
    hpx_ranges,
    new_object_id,
    nondetections,
    nondetections_many,
    object_for_position,
    record_object,
    search_images,
    search_references,
    set_objectids,
)
from .jobs import job_status, record_job
from .schema import SCHEMA_VERSION, TABLES, current_version, migrate

__all__ = [
    "Database",
    "connect",
    "migrate",
    "current_version",
    "SCHEMA_VERSION",
    "TABLES",
    "IngestResult",
    "ingest_quadrant",
    "ingest_reference",
    "ingest_candidates",
    "upsert_rows",
    "POSITION_TABLES",
    "search_images",
    "search_references",
    "cone_search",
    "hpx_ranges",
    "candidate_history",
    "candidate_histories",
    "nondetections",
    "nondetections_many",
    "object_for_position",
    "new_object_id",
    "record_object",
    "set_objectids",
    "ALERT_SUMMARY_COLUMNS",
    "ingest_alerts",
    "search_alerts",
    "get_alerts",
    "get_packet_bytes",
    "alert_history",
    "alert_cutouts",
    "schema_fingerprint",
    "record_job",
    "job_status",
]
