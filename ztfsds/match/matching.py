"""Source matching across epochs: every epoch's PSF catalog against the reference-image sources.

IPAC matches each quadrant-filter's epochal PSF-fit catalogs to "seeds", the sources detected on the
reference image of that field/CCD/quadrant/filter. `match_epochs` does the same:

1. the reference sources (a ``refpsfcat``) become objects ``matchid`` 0, 1, ... in catalog order, at the
   reference positions;
2. each epoch's detections are matched to the nearest reference object within ``radius`` (1.5"); an
   object takes at most one detection per epoch, the nearest, so that a blend never doubles a point;
3. detections that match no reference object form a pool (kept in the matchfile's ``transientdata``);
   detections in the pool within ``radius`` of one another are linked (friends of friends) and a group
   seen in at least ``min_new_epochs`` (2) epochs becomes a new object, at the mean position of its
   detections, with one detection per epoch (the one nearest that mean).

An update with new epochs (the monthly matchfile update) runs steps 2-3 on the new epochs only, and
re-groups the whole pool (earlier new objects' detections, earlier unmatched detections and the new
ones), so that it finds the same objects as a rebuild from all epochs. Object ids are stable: a new
object keeps the id it had, and new objects are numbered in the order of the epoch in which they were
seen for the second time (then by the declination of their first detection), the order a rebuild
from all epochs gives too.

Magnitudes stay as the epochs' PS1 calibration gave them (``magzp - 2.5 log10(psfflux)``); the relative
refinement is `ztfsds.match.relphot`. Times follow the real matchfiles: ``sourcedata.mjd`` is the
middle of the exposure, ``hjd`` the heliocentric Julian date of that instant at the source's position
(UTC scale), ``exposures.obshjd`` the heliocentric date of the exposure start at the quadrant's centre.
"""

from __future__ import annotations

import datetime
import logging
import math
from typing import Iterable, Sequence

import astropy.units as u
import numpy as np
from astropy.coordinates import get_body_barycentric
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .. import camera
from ..errors import InputError
from ..products.ids import filefracday
from .matchfile import (
    EXPOSURES_DTYPE,
    EXTRA_EXPOSURE_COLUMNS,
    SOURCEDATA_DTYPE,
    TRANSIENTDATA_DTYPE,
    MatchFile,
    empty_table,
)
from .params import BAD_EPOCH_CATFLAG, MatchParams

__all__ = [
    "match_epochs",
    "exposure_record",
    "epoch_detections",
    "reference_objects",
    "heliocentric_delay",
    "unit_vectors",
    "REFERENCE_ZP",
]

log = logging.getLogger(__name__)

#: Zero point of reference-image magnitudes in the matchfiles (attribute ``referenceZeroPoint``).
REFERENCE_ZP = 27.0

_AU_LIGHT_DAYS = float((1 * u.au).to_value(u.m) / 299792458.0 / 86400.0)
_EXPOSURE_DTYPE = np.dtype(EXPOSURES_DTYPE + EXTRA_EXPOSURE_COLUMNS)
_ROW_DTYPE = np.dtype(TRANSIENTDATA_DTYPE)
_SOURCEDATA_NAMES = [name for name, *_ in SOURCEDATA_DTYPE]


def unit_vectors(ra, dec) -> np.ndarray:
    """Cartesian unit vectors (n, 3) of positions ``ra``, ``dec`` [deg]."""
    ra = np.radians(np.asarray(ra, dtype=np.float64))
    dec = np.radians(np.asarray(dec, dtype=np.float64))
    cd = np.cos(dec)
    return np.column_stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)])


def _radec(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norm = np.sqrt(np.sum(xyz**2, axis=1))
    x, y, z = (xyz / norm[:, None]).T
    return np.mod(np.degrees(np.arctan2(y, x)), 360.0), np.degrees(np.arcsin(np.clip(z, -1, 1)))


def _chord(radius_arcsec: float) -> float:
    return 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)


