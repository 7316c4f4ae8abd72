"""The alert stage: one science quadrant's candidates -> ZTF alert packets, database history, distribution.

`run_alerts` is the product runner the night runner chains after `ztfsds.subtract.runner.run_subtract`.
For one quadrant-exposure with a ``candidates`` product it

1. ingests the quadrant (image metadata, footprint, PSF catalog) and its candidates into the archive
   database (`ztfsds.archive.ingest_quadrant`, `~ztfsds.archive.ingest_candidates`; idempotent);
2. selects the candidates that become alerts (`select_alerts`: every 5-sigma candidate, positive and
   negative, except the obvious artefacts: on a streak, a failed PSF fit, a real-bogus score below
   ``min_rb``);
3. gives each an object id: the one it already has in the database (a re-run gives the same ids), else the
   known object within ``association_radius`` (1.5"), else a new ``ZTFyyaaaaaaa`` of the exposure's year
   (a block of numbers reserved from the per-year counter in one statement);
4. reads its history from the database, strictly before the exposure's ``jd`` and within
   ``history_days`` (30): the earlier detections (earlier candidates within the radius that passed the
   same selection) and the upper limits (earlier difference images whose footprint covers the position
   with no such candidate there: their ``diffmaglim``); ``ndethist``, ``jdstarthist`` (the object's
   detections since the survey start) and ``ncovhist`` (difference images covering the position since
   the survey start, this one included);
5. measures ``fp_hists``: forced PSF photometry at every candidate position on the window's earlier
   difference images (`ztfsds.photom.forced`), each image read once for all candidates of the quadrant,
   at most ``max_fp_images`` (the most recent);
6. adds the contextual associations: the 3 nearest PS1-like sources (``sgscore``, ``distpsnr``...) and the
   nearest Gaia-like ones from the calibrator catalogs under the data root (`ztfsds.catalogs`), the
   nearest source of the reference's PSF catalog (``distnr``, ``ranr``, ``decnr``...), and the nearest
   known asteroid at mid-exposure from ``<root>/catalogs/asteroids.fits`` (`known_asteroids_path`; the
   simulator publishes it, as MPC's orbit file is for IPAC) -- absent inputs leave ZTF's sentinels;
7. writes all packets into one tar per quadrant-exposure under ``<root>/alerts/<night>/``
   (`alert_tar_path`, atomically; a re-run replaces it), stores them in the alert archive
   (`ztfsds.archive.ingest_alerts`), and sends them to Kafka when ``kafka_servers`` is set (a failure is
   reported in the status message; the packets stay in the tar and the archive).

Compact packets (``config.alerts.compact``): schemaless Avro without cutouts, one ``<candid>.bin`` member
per packet in ``..._alerts_compact.tar`` with the writer schema as the member ``schema.avsc`` (readers
decode with it: `read_compact_tar`); the archive stores them with that schema, the cutouts stay in the
``candidates`` product.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import math
import tarfile
import time
from pathlib import Path

import numpy as np
from astropy.table import Table, hstack

from ..config import Config
from ..errors import AlertDistributionError, ZTFSDSError
from ..products import ProductKey, ProductStatus, ProductStore, atomic_write, ids
from ..products.quadrant import science_key
from .associations import gaia_neighbours, ps1_neighbours, reference_neighbours, solar_system
from .io import compact_packet, encode_alerts, write_alerts
from .packet import (SENTINEL, candidate_records, fp_hists_from_forced, make_alert, prv_candidate_from_candidate,
                     upper_limit_record)
from .schema import field_names, load_schema

__all__ = ["run_alerts", "select_alerts", "alert_tar_path", "known_asteroids_path", "read_compact_tar",
           "MIN_RB", "MAX_FP_IMAGES"]

log = logging.getLogger(__name__)

#: Default lowest real-bogus score (``rb``) of an alert: 0, every candidate (ZTF's stream is "a nearly
#: entirely unfiltered stream of all 5-sigma events").
MIN_RB = 0.0

#: Default most earlier difference images measured for ``fp_hists`` (the most recent of the window).
MAX_FP_IMAGES = 60

_BATCH = 500  # ids per IN (...) query


def known_asteroids_path(store: ProductStore) -> Path:
    """The known-asteroid table under a data root: ``<root>/catalogs/asteroids.fits``.

    Columns ``name``, ``ra``, ``dec`` [deg] at ``t0`` [JD], ``ra_rate`` (along RA cos Dec), ``dec_rate``
    [arcsec/min], ``vmag`` (`ztfsds.alerts.associations.asteroid_positions`); `ztfsds.sim.simulate_night`
    writes it for its sky.
    """
    return Path(store.root) / "catalogs" / "asteroids.fits"


def alert_tar_path(store: ProductStore, key, *, compact: bool = False) -> Path:
    """Where the alert tar of one quadrant-exposure goes.

    ``<root>/alerts/<night>/ztf_<filefracday>_<field>_<filtercode>_c<ccd>_o_q<qid>_alerts.tar``
    (``_alerts_compact.tar`` for compact packets).

    Examples
    --------
    >>> from ztfsds.products import ProductStore
    >>> from ztfsds.alerts.runner import alert_tar_path
    >>> p = alert_tar_path(ProductStore("/data"), "ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits")
    >>> p.as_posix()
    '/data/alerts/20200924/ztf_20200924431759_000655_zr_c13_o_q3_alerts.tar'
    """
    key = science_key(key)
    stem = key.with_suffix("alerts_compact" if compact else "alerts").filename[:-len(key.ext)]
    return store.alerts_dir(key.night) / f"{stem}.tar"


def _col(table, name, default=np.nan, dtype=float) -> np.ndarray:
    if name not in table.colnames:
        return np.full(len(table), default, dtype=dtype)
    col = table[name]
    if getattr(col, "mask", None) is not None and np.any(col.mask):
        return np.asarray(col.filled(default), dtype=dtype)
    return np.asarray(col, dtype=dtype)


def select_alerts(cands: Table, *, min_rb: float = MIN_RB) -> np.ndarray:
    """Which candidates become alerts.

    ZTF alerts on nearly every 5-sigma candidate, positive and negative, rejecting only the most obvious
    artefacts. Rejected here: candidates on a streak (``onstreak``: satellite trails and fast movers'
    trails, `ztfsds.subtract.streaks`), those whose PSF fit failed (``magpsf`` or ``sigmapsf`` not finite
    or ``sigmapsf <= 0``), and those with ``rb < min_rb``.

    Parameters
    ----------
    cands : `~astropy.table.Table`
        A ``candidates`` table (or database rows) with ``magpsf``, ``sigmapsf``, optional ``onstreak``
        and ``rb``.
    min_rb : float, optional
        Lowest real-bogus score kept (default 0: no cut).

    Returns
    -------
    numpy.ndarray of bool

    Examples
    --------
    >>> from astropy.table import Table
    >>> from ztfsds.alerts.runner import select_alerts
    >>> t = Table({"magpsf": [18.0, float("nan"), 19.0, 19.5], "sigmapsf": [0.1, 0.1, 0.2, 0.1],
    ...            "onstreak": [False, False, True, False], "rb": [0.9, 0.8, 0.9, 0.05]})
    >>> select_alerts(t).tolist(), select_alerts(t, min_rb=0.1).tolist()
    ([True, False, False, True], [True, False, False, False])
    """
    n = len(cands)
    mag, sig = _col(cands, "magpsf"), _col(cands, "sigmapsf")
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(mag) & np.isfinite(sig) & (sig > 0)
        keep &= ~_col(cands, "onstreak", 0, int).astype(bool)
        if min_rb > 0:
            keep &= _col(cands, "rb", 0.0) >= min_rb
    return keep if n else np.zeros(0, bool)


def _year(jd: float) -> int:
    return (_dt.datetime(1970, 1, 1) + _dt.timedelta(days=float(jd) - 2440587.5)).year


# -- database helpers the archive does not have -------------------------------------------------------
def _reserve_object_numbers(db, year: int, count: int) -> int:
    """Reserve ``count`` consecutive numbers of the per-year object counter; returns the first.

    Same counter as `ztfsds.archive.new_object_id` (whose n-th id has number n - 1), in one statement.
    """
    with db.transaction():
        n = db.query("INSERT INTO object_counters (year, n) VALUES (?, ?) ON CONFLICT (year) "
                     "DO UPDATE SET n = object_counters.n + excluded.n RETURNING n", (int(year), int(count)))[0][0]
    return int(n) - int(count)


def _chunks(values, size=_BATCH):
    values = list(values)
    for i in range(0, len(values), size):
        yield values[i:i + size]


def _known_objects(db, ra, dec, radius_arcsec) -> Table:
    """Objects (``objectId``, ``ra``, ``dec``) that may lie within ``radius_arcsec`` of any position."""
    from ..archive import cone_search
    from ..archive.footprint import angular_distance

    if not len(ra):
        return Table({"objectId": np.zeros(0, str), "ra": np.zeros(0), "dec": np.zeros(0)})
    # one cone round all positions: the unit vector mean
    v = np.column_stack([np.cos(np.radians(dec)) * np.cos(np.radians(ra)),
                         np.cos(np.radians(dec)) * np.sin(np.radians(ra)), np.sin(np.radians(dec))]).sum(0)
    ra0 = float(np.degrees(np.arctan2(v[1], v[0])) % 360.0)
    dec0 = float(np.degrees(np.arctan2(v[2], math.hypot(v[0], v[1]))))
    radius = float(np.max(angular_distance(ra0, dec0, ra, dec))) + 2 * radius_arcsec
    rows = cone_search(db, "objects", ra0, dec0, radius, columns=["objectid", "ra", "dec"])
    return Table({"objectId": np.asarray(rows["objectid"]).astype(str), "ra": np.asarray(rows["ra"], float),
                  "dec": np.asarray(rows["dec"], float)})


def _assign_ids(db, candids, ra, dec, jd, radius_arcsec) -> np.ndarray:
    """Object ids of a quadrant's alert candidates (kept from the database when already assigned)."""
    from ..archive import record_object, set_objectids
    from .associations import assign_object_ids

    out = np.array([""] * len(candids), dtype=object)
    have = {}
    for chunk in _chunks(candids):
        marks = ", ".join("?" * len(chunk))
        have.update({int(c): o for c, o in db.query(
            f"SELECT candid, objectid FROM candidates WHERE candid IN ({marks}) AND objectid IS NOT NULL", chunk)})
    for i, c in enumerate(candids):
        out[i] = have.get(int(c), "") or ""
    todo = np.flatnonzero(out == "")
    if not len(todo):
        return out.astype(str)
    known = _known_objects(db, ra[todo], dec[todo], radius_arcsec)
    year = _year(jd)
    trial, new = assign_object_ids(ra[todo], dec[todo], known, year=year, next_number=0, radius=radius_arcsec)
    if len(new):
        first = _reserve_object_numbers(db, year, len(new))
        trial, new = assign_object_ids(ra[todo], dec[todo], known, year=year, next_number=first,
                                       radius=radius_arcsec)
    out[todo] = trial
    with db.transaction():
        set_objectids(db, [int(candids[i]) for i in todo], [str(out[i]) for i in todo])
        for i in todo:
            record_object(db, str(out[i]), float(ra[i]), float(dec[i]), float(jd))
    return out.astype(str)


