"""Queries of the archive: images covering a position, cone searches, candidate histories, non-detections,
object ids.

A cone search turns the cone into the nested HEALPix pixels that overlap it at an order suited to its radius
(`ztfsds.catalogs.healpix.search_order`), those into ranges of the order-14 ``hpx`` column, and runs one
index range scan per range (``UNION ALL``: an ``OR`` of ranges makes SQLite scan the whole table); the
exact great-circle distance then cuts the rows to the cone. "Which images cover (ra, dec)" is one lookup of the position's order-8 pixel in
``quadimage_cover`` and an exact point-in-footprint test (`ztfsds.archive.footprint.contains`).

Every function returns an `~astropy.table.Table` (or a scalar) and takes an open
`~ztfsds.archive.db.Database`.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from ..catalogs.healpix import cone_pixels, index_ranges, search_order
from ..errors import ArchiveError
from ..products import objectid_from_number
from .db import rows_to_table
from .footprint import angular_distance, contains, hpx_of
from .schema import COVER_ORDER, HPX_ORDER, column_names

__all__ = ["search_images", "search_references", "cone_search", "candidate_history", "candidate_histories",
           "nondetections", "nondetections_many",
           "object_for_position", "new_object_id", "record_object", "set_objectids", "hpx_ranges",
           "POSITION_TABLES"]

#: Tables with ra, dec, hpx columns that `cone_search` accepts.
POSITION_TABLES = ("sources", "candidates", "objects", "alert_packets", "quadimages", "refimages", "alert_history")
#: At most this many ``hpx`` ranges per query (a coarser order is used for more).
_MAX_RANGES = 64


def hpx_ranges(ra: float, dec: float, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """``[start, stop)`` ranges of the ``hpx`` column (order `~ztfsds.archive.schema.HPX_ORDER`) that hold
    every position within a cone.

    Parameters
    ----------
    ra, dec : float
        Cone centre [deg].
    radius_arcsec : float
        Cone radius [arcsec].

    Returns
    -------
    starts, stops : `numpy.ndarray` of int64
    """
    radius = float(radius_arcsec) / 3600.0
    order = search_order(radius, coarsest=0, finest=HPX_ORDER)
    while True:
        starts, stops = index_ranges(cone_pixels(float(ra) % 360.0, float(dec), radius, order), order, HPX_ORDER)
        if len(starts) <= _MAX_RANGES or order == 0:
            return starts, stops
        order -= 1


def _check_position(ra, dec, radius_arcsec=None):
    if ra is None or dec is None:
        raise ArchiveError("a position needs both ra and dec")
    ra, dec = float(ra), float(dec)
    if not (np.isfinite(ra) and np.isfinite(dec) and -90.0 <= dec <= 90.0):
        raise ArchiveError(f"invalid position ra={ra}, dec={dec} (deg; -90 <= dec <= 90)")
    if radius_arcsec is not None and not (np.isfinite(radius_arcsec) and radius_arcsec > 0):
        raise ArchiveError(f"invalid cone radius {radius_arcsec!r} arcsec (must be > 0)")
    return ra % 360.0, dec


def _where(where) -> tuple[str, list]:
    if where is None:
        return "", []
    if isinstance(where, str):
        return f" AND ({where})", []
    clause, params = where
    return f" AND ({clause})", list(params)


def _cone_rows(db, table: str, ra: float, dec: float, radius_arcsec: float, fetch: list[str], where=None
               ) -> tuple[list[tuple], np.ndarray]:
    """Rows (tuples of ``fetch``, which must hold ra and dec) within a cone, nearest first, and distances."""
    starts, stops = hpx_ranges(ra, dec, radius_arcsec)
    extra, extra_params = _where(where)
    # one SELECT per range, UNION ALL: SQLite plans an OR of ranges as a full table scan
    parts, params = [], []
    for a, b in zip(starts.tolist(), stops.tolist()):
        cond = "hpx = ?" if b - a == 1 else "hpx >= ? AND hpx < ?"
        parts.append(f"SELECT {', '.join(fetch)} FROM {table} WHERE {cond}{extra}")
        params.extend([a] if b - a == 1 else [a, b])
        params.extend(extra_params)
    rows = db.query(" UNION ALL ".join(parts), params)
    if not rows:
        return [], np.zeros(0)
    ira, idec = fetch.index("ra"), fetch.index("dec")
    pos = np.array([(r[ira], r[idec]) for r in rows], dtype=float)
    dist = angular_distance(ra, dec, pos[:, 0], pos[:, 1])
    keep = np.flatnonzero(dist <= radius_arcsec)
    keep = keep[np.argsort(dist[keep], kind="stable")]
    return [rows[i] for i in keep], dist[keep]


def _columns_of(table: str, columns) -> tuple[list[str], list[str]]:
    known = column_names(table)
    if columns is None:
        columns = [c for c in known if c not in ("packet",)]
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ArchiveError(f"no column {unknown} in table {table!r}")
    return list(columns), list(dict.fromkeys(list(columns) + ["ra", "dec"]))


def cone_search(db, table: str, ra: float, dec: float, radius_arcsec: float, columns=None, where=None,
                *, limit: int | None = None) -> Table:
    """Rows of a positional table within a cone, nearest first.

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
    table : str
        One of `POSITION_TABLES` ('sources', 'candidates', 'objects', 'alert_packets', ...).
    ra, dec : float
        Cone centre [deg].
    radius_arcsec : float
        Radius [arcsec].
    columns : sequence of str, optional
        Columns to return (default all but blobs); ``ra`` and ``dec`` are always fetched.
    where : str or (str, sequence), optional
        An extra SQL condition (``?`` placeholders) and its parameters, e.g. ``("jd < ?", [2459000.5])``.
    limit : int, optional
        At most this many rows (the nearest).

    Returns
    -------
    `~astropy.table.Table`
        The columns and ``dist`` [arcsec], sorted by ``dist``.
    """
    if table not in POSITION_TABLES:
        raise ArchiveError(f"cone_search: table {table!r} has no positions (one of {POSITION_TABLES})")
    ra, dec = _check_position(ra, dec, radius_arcsec)
    columns, fetch = _columns_of(table, columns)
    rows, dist = _cone_rows(db, table, ra, dec, radius_arcsec, fetch, where)
    if limit is not None:
        rows, dist = rows[:limit], dist[:limit]
    out = rows_to_table(fetch, rows)
    out = out[columns] if len(columns) else Table()
    out["dist"] = dist
    out["dist"].unit = "arcsec"
    return out


def _image_filters(filters: dict, alias: str = "q") -> tuple[str, list]:
    clauses, params = [], []
    for column, op, value in filters.values():
        if value is None:
            continue
        if op == "mask":
            clauses.append(f"({alias}.{column} & ?) = 0")
        else:
            clauses.append(f"{alias}.{column} {op} ?")
        params.append(value)
    return " AND ".join(clauses), params


def search_images(db, *, ra=None, dec=None, field=None, ccdid=None, qid=None, fid=None, jd_min=None, jd_max=None,
                  max_seeing=None, min_maglim=None, infobits_mask=None, status=None, programid=None,
                  limit: int | None = None) -> Table:
    """Quadrant images by position (their footprint contains it), field/CCD/quadrant/filter, time and quality.

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
    ra, dec : float, optional
        A position [deg]: only images whose footprint contains it.
    field, ccdid, qid, fid : int, optional
        Field, CCD (1-16), readout quadrant (1-4), filter id (1 g, 2 r, 3 i).
    jd_min, jd_max : float, optional
        Exposure start range [JD], inclusive.
    max_seeing : float, optional
        Seeing FWHM at most this [pixels].
    min_maglim : float, optional
        Limiting magnitude at least this [mag].
    infobits_mask : int, optional
        Only images with none of these INFOBITS set.
    status : int, optional
        Only this status (1 usable).
    programid : int, optional
        Only this program.
    limit : int, optional
        At most this many rows.

    Returns
    -------
    `~astropy.table.Table`
        ``quadimages`` columns, sorted by ``jd``.
    """
    filters = {"field": ("field", "=", field), "ccdid": ("ccdid", "=", ccdid), "qid": ("qid", "=", qid),
               "fid": ("fid", "=", fid), "jd_min": ("jd", ">=", jd_min), "jd_max": ("jd", "<=", jd_max),
               "max_seeing": ("seeing", "<=", max_seeing), "min_maglim": ("maglim", ">=", min_maglim),
               "infobits": ("infobits", "mask", infobits_mask), "status": ("status", "=", status),
               "programid": ("programid", "=", programid)}
    clause, params = _image_filters(filters)
    cols = ", ".join(f"q.{c}" for c in column_names("quadimages"))
    if ra is not None or dec is not None:
        ra, dec = _check_position(ra, dec)
        pix = int(hpx_of(ra, dec)) >> (2 * (HPX_ORDER - COVER_ORDER))
        sql = f"SELECT {cols} FROM quadimage_cover c JOIN quadimages q ON q.pid = c.pid WHERE c.hpx8 = ?"
        params = [pix] + params
        if clause:
            sql += " AND " + clause
    else:
        sql = f"SELECT {cols} FROM quadimages q" + (f" WHERE {clause}" if clause else "")
    sql += " ORDER BY q.jd"
    rows = db.query_table(sql, params)
    if ra is not None and len(rows):
        corners = np.stack([np.column_stack([np.asarray(rows[f"ra{k}"], float), np.asarray(rows[f"dec{k}"], float)])
                            for k in range(1, 5)], axis=1)
        rows = rows[contains(corners, np.full(len(rows), ra), np.full(len(rows), dec))]
    if limit is not None:
        rows = rows[:limit]
    return rows


def search_references(db, *, ra=None, dec=None, field=None, ccdid=None, qid=None, fid=None) -> Table:
    """Reference images by position (footprint contains it) and field/CCD/quadrant/filter.

    Returns
    -------
    `~astropy.table.Table`
        ``refimages`` columns.
    """
    filters = {"field": ("field", "=", field), "ccdid": ("ccdid", "=", ccdid), "qid": ("qid", "=", qid),
               "fid": ("fid", "=", fid)}
    clause, params = _image_filters(filters, alias="r")
    rows = db.query_table("SELECT * FROM refimages r" + (f" WHERE {clause}" if clause else "") + " ORDER BY rfid",
                          params)
    if ra is not None or dec is not None:
        ra, dec = _check_position(ra, dec)
        if len(rows):
            corners = np.stack([np.column_stack([np.asarray(rows[f"ra{k}"], float),
                                                 np.asarray(rows[f"dec{k}"], float)]) for k in range(1, 5)], axis=1)
            rows = rows[contains(corners, np.full(len(rows), ra), np.full(len(rows), dec))]
    return rows


def candidate_history(db, ra: float, dec: float, jd: float, *, days: float = 30.0,
                      radius_arcsec: float = 1.5, columns=None) -> Table:
    """Earlier candidates at a position: the detections a new alert's ``prv_candidates`` list.

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
    ra, dec : float
        Position [deg].
    jd : float
        The new candidate's time [JD]: only candidates with ``jd - days <= jd' < jd``.
    days : float, optional
        History window [days].
    radius_arcsec : float, optional
        Association radius [arcsec].
    columns : sequence of str, optional
        ``candidates`` columns to return (default all).

    Returns
    -------
    `~astropy.table.Table`
        The columns and ``dist`` [arcsec], sorted by ``jd``.
    """
    out = candidate_histories(db, [ra], [dec], [jd], days=days, radius_arcsec=radius_arcsec, columns=columns)
    del out["index"]
    return out


def candidate_histories(db, ra, dec, jd, *, days: float = 30.0, radius_arcsec: float = 1.5,
                        columns=None) -> Table:
    """`candidate_history` of many positions at once (a quadrant's alerts): one table, cheap per position.

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
    ra, dec, jd : array-like
        Positions [deg] and times [JD] of the new candidates.
    days, radius_arcsec, columns
        As in `candidate_history`.

    Returns
    -------
    `~astropy.table.Table`
        ``index`` (the position's row in the inputs), the columns and ``dist`` [arcsec], sorted by
        ``index`` then ``jd``.
    """
    columns, fetch = _columns_of("candidates", columns)
    fetch = list(dict.fromkeys(fetch + ["jd", "candid"]))
    ijd, icand = fetch.index("jd"), fetch.index("candid")
    out_rows, out_dist, out_index = [], [], []
    for k, (r, d, t) in enumerate(zip(np.atleast_1d(ra).tolist(), np.atleast_1d(dec).tolist(),
                                      np.atleast_1d(jd).tolist())):
        r, d = _check_position(r, d, radius_arcsec)
        rows, dist = _cone_rows(db, "candidates", r, d, radius_arcsec, fetch, ("jd >= ? AND jd < ?", [t - days, t]))
        order = sorted(range(len(rows)), key=lambda i: (rows[i][ijd], rows[i][icand]))
        out_rows.extend(rows[i] for i in order)
        out_dist.extend(dist[i] for i in order)
        out_index.extend([k] * len(rows))
    table = rows_to_table(fetch, out_rows)
    out = Table()
    out["index"] = np.array(out_index, dtype=np.int64)
    for c in columns:
        out[c] = table[c]
    out["dist"] = np.array(out_dist, dtype=float)
    out["dist"].unit = "arcsec"
    return out


_LIMIT_COLUMNS = ("jd", "fid", "pid", "diffmaglim", "field", "rcid", "programid", "nid", "magzpsci")


def nondetections(db, ra: float, dec: float, jd: float, *, days: float = 30.0, exclude_pids=(),
                  radius_arcsec: float = 1.5) -> Table:
    """Upper limits at a position: earlier difference images covering it with no candidate there.

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
    ra, dec : float
        Position [deg].
    jd : float
        Only images with ``jd - days <= jd' < jd`` [JD].
    days : float, optional
        Window [days].
    exclude_pids : iterable of int, optional
        Images to leave out (e.g. those of the detections already listed).
    radius_arcsec : float, optional
        A candidate within this radius [arcsec] on an image makes it a detection, not a limit.

    Returns
    -------
    `~astropy.table.Table`
        ``jd``, ``fid``, ``pid``, ``diffmaglim``, ``field``, ``rcid``, ``programid``, ``nid``, ``magzpsci``,
        sorted by ``jd``.
    """
    out = nondetections_many(db, [ra], [dec], [jd], days=days, exclude_pids=[exclude_pids],
                             radius_arcsec=radius_arcsec)
    del out["index"]
    return out


def nondetections_many(db, ra, dec, jd, *, days: float = 30.0, exclude_pids=None,
                       radius_arcsec: float = 1.5, check_candidates: bool = True) -> Table:
    """`nondetections` of many positions at once (images looked up once per order-8 pixel).

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
    ra, dec, jd : array-like
        Positions [deg] and times [JD].
    days, radius_arcsec
        As in `nondetections`.
    exclude_pids : sequence of iterables of int, optional
        Per position, images to leave out.
    check_candidates : bool, optional
        Look up the candidates within the radius to leave their images out. False when ``exclude_pids``
        already holds them (the pids of `candidate_histories` with the same radius and window): half the
        queries.

    Returns
    -------
    `~astropy.table.Table`
        ``index`` (the position's row in the inputs) and the columns of `nondetections`, by ``index``
        then ``jd``.
    """
    ra = np.array(np.atleast_1d(ra), dtype=float)
    dec = np.array(np.atleast_1d(dec), dtype=float)
    jd = np.atleast_1d(np.asarray(jd, float))
    exclude_pids = exclude_pids if exclude_pids is not None else [()] * len(ra)
    cols = ["pid", "jd", "fid", "diffmaglim", "field", "rcid", "programid", "nid", "magzp"] + \
        [f"{c}{k}" for k in range(1, 5) for c in ("ra", "dec")]
    for k in range(len(ra)):
        ra[k], dec[k] = _check_position(ra[k], dec[k])
    # positions sharing an order-8 pixel and a time share their candidate images: one query, one
    # vectorised footprint test per group
    pix = hpx_of(ra, dec) >> (2 * (HPX_ORDER - COVER_ORDER))
    groups: dict[tuple[int, float], list[int]] = {}
    for k, key in enumerate(zip(pix.tolist(), jd.tolist())):
        groups.setdefault(key, []).append(k)
    inside_of: dict[int, tuple[list, np.ndarray]] = {}
    for (p, t), members in groups.items():
        rows = db.query(f"SELECT {', '.join('q.' + c for c in cols)} FROM quadimage_cover c JOIN quadimages q "
                        "ON q.pid = c.pid WHERE c.hpx8 = ? AND q.jd >= ? AND q.jd < ? AND q.diffmaglim IS NOT NULL "
                        "ORDER BY q.jd", (p, t - days, t))
        if not rows:
            continue
        m, g = len(rows), len(members)
        corners = np.array([r_[9:17] for r_ in rows], dtype=float).reshape(m, 4, 2)
        inside = contains(np.broadcast_to(corners, (g, m, 4, 2)).reshape(g * m, 4, 2),
                          np.repeat(ra[members], m), np.repeat(dec[members], m)).reshape(g, m)
        for j, k in enumerate(members):
            inside_of[k] = (rows, inside[j])
    out_rows, out_index = [], []
    for k in range(len(ra)):
        if k not in inside_of:
            continue
        rows, inside = inside_of[k]
        if not inside.any():
            continue
        skip = {int(p) for p in exclude_pids[k]}
        if check_candidates:
            near = _cone_rows(db, "candidates", ra[k], dec[k], radius_arcsec, ["pid", "ra", "dec"],
                              ("jd >= ? AND jd < ?", [jd[k] - days, jd[k]]))[0]
            skip |= {int(p) for p, _, _ in near}
        for row, ok in zip(rows, inside):
            if ok and int(row[0]) not in skip:
                out_rows.append(row[:9])
                out_index.append(k)
    table = rows_to_table(cols[:9], out_rows)
    out = Table()
    out["index"] = np.array(out_index, dtype=np.int64)
    for c in _LIMIT_COLUMNS:
        out[c] = table["magzp" if c == "magzpsci" else c]
    return out


def object_for_position(db, ra: float, dec: float, radius_arcsec: float = 1.5) -> str | None:
    """The object id of the nearest known object (or earlier candidate with an object id) within a radius.

    Returns
    -------
    str or None
    """
    rows = cone_search(db, "objects", ra, dec, radius_arcsec, columns=["objectid"], limit=1)
    if len(rows):
        return str(rows["objectid"][0])
    rows = cone_search(db, "candidates", ra, dec, radius_arcsec, columns=["objectid"],
                       where="objectid IS NOT NULL")
    return str(rows["objectid"][0]) if len(rows) else None


def new_object_id(db, year: int) -> str:
    """A new ZTF object id ``ZTF<yy><7 letters>`` from the per-year counter (atomic on both engines).

    Parameters
    ----------
    db : `~ztfsds.archive.db.Database`
    year : int
        Year of the object's first detection.

    Returns
    -------
    str
    """
    with db.transaction():
        n = db.query("INSERT INTO object_counters (year, n) VALUES (?, 1) ON CONFLICT (year) "
                     "DO UPDATE SET n = object_counters.n + 1 RETURNING n", (int(year),))[0][0]
    return objectid_from_number(int(year), int(n) - 1)


def record_object(db, objectid: str, ra: float, dec: float, jd: float) -> None:
    """Insert an object, or add one detection to it (``ndet``, ``jdfirst``, ``jdlast``; the position kept)."""
    db.execute("INSERT INTO objects (objectid, ra, dec, hpx, ndet, jdfirst, jdlast) VALUES (?, ?, ?, ?, 1, ?, ?) "
               "ON CONFLICT (objectid) DO UPDATE SET ndet = objects.ndet + 1, "
               "jdfirst = MIN(objects.jdfirst, excluded.jdfirst), jdlast = MAX(objects.jdlast, excluded.jdlast)"
               if db.engine == "sqlite" else
               "INSERT INTO objects (objectid, ra, dec, hpx, ndet, jdfirst, jdlast) VALUES (?, ?, ?, ?, 1, ?, ?) "
               "ON CONFLICT (objectid) DO UPDATE SET ndet = objects.ndet + 1, "
               "jdfirst = LEAST(objects.jdfirst, excluded.jdfirst), jdlast = GREATEST(objects.jdlast, excluded.jdlast)",
               (objectid, float(ra), float(dec), int(hpx_of(ra, dec)), float(jd), float(jd)))


def set_objectids(db, candids, objectids) -> None:
    """Assign object ids to stored candidates."""
    db.executemany("UPDATE candidates SET objectid = ? WHERE candid = ?",
                   [(str(o), int(c)) for c, o in zip(candids, objectids)])
