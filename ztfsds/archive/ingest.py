"""Ingestion of pipeline products into the archive database: exposures, quadrant images, PSF catalogs,
references, candidates.

Each function reads products of a `~ztfsds.products.ProductStore` and writes them in ONE transaction:
a failure (or a killed process) part-way leaves the database as it was before the call. Re-ingesting is
idempotent: rows are upserted on their primary key (``INSERT ... ON CONFLICT ... DO UPDATE``) and the
per-image row sets (a quadrant's sources and coverage pixels, its candidates) are replaced inside the
transaction, so twice is the same as once.

What is read:

- `ingest_quadrant`: the ``sciimg`` header (``DBPID``/``EXPID``, ``OBSJD``, ``FIELDID``, ``PROGRMID``,
  ``EXPTIME``, ``AIRMASS``, the WCS -> footprint, ``MAGZP``, ``MAGZPUNC``, ``MAGZPRMS``, ``CLRCOEFF``,
  ``CLRCOUNC``, ``SEEING``, ``MAGLIM``, ``INFOBITS``, ``STATUS``) -> ``exposures``, ``quadimages``,
  ``quadimage_cover``; the ``psfcat`` (HDU ``PSFCAT``) -> ``sources`` (``sourceid = pid * 10**5 + row``).
- `ingest_reference`: the ``refimg`` header (``RFID``, ``NFRAMES``, ``JDSTART``, ``JDEND``, ``MAGZP``,
  ``MAGLIM``, ``SEEING``, WCS) -> ``refimages``.
- `ingest_candidates`: the ``candidates`` product of `ztfsds.subtract.runner.run_subtract` (HDU
  ``CANDIDATES``; its primary header is the difference image's: ``DIFFMLIM``, ``RFID``, the WCS) ->
  ``candidates`` (``candid`` from pid, tblid and isdiffpos; ra/dec from xpos/ypos via the WCS when the
  table has none) and ``quadimages.diffmaglim``. An ``objectid`` already assigned to a candid is kept.

Header values of -999 (IPAC's "not measured") are stored as NULL.
"""

from __future__ import annotations

import datetime
import logging
import math
import os

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..errors import ArchiveError, ZTFSDSError
from ..products import ProductKey, ProductStore
from ..products import candid as make_candid
from ..products import nid as nid_of
from ..products.quadrant import science_key
from .footprint import cover_pixels, footprint_corners, hpx_of, image_centre
from .schema import column_names

__all__ = ["ingest_quadrant", "ingest_reference", "ingest_candidates", "upsert_rows", "IngestResult"]

log = logging.getLogger(__name__)

#: Rows per executemany batch.
_BATCH = 20000


class IngestResult(dict):
    """Counts of rows written per table (a dict), e.g. ``{'quadimages': 1, 'sources': 812}``."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def _num(header, keyword, default=None, kind=float):
    """A header value, None when absent, non-finite or IPAC's -999 placeholder."""
    if keyword not in header:
        return default
    try:
        value = kind(header[keyword])
    except (TypeError, ValueError):
        return default
    if kind is float and (not math.isfinite(value) or value <= -999.0):
        return default
    return value


def upsert_rows(db, table: str, columns, rows, *, update: bool = True, keep: tuple[str, ...] = ()) -> int:
    """Insert rows, replacing (or, with ``update=False``, keeping) those whose primary key exists.

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
    table : str
        A table of `ztfsds.archive.schema.TABLES`.
    columns : sequence of str
        Columns given, in the order of each row.
    rows : iterable of sequences
        The values.
    update : bool, optional
        Replace the non-key columns of existing rows (else leave them).
    keep : tuple of str, optional
        Columns whose existing non-NULL value wins over the new one (``COALESCE(new, old)`` reversed).

    Returns
    -------
    int
        Rows given.
    """
    from .schema import PRIMARY_KEYS

    pk = PRIMARY_KEYS[table]
    cols = list(columns)
    marks = ", ".join("?" * len(cols))
    if update and set(cols) - set(pk):
        sets = ", ".join(f"{c} = COALESCE({table}.{c}, excluded.{c})" if c in keep else f"{c} = excluded.{c}"
                         for c in cols if c not in pk)
        action = f"DO UPDATE SET {sets}"
    else:
        action = "DO NOTHING"
    statement = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) ON CONFLICT ({', '.join(pk)}) {action}"
    n = 0
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH:
            db.executemany(statement, batch)
            n += len(batch)
            batch = []
    if batch:
        db.executemany(statement, batch)
        n += len(batch)
    return n