def _history_counts(db, objectids, jd) -> dict:
    """``{objectid: (ndet, jdfirst)}`` of the objects' candidates with ``jd' <= jd`` (since the survey start)."""
    out = {}
    for chunk in _chunks(sorted(set(objectids))):
        marks = ", ".join("?" * len(chunk))
        for oid, n, first in db.query(f"SELECT objectid, COUNT(*), MIN(jd) FROM candidates WHERE objectid IN "
                                      f"({marks}) AND jd <= ? GROUP BY objectid", list(chunk) + [float(jd)]):
            out[str(oid)] = (int(n), float(first))
    return out


_IMAGE_COLUMNS = ("pid", "jd", "fid", "diffmaglim", "field", "rcid", "programid", "nid", "magzp", "magzpunc",
                  "magzprms", "clrcoeff", "clrcounc", "sciimg")


def _covering_images(db, ra, dec, jd) -> list[list[tuple]]:
    """Per position, the difference images (``quadimages`` rows with a ``diffmaglim``) whose footprint
    contains it, with ``jd' <= jd``, as tuples of `_IMAGE_COLUMNS`, by ``jd``."""
    from ..archive.footprint import contains, hpx_of
    from ..archive.schema import COVER_ORDER, HPX_ORDER

    corner_cols = [f"{c}{k}" for k in range(1, 5) for c in ("ra", "dec")]
    cols = list(_IMAGE_COLUMNS) + corner_cols
    nimg = len(_IMAGE_COLUMNS)
    pix = hpx_of(ra, dec) >> (2 * (HPX_ORDER - COVER_ORDER))
    out: list[list[tuple]] = [[] for _ in range(len(ra))]
    groups: dict[int, list[int]] = {}
    for k, p in enumerate(pix.tolist()):
        groups.setdefault(p, []).append(k)
    for p, members in groups.items():
        rows = db.query(f"SELECT {', '.join('q.' + c for c in cols)} FROM quadimage_cover c JOIN quadimages q "
                        "ON q.pid = c.pid WHERE c.hpx8 = ? AND q.jd <= ? AND q.diffmaglim IS NOT NULL "
                        "AND q.ra1 IS NOT NULL ORDER BY q.jd, q.pid", (int(p), float(jd)))
        if not rows:
            continue
        m, g = len(rows), len(members)
        corners = np.array([r[nimg:] for r in rows], dtype=float).reshape(m, 4, 2)
        inside = contains(np.broadcast_to(corners, (g, m, 4, 2)).reshape(g * m, 4, 2),
                          np.repeat(ra[members], m), np.repeat(dec[members], m)).reshape(g, m)
        for j, k in enumerate(members):
            out[k] = [rows[i][:nimg] for i in np.flatnonzero(inside[j])]
    return out