def heliocentric_delay(jd, ra, dec) -> np.ndarray:
    """Heliocentric light-time correction ``HJD - JD`` of positions at one instant.

    Parameters
    ----------
    jd : float
        Julian date of the observation (UTC).
    ra, dec : array-like
        Positions [deg].

    Returns
    -------
    numpy.ndarray
        The correction [day]: the projection of the Earth's heliocentric position on each direction
        (astropy's built-in ephemeris; the observatory's 0.02 s offset from the geocentre is neglected).
    """
    t = Time(float(jd), format="jd", scale="utc")
    earth = get_body_barycentric("earth", t).xyz.to_value(u.au)
    sun = get_body_barycentric("sun", t).xyz.to_value(u.au)
    return unit_vectors(ra, dec) @ (earth - sun) * _AU_LIGHT_DAYS


def _get(header, names, default=None):
    for name in names:
        if name in header:
            value = header[name]
            if value is not None:
                return value
    return default


def exposure_record(header, *, field: int | None = None, ccdid: int | None = None, qid: int | None = None,
                    filtercode: str | None = None, center: tuple[float, float] | None = None) -> np.void:
    """One ``exposures`` row from an epoch's sciimg (or psfcat) header.

    Parameters
    ----------
    header : `~astropy.io.fits.Header` or dict
        Needs ``EXPID`` and ``OBSJD`` (or ``OBSMJD``); uses ``MAGZP``, ``MAGZPUNC``, ``MAGZPRMS``,
        ``CLRCOEFF``, ``CLRCOUNC``, ``INFOBITS``, ``MAGLIM``, ``AIRMASS``, ``EXPTIME``, ``PROGRMID``,
        ``SEEING`` [px] with ``PIXSCALE``, ``NMATCHES`` when present.
    field, ccdid, qid : int, optional
        Override ``FIELDID``, ``CCDID``/``CCD_ID``, ``QID`` of the header.
    filtercode : str, optional
        Override ``FILTER``/``FILTERID``.
    center : tuple of float, optional
        (ra, dec) [deg] where ``obshjd`` is computed; the header's ``CRVAL1/2`` (else ``RAD/DECD``) if None.

    Returns
    -------
    numpy.void
        A row of the matchfile ``exposures`` dtype (plus ztfsds's relative-calibration columns, zero).

    Raises
    ------
    ztfsds.errors.InputError
        If ``EXPID`` or the observation time is missing.
    """
    row = np.zeros((), dtype=_EXPOSURE_DTYPE)
    expid = _get(header, ("EXPID", "DBEXPID"))
    if expid is None:
        raise InputError(None, "epoch header has no EXPID")
    jd = _get(header, ("OBSJD",))
    if jd is None:
        mjd = _get(header, ("OBSMJD", "MJD-OBS"))
        if mjd is None:
            raise InputError(None, f"epoch header of EXPID {expid} has no OBSJD/OBSMJD")
        jd = float(mjd) + 2400000.5
    jd = float(jd)
    if filtercode is None:
        fid = _get(header, ("FILTERID", "FID"))
        filtercode = camera.get_filter(int(fid)).code if fid is not None else str(_get(header, ("FILTER",), "zr"))
    filt = camera.get_filter(filtercode)
    field = int(field if field is not None else _get(header, ("FIELDID", "FIELD"), 0))
    ccdid = int(ccdid if ccdid is not None else _get(header, ("CCDID", "CCD_ID"), 1))
    qid = int(qid if qid is not None else _get(header, ("QID",), 1))
    if center is None:
        center = (float(_get(header, ("CRVAL1", "RAD", "TELRA"), 0.0)),
                  float(_get(header, ("CRVAL2", "DECD", "TELDEC"), 0.0)))
    exptime = float(_get(header, ("EXPTIME",), 30.0))
    pixscale = float(_get(header, ("PIXSCALE",), 1.012))
    seeing = float(_get(header, ("SEEING",), np.nan))
    row["expid"] = int(expid)
    row["obsmjd"] = jd - 2400000.5
    row["obshjd"] = jd + float(heliocentric_delay(jd, [center[0]], [center[1]])[0])
    row["fracday"] = int(filefracday(Time(jd, format="jd", scale="utc")))
    row["exptime"] = exptime
    row["fieldid"] = field
    row["filterid"] = filt.fid
    row["rcid"] = 4 * (ccdid - 1) + (qid - 1)
    row["magzp"] = float(_get(header, ("MAGZP",), np.nan))
    row["magzpunc"] = float(_get(header, ("MAGZPUNC",), 0.0))
    row["magzprms"] = float(_get(header, ("MAGZPRMS",), 0.0))
    row["clrcoeff"] = float(_get(header, ("CLRCOEFF",), 0.0))
    row["clrcounc"] = float(_get(header, ("CLRCOUNC",), 0.0))
    row["infobits"] = int(_get(header, ("INFOBITS",), 0))
    maglim = float(_get(header, ("MAGLIM",), np.nan))
    row["limitmag"] = maglim if maglim > 0 else np.nan
    row["airmass"] = float(_get(header, ("AIRMASS",), 1.0))
    row["programid"] = int(_get(header, ("PROGRMID", "PROGRAMID"), 1))
    row["diq"] = seeing * pixscale if seeing > 0 else np.nan
    row["nps1matches"] = int(_get(header, ("NMATCHES",), 0))
    row["pcolor"] = filt.calibration_color.encode()
    row["zpmed"] = row["magzp"]
    return row