def _table_rows(table: Table, columns: list[str]) -> list[tuple]:
    """Rows of a table's columns as Python values (missing columns -> None)."""
    n = len(table)
    cols = []
    for c in columns:
        if c in table.colnames:
            col = table[c]
            values = col.filled().tolist() if hasattr(col, "filled") and getattr(col, "mask", None) is not None \
                else np.asarray(col).tolist()
            cols.append(values)
        else:
            cols.append([None] * n)
    return list(zip(*cols)) if cols else []


def _read_table(path, extname: str) -> tuple[fits.Header, Table]:
    """Primary header and a binary-table HDU of a catalog product, as plain columns (no units: fast)."""
    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[0].header
            data = hdul[extname].data
            table = Table({name: np.asarray(data[name]) for name in data.names}, copy=False)
    except (OSError, KeyError, ValueError) as exc:
        raise ArchiveError(f"{path}: unreadable {extname} table: {exc}") from exc
    return header, table


# -- quadrant images ----------------------------------------------------------------------------------
def _quadrant_rows(store: ProductStore, key: ProductKey, header: fits.Header):
    pid = _num(header, "DBPID", key.pid(), int)
    expid = _num(header, "EXPID", key.expid, int)
    jd = _num(header, "OBSJD")
    nid = _num(header, "DBNID", key.nid, int) if jd is None else nid_of(jd)
    field = _num(header, "FIELDID", key.field, int)
    programid = _num(header, "PROGRMID", None, int)
    corners = footprint_corners(header)
    ra = dec = hpx = None
    if corners is not None:
        ra, dec = image_centre(corners)
        hpx = int(hpx_of(ra, dec))
    exposure = {
        "expid": expid, "nid": nid, "night": key.night, "field": field, "fid": key.fid,
        "filtercode": key.filtercode, "programid": programid, "jd": jd, "exptime": _num(header, "EXPTIME"),
        "ra": _num(header, "TELRAD", _num(header, "RAD")), "dec": _num(header, "TELDECD", _num(header, "DECD")),
        "airmass": _num(header, "AIRMASS"), "imgtypecode": key.imgtype, "status": 1,
    }
    quad = {
        "pid": pid, "expid": expid, "field": field, "ccdid": key.ccdid, "qid": key.qid, "rcid": key.rcid,
        "fid": key.fid, "filtercode": key.filtercode, "programid": programid, "jd": jd, "nid": nid,
        "exptime": _num(header, "EXPTIME"), "ra": ra, "dec": dec, "hpx": hpx,
        "magzp": _num(header, "MAGZP"), "magzpunc": _num(header, "MAGZPUNC"), "magzprms": _num(header, "MAGZPRMS"),
        "clrcoeff": _num(header, "CLRCOEFF"), "clrcounc": _num(header, "CLRCOUNC"),
        "seeing": _num(header, "SEEING"), "maglim": _num(header, "MAGLIM"),
        "infobits": _num(header, "INFOBITS", 0, int), "status": _num(header, "STATUS", 1, int),
        "sciimg": store.relpath(key).as_posix(), "ingested_at": _now(),
    }
    if corners is not None:
        for k in range(4):
            quad[f"ra{k + 1}"], quad[f"dec{k + 1}"] = float(corners[k, 0]), float(corners[k, 1])
    return exposure, quad, corners


def _upsert_dict(db, table: str, row: dict, *, keep: tuple[str, ...] = ()) -> None:
    upsert_rows(db, table, list(row), [tuple(row.values())], keep=keep)


def _write_cover(db, pid: int, corners) -> int:
    db.execute("DELETE FROM quadimage_cover WHERE pid = ?", (pid,))
    if corners is None:
        return 0
    pix = cover_pixels(corners)
    db.executemany("INSERT INTO quadimage_cover (hpx8, pid) VALUES (?, ?)", [(int(p), pid) for p in pix])
    return len(pix)


