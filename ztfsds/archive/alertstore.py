"""The alert archive: ZTF Avro alert packets (ours and real ones) stored in the database and searchable.

Each packet is stored as schemaless Avro bytes in ITS OWN writer schema (``alert_packets.packet``), the
schema once per fingerprint (``avro_schemas``: the SHA-256 of its parsing canonical form, with the exact
JSON embedded in the original file). A newer reader schema cannot read some older packets (3.1 -> 3.3,
3.3 -> 3.4, 3.5 -> 4.02 fail), so packets are always decoded with the schema they were written with and
come back field for field as they went in. Summary columns (objectid, jd, fid, position + ``hpx``,
magpsf, rb, drb...) are indexed for search, and every detection and upper limit of a packet (its
candidate and its ``prv_candidates``) goes into ``alert_history``, deduplicated on (objectid, jd, fid),
so that an object's photometric history is one index lookup.

Sources `ingest_alerts` accepts: an Avro container file (``.avro``, one or more packets), a tar of them
(``.tar``, ``.tar.gz``: a night's or a quadrant's alert tar), a directory (searched recursively for both),
bytes of a container file, or, with ``schema=``, schemaless packets (ZTF's compact form) with that writer
schema. Re-ingesting a packet already stored (same candid) changes nothing.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

import fastavro
import numpy as np
from astropy.table import Table

from ..errors import ArchiveError, InputError
from .footprint import hpx_of
from .ingest import upsert_rows
from .query import cone_search

__all__ = ["ingest_alerts", "search_alerts", "get_alerts", "get_packet_bytes", "alert_history", "alert_cutouts",
           "schema_fingerprint", "ALERT_SUMMARY_COLUMNS"]

log = logging.getLogger(__name__)

#: Columns `search_alerts` returns.
ALERT_SUMMARY_COLUMNS = ("candid", "objectid", "jd", "fid", "ra", "dec", "isdiffpos", "magpsf", "sigmapsf",
                         "diffmaglim", "rb", "drb", "programid", "field", "rcid", "schemavsn")
_HISTORY_COLUMNS = ("objectid", "jd", "fid", "candid", "pid", "isdiffpos", "magpsf", "sigmapsf", "diffmaglim",
                    "ra", "dec", "programid", "field", "rcid", "rb", "magzpsci", "from_candid")
_BATCH = 1000  # packets per transaction
_PARSED: dict[str, dict] = {}  # fingerprint -> parsed schema (parsing is the slow part of decoding)


def _canonical(schema_json: str) -> str:
    return fastavro.schema.to_parsing_canonical_form(json.loads(schema_json))


def schema_fingerprint(schema) -> str:
    """SHA-256 (hex) of the parsing canonical form of an Avro schema (a JSON string or a dict)."""
    text = schema if isinstance(schema, str) else json.dumps(schema)
    return hashlib.sha256(_canonical(text).encode()).hexdigest()


def _parsed(fingerprint: str, schema_json: str) -> dict:
    parsed = _PARSED.get(fingerprint)
    if parsed is None:
        parsed = fastavro.parse_schema(json.loads(schema_json))
        _PARSED[fingerprint] = parsed
    return parsed


# -- reading sources ----------------------------------------------------------------------------------
def _container_packets(data: bytes, origin: str) -> Iterator[tuple[str, dict, None]]:
    """(writer schema JSON, record) of every packet of an Avro container file."""
    try:
        reader = fastavro.reader(io.BytesIO(data))
        schema_json = reader.metadata.get("avro.schema")
        if isinstance(schema_json, bytes):
            schema_json = schema_json.decode()
        if schema_json is None:
            schema_json = json.dumps(reader.writer_schema)
        for record in reader:
            yield schema_json, record, None
    except (ValueError, EOFError, StopIteration, TypeError, KeyError) as exc:
        raise InputError(origin, f"not a readable Avro alert container: {exc}") from exc


def _schemaless_packets(data: bytes, origin: str, schema_json: str) -> Iterator[tuple[str, dict, bytes]]:
    parsed = _parsed(schema_fingerprint(schema_json), schema_json)
    buf = io.BytesIO(data)
    try:
        while buf.tell() < len(data):
            start = buf.tell()
            record = fastavro.schemaless_reader(buf, parsed)
            # the packet's own bytes are what would be stored: no need to encode it again
            yield schema_json, record, data[start:buf.tell()]
    except (ValueError, EOFError, TypeError) as exc:
        raise InputError(origin, f"not a schemaless packet of the given schema: {exc}") from exc


def _blobs(source) -> Iterator[tuple[str, bytes]]:
    """(origin, bytes) of each packet file of a source."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield "ingest", bytes(source)
        return
    path = Path(source)
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and (p.suffix == ".avro" or ".tar" in p.name):
                yield from _blobs(p)
        return
    if not path.is_file():
        raise InputError(path, "alert source not found (an .avro file, a tar of them, a directory or bytes)")
    if ".tar" in path.name or tarfile.is_tarfile(path):
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.isfile() and member.name.endswith(".avro"):
                        f = tar.extractfile(member)
                        if f is not None:
                            yield f"{path}:{member.name}", f.read()
        except tarfile.TarError as exc:
            raise InputError(path, f"unreadable alert tar: {exc}") from exc
        return
    yield str(path), path.read_bytes()