def _column(table: Table, names: Sequence[str], default=None):
    for name in names:
        if name in table.colnames:
            col = table[name]
            return np.asarray(col.filled(np.nan) if hasattr(col, "filled") else col)
    if default is None:
        raise InputError(None, f"catalog has none of the columns {', '.join(names)}")
    return np.full(len(table), default)


def epoch_detections(psfcat: Table, exposure: np.void) -> np.ndarray:
    """An epoch's PSF-fit catalog as matchfile detection rows (the ``transientdata`` dtype).

    Parameters
    ----------
    psfcat : `~astropy.table.Table`
        A ``psfcat`` product (``ra``, ``dec``, ``flux``, ``sigflux``, ``chi``, ``sharp``, ``snr``, ``flags``,
        ``x``, ``y``) or the same with matchfile names (``psfflux``, ``psffluxerr``, ``xpos``, ``ypos``,
        ``catflags``). Rows with non-finite positions or non-positive fluxes are dropped.
    exposure : numpy.void
        The epoch's `exposure_record`.

    Returns
    -------
    numpy.ndarray
        Structured rows: ``mag = magzp - 2.5 log10(psfflux)`` [mag], ``magerr`` [mag], ``mjd`` at mid-exposure,
        ``hjd`` [JD], ``catflags`` (the catalog's flags, bit 15 for an epoch with bad INFOBITS is set by
        `match_epochs`), unit vector ``x, y, z``.
    """
    ra = _column(psfcat, ("ra",)).astype(np.float64)
    dec = _column(psfcat, ("dec",)).astype(np.float64)
    flux = _column(psfcat, ("psfflux", "flux")).astype(np.float64)
    ferr = _column(psfcat, ("psffluxerr", "sigflux", "flux_err")).astype(np.float64)
    keep = np.isfinite(ra) & np.isfinite(dec) & np.isfinite(flux) & (flux > 0) & np.isfinite(ferr)
    n = int(np.count_nonzero(keep))
    rows = np.zeros(n, dtype=_ROW_DTYPE)
    ra, dec, flux, ferr = ra[keep], dec[keep], flux[keep], ferr[keep]
    magzp = float(exposure["magzp"])
    rows["ra"], rows["dec"] = ra, dec
    rows["psfflux"], rows["psffluxerr"] = flux, ferr
    # the magnitudes derive from the stored (float32) fluxes, so that a matchfile re-read gives the same
    rows["psfmag"] = magzp - 2.5 * np.log10(rows["psfflux"].astype(np.float64))
    rows["psfmagerr"] = 2.5 / math.log(10) * rows["psffluxerr"].astype(np.float64) / rows["psfflux"]
    rows["mag"], rows["magerr"] = rows["psfmag"], rows["psfmagerr"]
    rows["magerrmodel"] = rows["magerr"]
    rows["chi"] = _column(psfcat, ("chi",), 0.0)[keep]
    rows["sharp"] = _column(psfcat, ("sharp",), 0.0)[keep]
    rows["snr"] = _column(psfcat, ("snr",), 0.0)[keep] if "snr" in psfcat.colnames else flux / np.maximum(ferr, 1e-30)
    rows["xpos"] = _column(psfcat, ("xpos", "x"), np.nan)[keep]
    rows["ypos"] = _column(psfcat, ("ypos", "y"), np.nan)[keep]
    flags = _column(psfcat, ("catflags", "flags"), 0)[keep].astype(np.int64)
    rows["catflags"] = np.clip(flags, 0, 0x7FFF) & 0x7FFF
    rows["sid"] = _column(psfcat, ("sourceid", "sid"), 0)[keep].astype(np.uint64) if (
        "sourceid" in psfcat.colnames or "sid" in psfcat.colnames) else np.arange(n, dtype=np.uint64)
    rows["expid"] = exposure["expid"]
    rows["programid"] = exposure["programid"]
    jd_mid = float(exposure["obsmjd"]) + 2400000.5 + float(exposure["exptime"]) / 2.0 / 86400.0
    rows["mjd"] = jd_mid - 2400000.5
    rows["hjd"] = jd_mid + heliocentric_delay(jd_mid, ra, dec)
    xyz = unit_vectors(ra, dec)
    rows["x"], rows["y"], rows["z"] = xyz.T
    return rows