_PRV_DB = tuple(f for f in field_names("prv_candidate") if f not in
                ("programpi", "classtar", "magfromlim", "aimagerat", "bimagerat", "ssdistnr", "ssmagnr",
                 "ssnamenr", "ranr", "decnr"))


def _detections(db, ra, dec, jd, days, radius, min_rb) -> list[list[dict]]:
    """Per position, the earlier alert-worthy candidates within ``radius`` as ``prv_candidate`` records."""
    from ..archive import candidate_histories

    columns = list(dict.fromkeys(_PRV_DB + ("onstreak",)))
    hist = candidate_histories(db, ra, dec, np.full(len(ra), jd), days=days, radius_arcsec=radius,
                               columns=columns)
    out: list[list[dict]] = [[] for _ in range(len(ra))]
    if not len(hist):
        return out
    hist = hist[select_alerts(hist, min_rb=min_rb)]
    values = {c: hist[c].tolist() for c in columns}
    index = hist["index"].tolist()
    for r in range(len(index)):
        rec = {c: values[c][r] for c in _PRV_DB}
        for c in ("xpos", "ypos"):  # the database holds 0-based pixel positions, the packets 1-based
            if rec[c] is not None:
                rec[c] = float(rec[c]) + 1.0
        fwhm, magap, lim = rec.get("fwhm"), rec.get("magap"), rec.get("diffmaglim")
        with np.errstate(invalid="ignore", divide="ignore"):
            if fwhm and rec.get("aimage") is not None:
                rec["aimagerat"] = float(rec["aimage"]) / float(fwhm)
                rec["bimagerat"] = float(rec["bimage"]) / float(fwhm) if rec.get("bimage") is not None else None
            if magap is not None and lim is not None:
                rec["magfromlim"] = float(lim) - float(magap)
        rec["isdiffpos"] = str(rec["isdiffpos"]).strip() or None
        out[index[r]].append(prv_candidate_from_candidate(rec))
    return out