# -- ingestion ----------------------------------------------------------------------------------------
def _history_rows(record: dict, objectid: str) -> list[tuple]:
    cand = record["candidate"]
    rows = []
    for entry in [cand] + list(record.get("prv_candidates") or []):
        rows.append((objectid, entry.get("jd"), entry.get("fid"), entry.get("candid"), entry.get("pid"),
                     entry.get("isdiffpos"), entry.get("magpsf"), entry.get("sigmapsf"), entry.get("diffmaglim"),
                     entry.get("ra"), entry.get("dec"), entry.get("programid"), entry.get("field"),
                     entry.get("rcid"), entry.get("rb"), entry.get("magzpsci"), record["candid"]))
    return rows


def ingest_alerts(db, source, *, schema: str | dict | None = None) -> int:
    """Store alert packets in the alert archive (idempotent).

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
        A migrated database.
    source : path-like or bytes
        An Avro container file, a tar of them, a directory, or container bytes (see the module notes).
    schema : str or dict, optional
        Writer schema of schemaless packets: then each file (or ``source`` bytes) is a concatenation of
        schemaless packets instead of a container.

    Returns
    -------
    int
        Packets read (those already stored are counted but not rewritten).

    Raises
    ------
    ztfsds.errors.InputError
        An unreadable file (named); the files read before it are stored, nothing of it or after it.
    """
    schema_json = None if schema is None else (schema if isinstance(schema, str) else json.dumps(schema))
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    total = 0
    batch: list[tuple[str, str, dict]] = []
    for origin, data in _blobs(source):
        try:
            packets = list(_schemaless_packets(data, origin, schema_json) if schema_json is not None
                           else _container_packets(data, origin))
        except InputError:
            if batch:       # the files before the bad one are stored
                _store_packets(db, batch, now)
            raise
        total += len(packets)
        batch.extend((origin, *p) for p in packets)
        if len(batch) >= _BATCH:       # a tar of single-packet files: one transaction per batch, not per file
            _store_packets(db, batch, now)
            batch = []
    if batch:
        _store_packets(db, batch, now)
    return total