def _insert_sources(db, pid: int, psfcat: Table) -> int:
    """Replace the sources of one image (inside the caller's transaction)."""
    db.execute("DELETE FROM sources WHERE pid = ?", (pid,))
    n = len(psfcat)
    if n == 0:
        return 0
    ra = np.asarray(psfcat["ra"], float)
    dec = np.asarray(psfcat["dec"], float)
    out = Table()
    out["sourceid"] = pid * 10**5 + np.arange(n, dtype=np.int64)
    out["pid"] = np.full(n, pid, dtype=np.int64)
    out["ra"], out["dec"], out["hpx"] = ra, dec, hpx_of(ra, dec)
    for ours, theirs in (("xpos", "x"), ("ypos", "y"), ("mag", "mag"), ("magerr", "sigmag"), ("flux", "flux"),
                         ("fluxerr", "sigflux"), ("snr", "snr"), ("chi", "chi"), ("sharp", "sharp"),
                         ("flags", "flags")):
        if theirs in psfcat.colnames:
            out[ours] = np.asarray(psfcat[theirs])
    keep = np.isfinite(ra) & np.isfinite(dec)
    out = out[keep]
    cols = out.colnames
    db.copy_rows("sources", cols, _table_rows(out, cols)) if db.engine == "postgresql" else \
        upsert_rows(db, "sources", cols, _table_rows(out, cols), update=False)
    return len(out)


def ingest_quadrant(db, store: ProductStore, key, *, sources: bool = True) -> IngestResult:
    """Ingest one quadrant-exposure: its exposure, image metadata, footprint cover and PSF catalog.

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
        A migrated database.
    store : `~ztfsds.products.ProductStore`
        Data root holding the quadrant's ``sciimg`` (and ``psfcat``).
    key : `~ztfsds.products.ProductKey` or str
        Any product of the quadrant.
    sources : bool, optional
        Also (re)load its ``psfcat`` rows into ``sources`` (when the product exists).

    Returns
    -------
    IngestResult
        Rows written per table.

    Raises
    ------
    ztfsds.errors.ProductNotFoundError
        No sciimg.
    ztfsds.errors.ArchiveError
        The database failed (nothing of this quadrant was written).
    """
    key = science_key(key)
    header = store.read_header(key)
    exposure, quad, corners = _quadrant_rows(store, key, header)
    psfcat = None
    if sources and store.exists(key.with_suffix("psfcat")):
        psfcat = _read_table(store.path(key.with_suffix("psfcat")), "PSFCAT")[1]
    result = IngestResult()
    pid = quad["pid"]
    with db.transaction():
        _upsert_dict(db, "exposures", exposure)
        if psfcat is not None:
            quad["nsources"] = len(psfcat)
        _upsert_dict(db, "quadimages", quad, keep=("diffmaglim", "ncands", "rfid"))
        result["exposures"] = result["quadimages"] = 1
        result["quadimage_cover"] = _write_cover(db, pid, corners)
        if psfcat is not None:
            result["sources"] = _insert_sources(db, pid, psfcat)
    log.info("ingested %s: %s", key.filename, dict(result))
    return result


# -- references ---------------------------------------------------------------------------------------
def ingest_reference(db, store: ProductStore, ref_key) -> IngestResult:
    """Ingest one reference image's metadata (``refimages``).

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
    store : `~ztfsds.products.ProductStore`
    ref_key : `~ztfsds.products.ProductKey` or str
        The reference (``refimg``) product, or any product of a quadrant (its reference is used).

    Returns
    -------
    IngestResult
    """
    if isinstance(ref_key, str):
        ref_key = ProductKey.parse(os.path.basename(ref_key))
    if ref_key.kind != "ref":
        ref_key = ref_key.reference("refimg")
    ref_key = ref_key.with_suffix("refimg", ".fits")
    header = store.read_header(ref_key)
    from ..products import rfid as make_rfid

    corners = footprint_corners(header)
    row = {
        "rfid": _num(header, "RFID", make_rfid(ref_key.field, ref_key.fid, 4 * (ref_key.ccdid - 1) + ref_key.qid - 1),
                     int),
        "field": ref_key.field, "fid": ref_key.fid, "filtercode": ref_key.filtercode, "ccdid": ref_key.ccdid,
        "qid": ref_key.qid, "rcid": 4 * (ref_key.ccdid - 1) + ref_key.qid - 1,
        "nframes": _num(header, "NFRAMES", None, int), "jdstart": _num(header, "JDSTART"),
        "jdend": _num(header, "JDEND"), "magzp": _num(header, "MAGZP"), "maglim": _num(header, "MAGLIM"),
        "seeing": _num(header, "SEEING"), "path": store.relpath(ref_key).as_posix(), "ingested_at": _now(),
    }
    if corners is not None:
        row["ra"], row["dec"] = image_centre(corners)
        row["hpx"] = int(hpx_of(row["ra"], row["dec"]))
        for k in range(4):
            row[f"ra{k + 1}"], row[f"dec{k + 1}"] = float(corners[k, 0]), float(corners[k, 1])
    with db.transaction():
        _upsert_dict(db, "refimages", row)
    return IngestResult(refimages=1)