def _limit_record(row, rbversion: str, cache: dict) -> dict:
    """The upper-limit record of one image (one shared dict per image: packets encode it once)."""
    pid = int(row[0])
    rec = cache.get(pid)
    if rec is None:
        pid, jd, fid, lim, field, rcid, programid, nid, magzp, magzpunc, magzprms, clr, clrunc, sciimg = row
        try:
            diffname = ProductKey.parse(Path(str(sciimg)).name).with_suffix("scimrefdiffimg").filename
        except ZTFSDSError:
            diffname = None
        rec = cache[pid] = upper_limit_record(
            jd, fid, pid, lim, programid=int(programid if programid is not None else 1), rbversion=rbversion,
            field=field, rcid=rcid, nid=nid, pdiffimfilename=diffname, magzpsci=magzp, magzpsciunc=magzpunc,
            magzpscirms=magzprms, clrcoeff=clr, clrcounc=clrunc)
    return rec


def _forced_histories(store, images, ra, dec, ranr, decnr, *, max_images: int) -> list[list[dict]]:
    """Per position, ``fp_hist`` records on the given earlier difference images (each read once)."""
    from ..photom.forced import _image_rows  # the service's per-image measurement (all positions at once)

    out: list[list[dict]] = [[] for _ in range(len(ra))]
    by_pid: dict[int, tuple] = {}
    members: dict[int, list[int]] = {}
    for k, rows in enumerate(images):
        for row in rows:
            by_pid[int(row[0])] = row
            members.setdefault(int(row[0]), []).append(k)
    recent = sorted(by_pid, key=lambda p: by_pid[p][1])[-max_images:] if max_images > 0 else []
    for pid in recent:
        try:
            key = ProductKey.parse(Path(str(by_pid[pid][13])).name).with_suffix("scimrefdiffimg")
        except ZTFSDSError:
            continue
        if not store.exists(key):
            continue
        sel = np.asarray(members[pid])
        try:
            rows = _image_rows(store, key, "diff", ra[sel], dec[sel], sel, fit_radius=None, max_bad_frac=0.5)
        except (ZTFSDSError, OSError) as exc:
            log.warning("fp_hists: %s not measured (%s)", key.filename, exc)
            continue
        for row in rows:
            out[int(row["index"])].append(row)
    result = []
    for k, rows in enumerate(out):
        result.append(fp_hists_from_forced(rows, ranr=float(ranr[k]), decnr=float(decnr[k])) if rows else [])
    return result