def reference_objects(refcat: Table | None) -> Table:
    """The ``sources`` rows seeded by the reference-image catalog.

    Parameters
    ----------
    refcat : `~astropy.table.Table` or None
        A ``refpsfcat`` (``ra``, ``dec``, ``mag``, ``sigmag``, ``chi``, ``sharp``, ``snr``; magnitudes at the
        reference zero point 27); None for no reference.

    Returns
    -------
    `~astropy.table.Table`
        One ``sources`` row per reference source with finite position: ``matchid`` 0..n-1, ``ra``, ``dec``,
        ``x, y, z``, ``refmag``, ``refmagerr``, ``refchi``, ``refsharp``, ``refsnr``, ``isref`` = 1.
    """
    if refcat is None or len(refcat) == 0:
        return empty_table("sources")
    ra = _column(refcat, ("ra",)).astype(np.float64)
    dec = _column(refcat, ("dec",)).astype(np.float64)
    keep = np.isfinite(ra) & np.isfinite(dec)
    out = empty_table("sources", int(np.count_nonzero(keep)))
    out["matchid"] = np.arange(len(out), dtype=np.int32)
    out["ra"], out["dec"] = ra[keep], dec[keep]
    xyz = unit_vectors(ra[keep], dec[keep])
    out["x"], out["y"], out["z"] = xyz.T
    out["refmag"] = _column(refcat, ("mag", "refmag"), np.nan)[keep]
    out["refmagerr"] = _column(refcat, ("sigmag", "magerr", "refmagerr"), np.nan)[keep]
    out["refchi"] = _column(refcat, ("chi",), 0.0)[keep]
    out["refsharp"] = _column(refcat, ("sharp",), 0.0)[keep]
    out["refsnr"] = _column(refcat, ("snr",), 0.0)[keep]
    out["isref"] = 1
    return out