# -- candidates ---------------------------------------------------------------------------------------
def ingest_candidates(db, store: ProductStore, key) -> IngestResult:
    """Ingest a quadrant's ``candidates`` product (and the quadrant image itself if it is not yet in).

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
    store : `~ztfsds.products.ProductStore`
    key : `~ztfsds.products.ProductKey` or str
        Any product of the quadrant.

    Returns
    -------
    IngestResult
        Rows written per table.
    """
    key = science_key(key)
    path = store.path(key.with_suffix("candidates"))
    if not path.is_file():
        from ..errors import ProductNotFoundError

        raise ProductNotFoundError(f"{path}: candidates product not found under data root {store.root}")
    header, cands = _read_table(path, "CANDIDATES")
    # the product's primary header is the science image's (with the subtraction's cards added)
    sci_header = header if "MAGZP" in header or not store.exists(key) else store.read_header(key)
    _, quad, _ = _quadrant_rows(store, key, sci_header)
    pid = quad["pid"]
    n = len(cands)
    if n and ("ra" not in cands.colnames or "dec" not in cands.colnames):
        corners_header = header if "CTYPE1" in header else sci_header
        if "CTYPE1" not in corners_header:
            raise ZTFSDSError(f"{path}: candidates without ra/dec and no WCS to compute them")
        import warnings

        from astropy.wcs import WCS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(corners_header, naxis=2)
        ra, dec = wcs.all_pix2world(np.asarray(cands["xpos"], float), np.asarray(cands["ypos"], float), 0)
        cands["ra"], cands["dec"] = np.mod(ra, 360.0), dec
    diffmaglim = _num(header, "DIFFMLIM")
    rows = Table()
    if n:
        tblid = np.asarray(cands["tblid"], int) if "tblid" in cands.colnames else np.arange(n)
        isdiffpos = [str(v).strip() for v in np.asarray(cands["isdiffpos"])]
        rows["candid"] = np.array([make_candid(pid, t, s) for t, s in zip(tblid, isdiffpos)], dtype=np.int64)
        rows["tblid"] = tblid
        rows["isdiffpos"] = isdiffpos
    cols = column_names("candidates")
    fixed = {"pid": pid, "jd": quad["jd"], "fid": quad["fid"], "field": quad["field"], "rcid": quad["rcid"],
             "programid": quad["programid"], "nid": quad["nid"], "diffmaglim": diffmaglim,
             "magzpsci": quad["magzp"], "magzpsciunc": quad["magzpunc"], "magzpscirms": quad["magzprms"],
             "clrcoeff": quad["clrcoeff"], "clrcounc": quad["clrcounc"], "rfid": _num(header, "RFID", None, int),
             "rbversion": header.get("RBVERSN"), "drbversion": header.get("DRBVERSN"),
             "pdiffimfilename": key.with_suffix("scimrefdiffimg").filename}
    for c in cols:
        if c in rows.colnames:
            continue
        if c in cands.colnames:
            rows[c] = np.asarray(cands[c]).astype(int) if c == "onstreak" else np.asarray(cands[c])
        elif c == "hpx" and n:
            rows[c] = hpx_of(cands["ra"], cands["dec"])
        elif n and c in fixed and c not in cands.colnames:
            rows[c] = [fixed[c]] * n
    present = [c for c in cols if c in rows.colnames]
    result = IngestResult()
    with db.transaction():
        if not db.query("SELECT 1 FROM quadimages WHERE pid = ?", (pid,)):
            if store.exists(key):
                result.update(ingest_quadrant(db, store, key, sources=False))
            else:
                raise ArchiveError(f"{db.url}: quadrant {key.filename} (pid {pid}) is not ingested and its "
                                   "sciimg is absent")
        db.execute("UPDATE quadimages SET diffmaglim = ?, ncands = ?, rfid = ? WHERE pid = ?",
                   (diffmaglim, n, fixed["rfid"], pid))
        if n:
            candids = rows["candid"].tolist()
            stale = [c for (c,) in db.query("SELECT candid FROM candidates WHERE pid = ?", (pid,))
                     if c not in set(candids)]
            if stale:
                db.executemany("DELETE FROM candidates WHERE candid = ?", [(c,) for c in stale])
            result["candidates"] = upsert_rows(db, "candidates", present, _table_rows(rows, present),
                                               keep=("objectid",))
        else:
            db.execute("DELETE FROM candidates WHERE pid = ?", (pid,))
            result["candidates"] = 0
    log.info("ingested candidates of %s: %d", key.filename, n)
    return result