def _catalog_associations(store, header, ra, dec, shape) -> list[Table]:
    """PS1 and Gaia neighbours from the calibrator catalogs under the data root (sentinels without them)."""
    import warnings

    import astropy.units as u
    from astropy.wcs import WCS, FITSFixedWarning

    from ..catalogs import query_for_wcs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, naxis=2)
    epoch = float(header["OBSJD"]) if "OBSJD" in header else None
    out = []
    for kind, margin, func, empty in (
            ("ps1", 30.0, ps1_neighbours, Table({"objid": np.zeros(0, np.int64), "ra": [], "dec": []})),
            ("gaia", 90.0, gaia_neighbours, Table({"ra": [], "dec": [], "phot_g_mean_mag": []}))):
        try:
            cat = query_for_wcs(store, kind, wcs, shape, margin=margin * u.arcsec, epoch=epoch)
        except ZTFSDSError as exc:
            log.info("alerts: no %s catalog for %s (%s): sentinels", kind, header.get("FILENAME"), exc)
            cat = empty
        out.append(func(ra, dec, cat))
    return out


def _asteroid_associations(store, ra, dec, jd_mid) -> Table:
    path = known_asteroids_path(store)
    if path.is_file():
        try:
            known = Table.read(path)
            return solar_system(ra, dec, jd_mid, known)
        except (OSError, ValueError, ZTFSDSError) as exc:
            log.warning("alerts: unreadable known-asteroid table %s (%s): sentinels", path, exc)
    return Table({"ssdistnr": np.full(len(ra), SENTINEL), "ssmagnr": np.full(len(ra), SENTINEL),
                  "ssnamenr": np.array(["null"] * len(ra), dtype=str)})


def _reference_associations(store, key, ra, dec, pixscale) -> Table | None:
    path = store.path(key.reference("refpsfcat"))
    if not path.is_file():
        return None
    try:
        refcat = Table.read(path, hdu="PSFCAT")
    except (OSError, KeyError, ValueError) as exc:
        log.warning("alerts: unreadable reference catalog %s (%s)", path, exc)
        return None
    ok = np.isfinite(np.asarray(refcat["ra"], float)) & np.isfinite(np.asarray(refcat["dec"], float))
    return reference_neighbours(ra, dec, refcat[ok], pixscale=pixscale)