def _store_packets(db, packets: list[tuple[str, str, dict, bytes | None]], now: str) -> None:
    schemas: dict[str, tuple[str, str]] = {}
    rows, history = [], []
    for origin, schema_json, record, body in packets:
        fp = schema_fingerprint(schema_json)
        if fp not in schemas:
            schemas[fp] = (json.loads(schema_json).get("version", ""), schema_json)
        if body is None:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, _parsed(fp, schema_json), record)
            body = buf.getvalue()
        cand = record["candidate"]
        objectid = record.get("objectId")
        rows.append((int(record["candid"]), objectid, cand.get("jd"), cand.get("fid"), cand.get("ra"), cand.get("dec"),
                     int(hpx_of(cand["ra"], cand["dec"])), cand.get("isdiffpos"), cand.get("magpsf"),
                     cand.get("sigmapsf"), cand.get("diffmaglim"), cand.get("rb"), cand.get("drb"),
                     cand.get("programid"), cand.get("field"), cand.get("rcid"), record.get("schemavsn"), fp,
                     body, origin, now))
        if objectid:
            history.extend(_history_rows(record, objectid))
    cols = ("candid", "objectid", "jd", "fid", "ra", "dec", "hpx", "isdiffpos", "magpsf", "sigmapsf", "diffmaglim",
            "rb", "drb", "programid", "field", "rcid", "schemavsn", "schema_fingerprint", "packet", "source",
            "ingested_at")
    # dedupe within the batch (one object's packets repeat its prv_candidates)
    seen, unique = set(), []
    for h in history:
        k = (h[0], h[1], h[2])
        if k not in seen and h[1] is not None and h[2] is not None:
            seen.add(k)
            unique.append(h)
    with db.transaction():
        upsert_rows(db, "avro_schemas", ("fingerprint", "version", "schema_json"),
                    [(fp, v, s) for fp, (v, s) in schemas.items()], update=False)
        upsert_rows(db, "alert_packets", cols, rows, update=False)
        # a detection replaces an upper limit at the same (objectid, jd, fid); otherwise the first one stays
        upsert_rows(db, "alert_history", _HISTORY_COLUMNS, [h for h in unique if h[3] is None], update=False)
        upsert_rows(db, "alert_history", _HISTORY_COLUMNS, [h for h in unique if h[3] is not None], update=True,
                    keep=("from_candid",))
    log.info("stored %d alert packets (%s ...)", len(rows), packets[0][0])


# -- retrieval ----------------------------------------------------------------------------------------
def search_alerts(db, *, objectid=None, ra=None, dec=None, radius_arcsec=None, jd_min=None, jd_max=None,
                  mag_min=None, mag_max=None, rb_min=None, drb_min=None, fid=None, programid=None,
                  limit=None) -> Table:
    """Search the stored alerts.

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
    objectid : str, optional
        ZTF object id (``ZTF18abcdefg``).
    ra, dec : float, optional
        Cone centre [deg]; needs ``radius_arcsec``.
    radius_arcsec : float, optional
        Cone radius [arcsec].
    jd_min, jd_max : float, optional
        Time range [JD], inclusive.
    mag_min, mag_max : float, optional
        ``magpsf`` range [mag], inclusive.
    rb_min, drb_min : float, optional
        Minimum real-bogus scores.
    fid, programid : int, optional
        Filter id, program id.
    limit : int, optional
        At most this many rows.

    Returns
    -------
    `~astropy.table.Table`
        `ALERT_SUMMARY_COLUMNS` (plus ``dist`` [arcsec] for a cone), by ``jd`` (by ``dist`` for a cone).
    """
    clauses, params = [], []
    for column, op, value in (("objectid", "=", objectid), ("jd", ">=", jd_min), ("jd", "<=", jd_max),
                              ("magpsf", ">=", mag_min), ("magpsf", "<=", mag_max), ("rb", ">=", rb_min),
                              ("drb", ">=", drb_min), ("fid", "=", fid), ("programid", "=", programid)):
        if value is not None:
            clauses.append(f"{column} {op} ?")
            params.append(value)
    where = " AND ".join(clauses)
    columns = list(ALERT_SUMMARY_COLUMNS)
    if ra is not None or dec is not None or radius_arcsec is not None:
        if ra is None or dec is None or radius_arcsec is None:
            raise ArchiveError("search_alerts: a cone needs ra, dec and radius_arcsec")
        rows = cone_search(db, "alert_packets", ra, dec, radius_arcsec, columns=columns,
                           where=(where, params) if where else None)
    else:
        sql = f"SELECT {', '.join(columns)} FROM alert_packets" + (f" WHERE {where}" if where else "") + \
            " ORDER BY jd, candid"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = db.query_table(sql, params)
    if limit is not None:
        rows = rows[:int(limit)]
    return rows


