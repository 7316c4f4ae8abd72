"""Contextual associations of alert candidates: PS1 and Gaia neighbours, known asteroids, reference
sources and object ids.

All functions are pure (positions and catalog tables in, one row per candidate out, with the candidate
field names of the alert schema, ready to ``hstack`` and pass to
`~ztfsds.alerts.packet.candidate_records`):

* `ps1_neighbours`: the 3 nearest sources of a PS1-like catalog (`ztfsds.catalogs` ``'ps1'`` schema:
  ``objid``, ``ra``, ``dec``, ``gmag``, ``rmag``, ``imag``, ``zmag``, ``sgscore``) within 30": ``objectidps1..3``,
  ``sgmag1..3``, ``srmag1..3``, ``simag1..3``, ``szmag1..3``, ``sgscore1..3``, ``distpsnr1..3`` [arcsec] and
  ``nmtchps`` (the number within 30"). ``sgscore`` is the Tachibana & Miller (2018) star/galaxy score
  (1 = star); the simulator's `~ztfsds.sim.sky.ps1_like` catalog carries its analogue, real PS1 extracts
  need the PS1-PSC table joined in (NaN -> -999 otherwise).
* `gaia_neighbours`: ``neargaia``/``maggaia`` (nearest Gaia source within 90") and ``neargaiabright``/
  ``maggaiabright`` (nearest with G < 14).
* `solar_system`: the nearest known asteroid within 30" at the exposure's mid-time: ``ssdistnr`` [arcsec],
  ``ssmagnr`` (V) and ``ssnamenr``. The known asteroids are an input, as MPC's orbit file is for IPAC:
  a table with ``name``, ``ra``, ``dec`` [deg] at ``t0`` [JD], ``ra_rate`` (along RA cos Dec),
  ``dec_rate`` [arcsec/min] and ``vmag`` (linear motion, fine over a night), or a callable giving
  ``name``, ``ra``, ``dec``, ``vmag`` at a JD. `asteroids_from_sky` builds the table from the
  simulator's sky (its catalog of asteroids, not its measurement code).
* `reference_neighbours`: the nearest source of the reference PSF catalog within 30": ``distnr`` [px],
  ``ranr``, ``decnr``, ``magnr``, ``sigmagnr``, ``chinr``, ``sharpnr``.
* `match_objects` / `assign_object_ids`: ZTF object ids by positional association (1.5") with known
  objects, new ``ZTFyyaaaaaaa`` ids for the rest.

Absent neighbours get ZTF's sentinels: -999 (floats and ids) and ``'null'`` (``ssnamenr``).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Column, Table

from ..errors import InputError
from ..products import ids

__all__ = ["ps1_neighbours", "gaia_neighbours", "solar_system", "asteroids_from_sky", "asteroid_positions",
           "reference_neighbours", "match_objects", "assign_object_ids", "PS1_RADIUS", "GAIA_RADIUS",
           "GAIA_BRIGHT", "SS_RADIUS", "OBJECT_RADIUS"]

#: Search radius of the PS1 neighbours [arcsec].
PS1_RADIUS = 30.0
#: Search radius of the Gaia neighbours [arcsec].
GAIA_RADIUS = 90.0
#: G magnitude below which a Gaia source is "bright" (``neargaiabright``) [mag].
GAIA_BRIGHT = 14.0
#: Search radius of known solar-system objects [arcsec].
SS_RADIUS = 30.0
#: Association radius of candidates with known objects [arcsec].
OBJECT_RADIUS = 1.5

_SENTINEL = -999.0
_ARCSEC_PER_RAD = 180.0 / np.pi * 3600.0


def _unit_vectors(ra, dec) -> np.ndarray:
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    cd = np.cos(dec)
    return np.column_stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)])


def _chord(arcsec: float) -> float:
    return 2.0 * np.sin(np.radians(arcsec / 3600.0) / 2.0)


def _arcsec(chord) -> np.ndarray:
    return 2.0 * np.arcsin(np.clip(np.asarray(chord, float) / 2.0, 0.0, 1.0)) * _ARCSEC_PER_RAD


def _nearest(ra, dec, cat_ra, cat_dec, radius: float, k: int):
    """Indices (n, k) into the catalog (-1 beyond ``radius``) and separations (n, k) [arcsec] (NaN)."""
    from scipy.spatial import cKDTree

    ra, dec = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    n, m = len(ra), len(cat_ra)
    idx = np.full((n, k), -1, np.int64)
    sep = np.full((n, k), np.nan)
    if n == 0 or m == 0:
        return idx, sep, None, None
    tree = cKDTree(_unit_vectors(cat_ra, cat_dec))
    pts = _unit_vectors(ra, dec)
    d, j = tree.query(pts, k=min(k, m), distance_upper_bound=_chord(radius))
    d, j = np.asarray(d).reshape(n, -1), np.asarray(j).reshape(n, -1)
    ok = np.isfinite(d) & (j < m)
    idx[:, :d.shape[1]] = np.where(ok, j, -1)
    sep[:, :d.shape[1]] = np.where(ok, _arcsec(np.where(ok, d, 0.0)), np.nan)
    return idx, sep, tree, pts


def _pick(values, idx, fill=_SENTINEL) -> np.ndarray:
    values = np.asarray(values, float)
    out = np.where(idx >= 0, values[np.clip(idx, 0, max(len(values) - 1, 0))] if len(values) else fill, fill)
    return np.where(np.isfinite(out), out, fill)


def _cat_column(catalog, name, n):
    if name in catalog.colnames:
        col = catalog[name]
        return np.asarray(col.filled(np.nan) if hasattr(col, "filled") and col.dtype.kind == "f" else col, float)
    return np.full(n, np.nan)


def ps1_neighbours(ra, dec, catalog: Table, *, radius: float = PS1_RADIUS) -> Table:
    """The three nearest PS1-like sources of each candidate (the alert's PS1 fields).

    Parameters
    ----------
    ra, dec : array-like
        Candidate positions [deg].
    catalog : `~astropy.table.Table`
        PS1-like catalog (``objid``, ``ra``, ``dec`` [deg], ``gmag``, ``rmag``, ``imag``, optional ``zmag``
        and ``sgscore``), e.g. `ztfsds.catalogs` ``'ps1'`` tables or `~ztfsds.sim.sky.ps1_like`.
    radius : float, optional
        Search radius [arcsec].

    Returns
    -------
    `~astropy.table.Table`
        One row per candidate: ``objectidps1..3`` (int64), ``sgmag1..3``, ``srmag1..3``, ``simag1..3``,
        ``szmag1..3`` [mag], ``sgscore1..3``, ``distpsnr1..3`` [arcsec], ``nmtchps`` (int32, sources within
        ``radius``); -999 where there is no such neighbour or value.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from ztfsds.alerts.associations import ps1_neighbours
    >>> cat = Table({"objid": [7], "ra": [10.0], "dec": [0.0], "gmag": [18.0], "rmag": [17.5],
    ...              "imag": [17.4], "sgscore": [0.98]})
    >>> t = ps1_neighbours([10.0 + 1 / 3600], [0.0], cat)
    >>> int(t["objectidps1"][0]), round(float(t["distpsnr1"][0]), 3), int(t["objectidps2"][0]), int(t["nmtchps"][0])
    (7, 1.0, -999, 1)
    """
    for col in ("objid", "ra", "dec"):
        if col not in catalog.colnames:
            raise InputError(None, f"a PS1-like catalog needs column {col!r} (has {catalog.colnames})")
    m = len(catalog)
    idx, sep, tree, pts = _nearest(ra, dec, np.asarray(catalog["ra"], float), np.asarray(catalog["dec"], float),
                                   radius, 3)
    n = len(idx)
    out = Table()
    objid = np.asarray(catalog["objid"], np.int64)
    mags = {band: _cat_column(catalog, f"{band}mag", m) for band in "griz"}
    sgscore = _cat_column(catalog, "sgscore", m)
    for k in range(3):
        i = idx[:, k]
        out[f"objectidps{k + 1}"] = np.where(i >= 0, objid[np.clip(i, 0, max(m - 1, 0))] if m else -999,
                                             -999).astype(np.int64)
        for band in "griz":
            out[f"s{band}mag{k + 1}"] = Column(_pick(mags[band], i), unit="mag")
        out[f"sgscore{k + 1}"] = _pick(sgscore, i)
        out[f"distpsnr{k + 1}"] = Column(np.where(i >= 0, sep[:, k], _SENTINEL), unit="arcsec")
    if tree is not None:
        counts = np.array([len(c) for c in tree.query_ball_point(pts, _chord(radius))], np.int32)
    else:
        counts = np.zeros(n, np.int32)
    out["nmtchps"] = counts
    return out


def gaia_neighbours(ra, dec, catalog: Table, *, radius: float = GAIA_RADIUS, bright: float = GAIA_BRIGHT) -> Table:
    """The nearest Gaia-like source and the nearest bright one (G < ``bright``) of each candidate.

    Parameters
    ----------
    ra, dec : array-like
        Candidate positions [deg].
    catalog : `~astropy.table.Table`
        Gaia-like catalog (``ra``, ``dec`` [deg], ``phot_g_mean_mag`` [mag]); proper motions are not
        applied (90" searches do not need them).
    radius : float, optional
        Search radius [arcsec].
    bright : float, optional
        G limit of ``neargaiabright`` [mag].

    Returns
    -------
    `~astropy.table.Table`
        ``neargaia``, ``neargaiabright`` [arcsec], ``maggaia``, ``maggaiabright`` [mag]; -999 when none.
    """
    for col in ("ra", "dec", "phot_g_mean_mag"):
        if col not in catalog.colnames:
            raise InputError(None, f"a Gaia-like catalog needs column {col!r} (has {catalog.colnames})")
    g = np.asarray(catalog["phot_g_mean_mag"], float)
    cra, cdec = np.asarray(catalog["ra"], float), np.asarray(catalog["dec"], float)
    out = Table()
    for suffix, sel in (("", np.isfinite(g)), ("bright", np.isfinite(g) & (g < bright))):
        rows = np.flatnonzero(sel)
        idx, sep, _, _ = _nearest(ra, dec, cra[rows], cdec[rows], radius, 1)
        i = idx[:, 0]
        out[f"neargaia{suffix}"] = Column(np.where(i >= 0, sep[:, 0], _SENTINEL), unit="arcsec")
        out[f"maggaia{suffix}"] = Column(_pick(g[rows], i), unit="mag")
    return out[["neargaia", "neargaiabright", "maggaia", "maggaiabright"]]


def asteroid_positions(asteroids, jd: float) -> Table:
    """Positions of known asteroids at ``jd``: ``name``, ``ra``, ``dec`` [deg], ``vmag``.

    Parameters
    ----------
    asteroids : `~astropy.table.Table` or callable
        A table with ``name``, ``ra``, ``dec`` [deg] at ``t0`` [JD], ``ra_rate`` (along RA cos Dec) and
        ``dec_rate`` [arcsec/min], ``vmag`` (moved linearly), or a callable ``f(jd) -> Table`` with
        ``name``, ``ra``, ``dec``, ``vmag``.
    jd : float
        Epoch [JD].
    """
    if callable(asteroids):
        table = asteroids(jd)
        return table
    for col in ("name", "ra", "dec", "t0", "ra_rate", "dec_rate"):
        if col not in asteroids.colnames:
            raise InputError(None, f"a known-asteroid table needs column {col!r} (has {asteroids.colnames})")
    minutes = (float(jd) - np.asarray(asteroids["t0"], float)) * 1440.0
    dec0 = np.asarray(asteroids["dec"], float)
    dec = np.clip(dec0 + np.asarray(asteroids["dec_rate"], float) * minutes / 3600.0, -90.0, 90.0)
    ra = (np.asarray(asteroids["ra"], float)
          + np.asarray(asteroids["ra_rate"], float) * minutes / 3600.0 / np.maximum(np.cos(np.radians(dec0)), 1e-6))
    vmag = _cat_column(asteroids, "vmag", len(asteroids))
    return Table({"name": np.asarray(asteroids["name"]).astype(str), "ra": ra % 360.0, "dec": dec, "vmag": vmag})


def solar_system(ra, dec, jd: float, asteroids, *, radius: float = SS_RADIUS) -> Table:
    """The nearest known solar-system object of each candidate.

    Parameters
    ----------
    ra, dec : array-like
        Candidate positions [deg].
    jd : float
        Time the asteroid positions are predicted for: the exposure's mid-time (``OBSJD + EXPTIME / 2``)
        [JD].
    asteroids : `~astropy.table.Table` or callable
        Known asteroids (see `asteroid_positions`; `asteroids_from_sky` for a simulated sky).
    radius : float, optional
        Search radius [arcsec].

    Returns
    -------
    `~astropy.table.Table`
        ``ssdistnr`` [arcsec], ``ssmagnr`` [mag], ``ssnamenr`` (str); -999 / ``'null'`` when there is none
        within ``radius``.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from ztfsds.alerts.associations import solar_system
    >>> known = Table({"name": ["2830"], "ra": [10.0], "dec": [0.0], "t0": [2459000.5], "ra_rate": [0.5],
    ...                "dec_rate": [0.0], "vmag": [17.5]})
    >>> t = solar_system([10.0 + 60 * 0.5 / 3600], [0.0], 2459000.5 + 1 / 24, known)
    >>> round(float(t["ssdistnr"][0]), 3), str(t["ssnamenr"][0])
    (0.0, '2830')
    """
    pos = asteroid_positions(asteroids, jd)
    idx, sep, _, _ = _nearest(ra, dec, np.asarray(pos["ra"], float), np.asarray(pos["dec"], float), radius, 1)
    i = idx[:, 0]
    names = np.asarray(pos["name"]).astype(str)
    out = Table()
    out["ssdistnr"] = Column(np.where(i >= 0, sep[:, 0], _SENTINEL), unit="arcsec")
    out["ssmagnr"] = Column(_pick(_cat_column(pos, "vmag", len(pos)), i), unit="mag")
    out["ssnamenr"] = np.array([names[j] if j >= 0 else "null" for j in i], dtype=object).astype(str)
    return out


def asteroids_from_sky(sky: Table) -> Table:
    """The known-asteroid table of a simulated sky (`ztfsds.sim.sky.make_sky`).

    The simulator's asteroids play MPC's catalog: every one is "known". Names are their ``source_id``
    (as MPC numbers); ``vmag = r + 0.2`` (the simulator's V - r).

    Parameters
    ----------
    sky : `~astropy.table.Table`
        ``make_sky`` output (``kind``, ``source_id``, ``ra``, ``dec``, ``t0``, ``ra_rate``, ``dec_rate``,
        ``r``).

    Returns
    -------
    `~astropy.table.Table`
        ``name``, ``ra``, ``dec`` [deg] at ``t0`` [JD], ``ra_rate``, ``dec_rate`` [arcsec/min], ``vmag``.
    """
    sel = np.asarray(sky["kind"]).astype(str) == "asteroid"
    sub = sky[sel]
    out = Table()
    out["name"] = np.asarray(sub["source_id"]).astype(np.int64).astype(str)
    for col, unit in (("ra", "deg"), ("dec", "deg"), ("t0", "d"), ("ra_rate", "arcsec/min"),
                      ("dec_rate", "arcsec/min")):
        out[col] = Column(np.asarray(sub[col], float), unit=unit)
    out["vmag"] = Column(np.asarray(sub["r"], float) + 0.2, unit="mag")
    return out


def reference_neighbours(ra, dec, refcat: Table, *, pixscale: float = 1.012, radius: float = 30.0) -> Table:
    """The nearest source of the reference PSF catalog of each candidate (the alert's ``*nr`` fields).

    Parameters
    ----------
    ra, dec : array-like
        Candidate positions [deg].
    refcat : `~astropy.table.Table`
        Reference PSF catalog: ``ra``, ``dec`` [deg], ``mag``, optional ``sigmag``, ``chi``, ``sharp``.
    pixscale : float, optional
        Pixel scale turning ``distnr`` into pixels [arcsec/px].
    radius : float, optional
        Search radius [arcsec].

    Returns
    -------
    `~astropy.table.Table`
        ``distnr`` [px], ``ranr``, ``decnr`` [deg], ``magnr``, ``sigmagnr`` [mag], ``chinr``, ``sharpnr``;
        -999 when there is no source within ``radius``.
    """
    m = len(refcat)
    cra, cdec = np.asarray(refcat["ra"], float), np.asarray(refcat["dec"], float)
    idx, sep, _, _ = _nearest(ra, dec, cra, cdec, radius, 1)
    i = idx[:, 0]
    out = Table()
    out["distnr"] = Column(np.where(i >= 0, sep[:, 0] / pixscale, _SENTINEL), unit="pix")
    out["ranr"] = Column(_pick(cra, i), unit="deg")
    out["decnr"] = Column(_pick(cdec, i), unit="deg")
    for col, src in (("magnr", "mag"), ("sigmagnr", "sigmag"), ("chinr", "chi"), ("sharpnr", "sharp")):
        out[col] = _pick(_cat_column(refcat, src, m), i)
    return out


def match_objects(ra, dec, objects: Table, *, radius: float = OBJECT_RADIUS) -> np.ndarray:
    """The known object each candidate falls on (nearest within ``radius``), or '' when none.

    Parameters
    ----------
    ra, dec : array-like
        Candidate positions [deg].
    objects : `~astropy.table.Table`
        Known objects: ``objectId``, ``ra``, ``dec`` [deg] (e.g. their mean positions from the database).
    radius : float, optional
        Association radius [arcsec] (ZTF: 1.5).

    Returns
    -------
    numpy.ndarray of str
    """
    idx, _, _, _ = _nearest(ra, dec, np.asarray(objects["ra"], float) if len(objects) else np.zeros(0),
                            np.asarray(objects["dec"], float) if len(objects) else np.zeros(0), radius, 1)
    names = np.asarray(objects["objectId"]).astype(str) if len(objects) else np.zeros(0, str)
    return np.array([names[j] if j >= 0 else "" for j in idx[:, 0]], dtype=object).astype(str)


def assign_object_ids(ra, dec, objects: Table, *, year: int, next_number: int,
                      radius: float = OBJECT_RADIUS) -> tuple[np.ndarray, Table]:
    """Object ids for a batch of candidates: the known object within ``radius``, else a new id.

    Candidates of the batch that are within ``radius`` of each other and of no known object share one
    new id (the brightest-first order of a candidates table makes the first of them its position).

    Parameters
    ----------
    ra, dec : array-like
        Candidate positions [deg].
    objects : `~astropy.table.Table`
        Known objects (``objectId``, ``ra``, ``dec``).
    year : int
        Year of these detections (new ids are ``ZTF<yy>...``).
    next_number : int
        Running number of the first new object of that year (`ztfsds.products.objectid_from_number`).
    radius : float, optional
        Association radius [arcsec].

    Returns
    -------
    ids : numpy.ndarray of str
        One ``ZTFyyaaaaaaa`` per candidate.
    new : `~astropy.table.Table`
        The new objects (``objectId``, ``ra``, ``dec``), to add to the known ones.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from ztfsds.alerts.associations import assign_object_ids
    >>> known = Table({"objectId": ["ZTF18aaaaaaa"], "ra": [10.0], "dec": [0.0]})
    >>> oid, new = assign_object_ids([10.0, 11.0, 11.0 + 0.5 / 3600], [0.0, 0.0, 0.0], known, year=2018,
    ...                              next_number=1)
    >>> oid.tolist(), len(new)
    (['ZTF18aaaaaaa', 'ZTF18aaaaaab', 'ZTF18aaaaaab'], 1)
    """
    ra, dec = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    out = match_objects(ra, dec, objects, radius=radius).astype(object)
    new_ids, new_ra, new_dec = [], [], []
    number = int(next_number)
    for i in np.flatnonzero(out == ""):
        if new_ra:
            idx, _, _, _ = _nearest(ra[i:i + 1], dec[i:i + 1], np.asarray(new_ra), np.asarray(new_dec), radius, 1)
            if idx[0, 0] >= 0:
                out[i] = new_ids[idx[0, 0]]
                continue
        oid = ids.objectid_from_number(year, number)
        number += 1
        new_ids.append(oid)
        new_ra.append(ra[i])
        new_dec.append(dec[i])
        out[i] = oid
    new = Table({"objectId": np.array(new_ids, dtype=str), "ra": np.array(new_ra, float),
                 "dec": np.array(new_dec, float)})
    return out.astype(str), new