def _schema_json(schema) -> str:
    """The JSON text of a parsed schema, as a container file embeds it."""
    import fastavro

    buf = io.BytesIO()
    fastavro.writer(buf, schema, [], codec="null")
    buf.seek(0)
    text = fastavro.reader(buf).metadata["avro.schema"]
    return text.decode() if isinstance(text, bytes) else text


def _write_compact_tar(packets, path: Path, schema) -> list[bytes]:
    """Compact packets (schemaless, no cutouts) into a tar with the schema as ``schema.avsc``."""
    from .io import write_compact

    blobs = [write_compact(p, schema) for p in packets]
    now = int(time.time())
    with atomic_write(path, fsync=True) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            members = [("schema.avsc", _schema_json(schema).encode())]
            members += [(f"{int(p['candid'])}.bin", b) for p, b in zip(packets, blobs)]
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), now, 0o644
                tar.addfile(info, io.BytesIO(data))
    return blobs


def read_compact_tar(path) -> list[dict]:
    """The packets of a compact alert tar (`run_alerts` with ``compact``), decoded with its ``schema.avsc``.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    list of dict
        Packets (cutouts null), in the tar's order.

    Raises
    ------
    ztfsds.errors.AlertPacketError
        No ``schema.avsc`` member, or a member that does not decode with it.
    """
    import fastavro

    from ..errors import AlertPacketError
    from .io import read_compact

    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    if "schema.avsc" not in members:
        raise AlertPacketError(path, "compact alert tar without its schema.avsc member")
    schema = fastavro.parse_schema(json.loads(members.pop("schema.avsc")))
    return [read_compact(data, schema) for name, data in members.items() if name.endswith(".bin")]


def _read_candidates(store, key):
    from astropy.io import fits

    path = store.path(key.with_suffix("candidates"))
    if not path.is_file():
        raise ZTFSDSError(f"{path}: no candidates product (run the subtraction first)")
    with fits.open(path, memmap=False) as hdul:
        header = hdul[0].header.copy()
        data = hdul["CANDIDATES"].data
        cands = Table({name: np.asarray(data[name]) for name in data.names}) if data is not None else Table()
        stamps = np.asarray(hdul["CUTOUTS"].data, np.float32) if "CUTOUTS" in hdul and \
            hdul["CUTOUTS"].data is not None else None
    if "isdiffpos" in cands.colnames:
        cands["isdiffpos"] = np.char.strip(np.asarray(cands["isdiffpos"]).astype(str))
    return header, cands, stamps


def _positions(cands, header):
    if "ra" in cands.colnames and "dec" in cands.colnames:
        return np.asarray(cands["ra"], float), np.asarray(cands["dec"], float)
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, naxis=2)
    ra, dec = wcs.all_pix2world(np.asarray(cands["xpos"], float), np.asarray(cands["ypos"], float), 0)
    return np.mod(np.asarray(ra, float), 360.0), np.asarray(dec, float)