def _packet_rows(db, candids) -> dict[int, tuple]:
    candids = [int(c) for c in np.atleast_1d(np.asarray(candids, dtype=np.int64))]
    found: dict[int, tuple] = {}
    for start in range(0, len(candids), 500):
        chunk = candids[start:start + 500]
        marks = ", ".join("?" * len(chunk))
        for candid, packet, fp, schema_json in db.query(
                "SELECT p.candid, p.packet, p.schema_fingerprint, s.schema_json FROM alert_packets p "
                f"JOIN avro_schemas s ON s.fingerprint = p.schema_fingerprint WHERE p.candid IN ({marks})", chunk):
            found[int(candid)] = (bytes(packet), fp, schema_json)
    missing = [c for c in candids if c not in found]
    if missing:
        raise ArchiveError(f"{db.url}: alert(s) not stored: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    return found


def get_alerts(db, candids: Iterable[int]) -> list[dict]:
    """Full packets, decoded with their own writer schemas, in the order asked.

    Raises
    ------
    ztfsds.errors.ArchiveError
        A candid that is not stored.
    """
    candids = [int(c) for c in np.atleast_1d(np.asarray(list(candids) if not np.isscalar(candids) else [candids],
                                                        dtype=np.int64))]
    found = _packet_rows(db, candids)
    out = []
    for c in candids:
        packet, fp, schema_json = found[c]
        out.append(fastavro.schemaless_reader(io.BytesIO(packet), _parsed(fp, schema_json)))
    return out


def get_packet_bytes(db, candid: int) -> bytes:
    """One packet as an Avro container file in its writer schema (what ZTF distributes)."""
    packet, fp, schema_json = _packet_rows(db, [candid])[int(candid)]
    parsed = _parsed(fp, schema_json)
    record = fastavro.schemaless_reader(io.BytesIO(packet), parsed)
    buf = io.BytesIO()
    # the unparsed schema: the container then embeds it as the original file did (not the parsed form)
    fastavro.writer(buf, json.loads(schema_json), [record], codec="null")
    return buf.getvalue()


def alert_history(db, objectid: str) -> Table:
    """Every detection and upper limit of an object seen in the stored packets, one row per (jd, fid).

    Returns
    -------
    `~astropy.table.Table`
        ``objectid, jd, fid, candid`` (masked for upper limits), ``pid, isdiffpos, magpsf, sigmapsf,
        diffmaglim, ra, dec, programid, field, rcid, rb, magzpsci, from_candid`` (the packet it came from),
        sorted by ``jd``.
    """
    return db.query_table(f"SELECT {', '.join(_HISTORY_COLUMNS)} FROM alert_history WHERE objectid = ? ORDER BY jd, fid",
                          (objectid,))


def alert_cutouts(db, candid: int) -> dict[str, np.ndarray]:
    """The science, template and difference cutouts of a stored alert.

    Returns
    -------
    dict
        ``{'science': array, 'template': array, 'difference': array}`` (float32 images; a cutout absent
        from the packet is left out).
    """
    import warnings

    from astropy.io import fits

    record = get_alerts(db, [candid])[0]
    out = {}
    for key, name in (("cutoutScience", "science"), ("cutoutTemplate", "template"),
                      ("cutoutDifference", "difference")):
        cut = record.get(key)
        if not cut or not cut.get("stampData"):
            continue
        data = cut["stampData"]
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        # early packets' stamps have a non-standard SIMPLE card: astropy warns, then reads them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            with fits.open(io.BytesIO(data)) as hdul:
                out[name] = np.asarray(hdul[0].data, dtype=np.float32)
    return out