def _nearest_unique(tree: cKDTree, xyz: np.ndarray, chord: float) -> tuple[np.ndarray, np.ndarray]:
    """Index of the matched object of each detection (-1: none), one detection per object: the nearest."""
    if tree.n == 0 or len(xyz) == 0:
        return np.full(len(xyz), -1, dtype=np.int64), np.zeros(len(xyz))
    dist, idx = tree.query(xyz, k=1, distance_upper_bound=chord)
    idx = np.where(np.isfinite(dist), idx, -1).astype(np.int64)
    hit = np.flatnonzero(idx >= 0)
    if len(hit):
        order = hit[np.lexsort((dist[hit], idx[hit]))]
        first = np.ones(len(order), dtype=bool)
        first[1:] = idx[order][1:] != idx[order][:-1]
        idx[order[~first]] = -1
    return idx, dist


def _group_pool(pool: np.ndarray, old_ids: np.ndarray, params: MatchParams, next_id: int
                ) -> tuple[np.ndarray, int]:
    """Link the unmatched detections into new objects; the matchid of each pool row (-1: stays transient)."""
    n = len(pool)
    matchid = np.full(n, -1, dtype=np.int64)
    if n < params.min_new_epochs:
        return matchid, next_id
    xyz = np.column_stack([pool["x"], pool["y"], pool["z"]])
    pairs = cKDTree(xyz).query_pairs(_chord(params.radius), output_type="ndarray")
    if len(pairs) == 0:
        return matchid, next_id
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # the mean position of each group, then one detection per group and epoch: the nearest to it
    sums = np.column_stack([np.bincount(labels, weights=xyz[:, k]) for k in range(3)])
    centre = sums / np.sqrt(np.sum(sums**2, axis=1))[:, None]
    dist = np.sum((xyz - centre[labels]) ** 2, axis=1)
    expid = pool["expid"].astype(np.int64)
    order = np.lexsort((np.arange(n), dist, expid, labels))
    first = np.ones(n, dtype=bool)
    first[1:] = (labels[order][1:] != labels[order][:-1]) | (expid[order][1:] != expid[order][:-1])
    kept = order[first]
    nepochs = np.bincount(labels[kept], minlength=labels.max() + 1)
    good = nepochs >= params.min_new_epochs
    kept = kept[good[labels[kept]]]
    if len(kept) == 0:
        return matchid, next_id
    # order the new groups by the epoch of their second detection, then declination and right ascension
    mjd = pool["mjd"][kept]
    byt = kept[np.lexsort((mjd, labels[kept]))]
    lab = labels[byt]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    groups = lab[starts]
    second_mjd = pool["mjd"][byt[starts + 1]]
    # ties (groups whose second detection is in the same epoch) by the first detection's position,
    # which more epochs do not move (the mean position does)
    gra, gdec = pool["ra"][byt[starts]], pool["dec"][byt[starts]]
    # ids the groups had before (the smallest old id among their detections)
    old = np.full(labels.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    has_old = old_ids[kept] >= 0
    np.minimum.at(old, labels[kept][has_old], old_ids[kept][has_old])
    ids = np.full(labels.max() + 1, -1, dtype=np.int64)
    taken = set()
    for g in groups[np.lexsort((gra, gdec, second_mjd))]:
        if old[g] != np.iinfo(np.int64).max and int(old[g]) not in taken:
            ids[g] = old[g]
            taken.add(int(old[g]))
    for g in groups[np.lexsort((gra, gdec, second_mjd))]:
        if ids[g] < 0:
            ids[g] = next_id
            next_id += 1
    matchid[kept] = ids[labels[kept]]
    return matchid, next_id


def _rows_from_sourcedata(sourcedata: Table, exposures: Table) -> np.ndarray:
    """Earlier sourcedata rows back as detection rows (raw magnitudes recomputed from the fluxes)."""
    n = len(sourcedata)
    rows = np.zeros(n, dtype=_ROW_DTYPE)
    for name in _SOURCEDATA_NAMES:
        if name in sourcedata.colnames:
            rows[name] = np.asarray(sourcedata[name])
    xyz = unit_vectors(rows["ra"], rows["dec"])
    rows["x"], rows["y"], rows["z"] = xyz.T
    _raw_mags(rows, exposures)
    rows["snr"] = rows["psfflux"] / np.maximum(rows["psffluxerr"], 1e-30)
    return rows


def _raw_mags(rows: np.ndarray, exposures: Table) -> None:
    expids = np.asarray(exposures["expid"], dtype=np.int64)
    order = np.argsort(expids)
    wanted = rows["expid"].astype(np.int64)
    pos = order[np.clip(np.searchsorted(expids, wanted, sorter=order), 0, max(len(expids) - 1, 0))] if len(
        expids) else np.zeros(len(wanted), dtype=np.int64)
    if len(wanted) and (not len(expids) or np.any(expids[pos] != wanted)):
        missing = np.setdiff1d(wanted, expids)
        raise InputError(None, f"the matchfile's detections refer to {len(missing)} EXPIDs absent from its "
                               f"exposures table (e.g. {missing[:3].tolist()}): cannot recalibrate it")
    magzp = np.asarray(exposures["magzp"], dtype=np.float64)[pos]
    flux = rows["psfflux"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rows["psfmag"] = magzp - 2.5 * np.log10(flux)
        rows["psfmagerr"] = 2.5 / math.log(10) * rows["psffluxerr"].astype(np.float64) / flux


def _as_rows(table: Table) -> np.ndarray:
    rows = np.zeros(len(table), dtype=_ROW_DTYPE)
    for name in _ROW_DTYPE.names:
        if name in table.colnames:
            rows[name] = np.asarray(table[name])
    return rows


def _default_attrs(field, ccdid, qid, filtercode, reference_image_id) -> dict:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return {
        "calibratedSinceLastMatch": np.int64(-1), "ccdID": np.int64(ccdid),
        "datetimeCalibrated": np.bytes_(b""), "datetimeMatched": np.bytes_(now.encode()),
        "fieldID": np.int64(field), "filterID": np.int64(camera.get_filter(filtercode).fid),
        "globalMaglimit": np.float32(np.nan), "goodSystematicErrorLimit": np.float64(np.inf),
        "nCalibrationSources": np.int64(0), "quadrantID": np.int64(qid),
        "rcID": np.int64(4 * (int(ccdid) - 1) + int(qid) - 1),
        "referenceImageID": np.int64(reference_image_id), "referenceZeroPoint": np.float64(REFERENCE_ZP),
        "referenceZeroPointErr": np.float64(0.0), "saturatedMagnitude": np.float64(np.inf),
    }


def match_epochs(epochs: Iterable[tuple[Table, fits.Header | dict]], *, reference: Table | None = None,
                 previous: MatchFile | None = None, field: int = 0, ccdid: int = 1, qid: int = 1,
                 filtercode: str = "zr", reference_image_id: int = 0, params: MatchParams | None = None
                 ) -> MatchFile:
    """Match epochs' PSF catalogs to the reference sources and to each other.

    Parameters
    ----------
    epochs : iterable of (`~astropy.table.Table`, header)
        Each epoch's ``psfcat`` and its sciimg header (see `exposure_record`). Epochs whose EXPID is
        already in ``previous`` are skipped.
    reference : `~astropy.table.Table`, optional
        The ``refpsfcat`` of the quadrant-filter (ignored when ``previous`` is given: its objects are kept).
    previous : MatchFile, optional
        An earlier result to update with the new epochs (the monthly matchfile update).
    field, ccdid, qid : int, optional
        The quadrant (recorded in the attributes of a new matchfile).
    filtercode : str, optional
        'zg', 'zr' or 'zi'.
    reference_image_id : int, optional
        ``referenceImageID`` attribute of a new matchfile.
    params : MatchParams, optional
        ``radius`` [arcsec], ``min_new_epochs``, ``bad_infobits``.

    Returns
    -------
    MatchFile
        ``exposures`` (sorted by ``obsmjd``), ``sources`` (reference objects first, then new ones, by
        ``matchid``; positions and reference columns only: `ztfsds.match.relphot.calibrate` fills the
        statistics), ``sourcedata`` (sorted by ``matchid``, ``mjd``) with uncalibrated magnitudes, and
        ``transientdata`` (the unmatched detections).

    Raises
    ------
    ztfsds.errors.InputError
        If two new epochs have the same EXPID or an epoch header lacks EXPID/OBSJD.
    """
    params = params or MatchParams()
    chord = _chord(params.radius)
    if previous is None:
        sources = reference_objects(reference)
        attrs = _default_attrs(field, ccdid, qid, filtercode, reference_image_id)
        exposures = np.zeros(0, dtype=_EXPOSURE_DTYPE)
        old_matched = np.zeros(0, dtype=_ROW_DTYPE)
        old_pool = np.zeros(0, dtype=_ROW_DTYPE)
        old_pool_ids = np.zeros(0, dtype=np.int64)
    else:
        attrs = dict(previous.attrs)
        field, ccdid, qid = previous.field, previous.ccdid, previous.qid
        filtercode = camera.get_filter(previous.filterid).code
        sources = previous.sources.copy()
        if "isref" not in sources.colnames:  # an IPAC matchfile: every object is a reference seed
            sources["isref"] = np.ones(len(sources), dtype=np.uint8)
        exposures = np.zeros(len(previous.exposures), dtype=_EXPOSURE_DTYPE)
        for name in _EXPOSURE_DTYPE.names:
            if name in previous.exposures.colnames:
                exposures[name] = np.asarray(previous.exposures[name])
        rows = _rows_from_sourcedata(previous.sourcedata, previous.exposures)
        isref = np.zeros(int(max(np.max(sources["matchid"], initial=-1), np.max(rows["matchid"], initial=0))) + 1,
                         dtype=bool)
        isref[np.asarray(sources["matchid"])[np.asarray(sources["isref"]) == 1]] = True
        from_ref = isref[rows["matchid"].astype(np.int64)]
        old_matched = rows[from_ref]
        transients = _as_rows(previous.transientdata)
        if len(transients):
            _raw_mags(transients, previous.exposures)
        old_pool = np.concatenate([rows[~from_ref], transients])
        old_pool_ids = np.concatenate([rows["matchid"][~from_ref].astype(np.int64),
                                       np.full(len(transients), -1, dtype=np.int64)])

    ref_mask = np.asarray(sources["isref"]) == 1
    ref_sources = sources[ref_mask]
    ref_tree = cKDTree(np.column_stack([ref_sources["x"], ref_sources["y"], ref_sources["z"]])) if len(
        ref_sources) else cKDTree(np.zeros((0, 3)))
    ref_ids = np.asarray(ref_sources["matchid"], dtype=np.int64)
    center = (float(np.median(ref_sources["ra"])), float(np.median(ref_sources["dec"]))) if len(ref_sources) else None

    known = set(int(e) for e in exposures["expid"])
    new_exposures, matched, unmatched = [], [], []
    for catalog, header in epochs:
        exp = exposure_record(header, field=field, ccdid=ccdid, qid=qid, filtercode=filtercode, center=center)
        expid = int(exp["expid"])
        if expid in known:
            log.info("EXPID %d already matched: skipped", expid)
            continue
        known.add(expid)
        rows = epoch_detections(catalog, exp)
        exp["nsources"] = len(rows)
        idx, _ = _nearest_unique(ref_tree, np.column_stack([rows["x"], rows["y"], rows["z"]]), chord)
        hit = idx >= 0
        rows["matchid"][hit] = ref_ids[idx[hit]]
        exp["nstars"] = int(np.count_nonzero(hit))
        exp["ntransients"] = int(np.count_nonzero(~hit))
        matched.append(rows[hit])
        unmatched.append(rows[~hit])
        new_exposures.append(exp)
    if new_exposures:
        exposures = np.concatenate([exposures, np.array(new_exposures, dtype=_EXPOSURE_DTYPE)])
    exposures = exposures[np.lexsort((exposures["expid"], exposures["obsmjd"]))]

    # new objects from the whole pool of unmatched detections
    new_unmatched = np.concatenate(unmatched) if unmatched else np.zeros(0, dtype=_ROW_DTYPE)
    pool = np.concatenate([old_pool, new_unmatched])
    pool_ids = np.concatenate([old_pool_ids, np.full(len(new_unmatched), -1, dtype=np.int64)])
    order = np.lexsort((pool["ra"], pool["dec"], pool["expid"]))   # deterministic whatever the history
    pool, pool_ids = pool[order], pool_ids[order]
    next_id = int(max(np.max(sources["matchid"], initial=-1), np.max(pool_ids, initial=-1))) + 1
    group_ids, _ = _group_pool(pool, pool_ids, params, next_id)
    in_object = group_ids >= 0
    pool["matchid"][in_object] = group_ids[in_object]
    pool["matchid"][~in_object] = 0

    # objects table: reference objects, then the new objects at the mean position of their detections
    new_rows = pool[in_object]
    new_ids, inverse = np.unique(new_rows["matchid"].astype(np.int64), return_inverse=True)
    new_sources = empty_table("sources", len(new_ids))
    if len(new_ids):
        sums = np.column_stack([np.bincount(inverse, weights=new_rows[c].astype(np.float64)) for c in "xyz"])
        ra, dec = _radec(sums)
        xyz = unit_vectors(ra, dec)
        new_sources["matchid"] = new_ids.astype(np.int32)
        new_sources["ra"], new_sources["dec"] = ra, dec
        new_sources["x"], new_sources["y"], new_sources["z"] = xyz.T
        for name in ("refmag", "refmagerr"):
            new_sources[name] = np.nan
    keep_sources = empty_table("sources", int(np.count_nonzero(ref_mask)))
    for name in keep_sources.colnames:
        if name in ref_sources.colnames:
            keep_sources[name] = np.asarray(ref_sources[name])
    keep_sources["isref"] = 1
    all_sources = Table(np.concatenate([keep_sources.as_array(), new_sources.as_array()]))
    all_sources.sort("matchid")

    data = np.concatenate([old_matched] + matched + [new_rows])
    data = data[np.lexsort((data["expid"], data["mjd"], data["matchid"]))]
    bad_expids = np.asarray(exposures["expid"])[(np.asarray(exposures["infobits"]).astype(np.int64)
                                                 & int(params.bad_infobits)) != 0]
    bad = np.isin(data["expid"], bad_expids)
    data["catflags"] = (data["catflags"] & 0x7FFF) | np.where(bad, BAD_EPOCH_CATFLAG, 0).astype(np.uint16)
    sourcedata = Table(data[_SOURCEDATA_NAMES])
    transients = pool[~in_object]
    transients["mag"], transients["magerr"] = transients["psfmag"], transients["psfmagerr"]
    transientdata = Table(transients)

    attrs["datetimeMatched"] = np.bytes_(
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f").encode())
    exp_table = Table(exposures)
    log.info("matched %d epochs (%d new): %d objects (%d new), %d detections, %d unmatched",
             len(exp_table), len(new_exposures), len(all_sources), len(new_ids), len(sourcedata), len(transientdata))
    return MatchFile(attrs=attrs, exposures=exp_table, sources=all_sources, sourcedata=sourcedata,
                     transients=empty_table("transients"), transientdata=transientdata)