def run_alerts(key, store: ProductStore, config: Config | None = None, *, db=None, min_rb: float = MIN_RB,
               max_fp_images: int = MAX_FP_IMAGES) -> ProductStatus:
    """Alert packets of one science quadrant: database ingestion, object ids, history, fp_hists,
    associations, the quadrant's tar file, the alert archive and Kafka (see the module notes).

    Parameters
    ----------
    key : `~ztfsds.products.ProductKey` or str
        The science quadrant (any of its products); it needs its ``candidates`` product
        (`ztfsds.subtract.runner.run_subtract`) and its ``sciimg``.
    store : `~ztfsds.products.ProductStore`
        The data root.
    config : `~ztfsds.config.Config`, optional
        ``[alerts]`` (``history_days`` [day], ``association_radius`` [arcsec], ``compact``,
        ``kafka_servers``, ``schema_version``) and ``[archive]`` (``database_url``).
    db : `~ztfsds.archive.Database`, optional
        An open database (else ``config.archive.database_url``, or the SQLite file of the data root, is
        opened, migrated and closed here).
    min_rb : float, optional
        Lowest ``rb`` of an alert (`select_alerts`; default `MIN_RB`, no cut).
    max_fp_images : int, optional
        Most earlier difference images measured for ``fp_hists`` (the most recent of the window).

    Returns
    -------
    `~ztfsds.products.ProductStatus`
        ``outputs``: the tar file. ``message``: the number of alerts (positive / negative), of
        candidates, the tar path, and any Kafka failure. Not ``ok`` (nothing written) when the
        candidates product or the sciimg is missing or the database fails.
    """
    config = config or Config()
    params = config.alerts
    start = time.perf_counter()
    name = getattr(key, "filename", str(key))
    own_db = db is None
    timings = {}
    clock = [time.perf_counter()]

    def lap(step):
        now = time.perf_counter()
        timings[step] = now - clock[0]
        clock[0] = now

    try:
        key = science_key(key)
        name = key.filename
        header, cands, stamps = _read_candidates(store, key)
        if own_db:
            from ..archive import connect, migrate

            db = connect(config.archive.database_url or None, store=store)
            migrate(db)
        from ..archive import ingest_candidates, ingest_quadrant, ingest_reference

        ingest_quadrant(db, store, key, sources=True)
        ingest_candidates(db, store, key)
        if store.exists(key.reference("refimg")):
            ingest_reference(db, store, key.reference("refimg"))
        lap("ingest")
        sci_header = store.read_header(key)
        for card in ("DIFFMLIM", "RFID", "NFRAMREF", "RFJDSTRT", "RFJDEND", "RBVERSN", "DRBVERSN"):
            if card not in header and card in sci_header:
                header[card] = sci_header[card]
        for card in sci_header:  # the candidates header is the science one plus the subtraction's cards
            if card not in header and card not in ("COMMENT", "HISTORY", ""):
                header[card] = sci_header[card]
    except ZTFSDSError as exc:
        log.error("alerts %s: %s", name, exc)
        if own_db and db is not None:
            db.close()
        return ProductStatus("alerts", name, ok=False, message=str(exc), elapsed=time.perf_counter() - start)
    try:
        return _run(key, store, params, db, header, cands, stamps, min_rb, max_fp_images, start, lap, timings)
    except ZTFSDSError as exc:
        log.error("alerts %s: %s", name, exc)
        return ProductStatus("alerts", name, ok=False, message=str(exc), elapsed=time.perf_counter() - start)
    finally:
        if own_db:
            db.close()


def _run(key, store, params, db, header, cands, stamps, min_rb, max_fp_images, start, lap, timings):
    from ..archive import ingest_alerts

    jd = float(header["OBSJD"])
    jd_mid = jd + float(header.get("EXPTIME", 30.0)) / 2.0 / 86400.0
    pid = int(header["DBPID"]) if int(header.get("DBPID", 0) or 0) > 0 else key.pid()
    programid = int(header.get("PROGRMID", 1) or 1)
    radius, days = float(params.association_radius), float(params.history_days)
    keep = select_alerts(cands, min_rb=min_rb) if len(cands) else np.zeros(0, bool)
    rows = np.flatnonzero(keep)
    sel = cands[rows]
    n = len(sel)
    schema = load_schema(params.schema_version)
    tar = alert_tar_path(store, key, compact=params.compact)
    packets = []
    if n:
        ra, dec = _positions(sel, header)
        tblid = _col(sel, "tblid", 0, int) if "tblid" in sel.colnames else rows
        candids = np.array([ids.candid(pid, int(t), str(s)) for t, s in zip(tblid, sel["isdiffpos"])], np.int64)
        objectids = _assign_ids(db, candids, ra, dec, jd, radius)
        lap("objectids")
        # history: earlier detections and limits in the window; counts since the survey start
        detections = _detections(db, ra, dec, jd, days, radius, min_rb)
        images = _covering_images(db, ra, dec, jd)
        counts = _history_counts(db, objectids, jd)
        rbversion = str(header.get("RBVERSN", ""))
        cache: dict = {}
        prv, window_images = [], []
        for k in range(n):
            det_pids = {int(r["pid"]) for r in detections[k]}
            win = [r for r in images[k] if jd - days <= float(r[1]) < jd]
            window_images.append(win)
            limits = [_limit_record(r, rbversion, cache) for r in win if int(r[0]) not in det_pids]
            prv.append(detections[k] + limits)
        lap("history")
        hist = Table()
        hist["ndethist"] = np.array([counts.get(o, (1, jd))[0] for o in objectids], np.int32)
        hist["jdstarthist"] = np.array([counts.get(o, (1, jd))[1] for o in objectids], float)
        hist["jdendhist"] = np.full(n, jd)
        hist["ncovhist"] = np.array([max(len(images[k]), 1) for k in range(n)], np.int32)
        pixscale = float(header.get("PIXSCALE", 1.012))
        shape = (int(header.get("NAXIS2", 3080)), int(header.get("NAXIS1", 3072)))
        parts = _catalog_associations(store, header, ra, dec, shape)
        parts.append(_asteroid_associations(store, ra, dec, jd_mid))
        refnb = _reference_associations(store, key, ra, dec, pixscale)
        if refnb is not None:
            parts.append(refnb)
        parts.append(hist)
        assoc = hstack(parts, join_type="exact", metadata_conflicts="silent")
        lap("associations")
        ranr = _col(assoc, "ranr", SENTINEL) if "ranr" in assoc.colnames else np.full(n, SENTINEL)
        decnr = _col(assoc, "decnr", SENTINEL) if "decnr" in assoc.colnames else np.full(n, SENTINEL)
        fp = _forced_histories(store, window_images, ra, dec, ranr, decnr, max_images=max_fp_images)
        lap("fp_hists")
        sel_pos = Table(sel, copy=False)
        sel_pos["ra"], sel_pos["dec"] = ra, dec
        records = candidate_records(sel_pos, header, header, associations=assoc, programid=programid)
        for k, rec in enumerate(records):
            cut = (None, None, None) if stamps is None or params.compact else tuple(stamps[rows[k]])
            packets.append(make_alert(rec, objectid=str(objectids[k]), prv_candidates=prv[k], fp_hists=fp[k],
                                      cutouts=cut, schemavsn=params.schema_version))
        lap("packets")
    candids_all = [int(p["candid"]) for p in packets]
    if params.compact:
        bodies = _write_compact_tar(packets, tar, schema)
    else:
        encoded = encode_alerts(packets, schema)
        write_alerts([(c, data) for c, data, _ in encoded], tar, schema)
        bodies = [body for _, _, body in encoded]
    lap("tar")
    # the archive keeps the latest packets of a quadrant: a re-run replaces them
    with db.transaction():
        for chunk in _chunks(candids_all):
            db.execute(f"DELETE FROM alert_packets WHERE candid IN ({', '.join('?' * len(chunk))})", chunk)
    if packets:
        # the schemaless bodies with their schema: one schema parse, not one per packet file
        ingest_alerts(db, b"".join(bodies), schema=_schema_json(schema))
    lap("archive")
    npos = sum(1 for p in packets if p["candidate"]["isdiffpos"] in ("t", "1"))
    message = (f"{len(packets)} alerts ({npos} positive, {len(packets) - npos} negative) of {len(cands)} "
               f"candidates -> {tar}")
    if params.kafka_servers and packets:
        from .kafka import send_alerts, topic_name

        topic = topic_name(jd, programid)
        try:
            sent = send_alerts([compact_packet(p) if params.compact else p for p in packets], params.kafka_servers,
                               topic, schema=schema)
            message += f"; {sent} sent to Kafka topic {topic}"
        except AlertDistributionError as exc:
            log.warning("alerts %s: Kafka distribution failed: %s", key.filename, exc)
            message += f"; Kafka distribution failed ({exc}); the packets are in the tar and the archive"
        lap("kafka")
    elapsed = time.perf_counter() - start
    log.info("alerts %s: %s in %.2f s (%s)", key.filename, message, elapsed,
             ", ".join(f"{k} {v:.3f}" for k, v in timings.items()))
    status = ProductStatus("alerts", key.filename, ok=True, message=message + f" ({elapsed:.2f} s)",
                           outputs=[tar], elapsed=elapsed)
    status.timings = dict(timings)  # per-step wall times [s] (not a dataclass field: for benchmarks)
    return status
