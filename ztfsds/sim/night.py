"""A simulated ZTF night: raw science and calibration exposures, truth tables, calibrator catalogs.

`simulate_night` ties the sky (`ztfsds.sim.sky`), the observing conditions (`ztfsds.sim.conditions`),
the optics (`ztfsds.sim.optics`) and the camera (`ztfsds.sim.instrument`, `ztfsds.sim.raw`) together
and writes, under a data root (`ztfsds.products.ProductStore` layout)::

    raw/YYYY/MMDD/dddddd/ztf_<filefracday>_<field>_<fc>_c<cc>_o.fits[.fz]   science exposures
    raw/YYYY/MMDD/dddddd/ztf_<filefracday>_000000_OO_c<cc>_b.fits[.fz]      biases
    raw/YYYY/MMDD/dddddd/ztf_<filefracday>_000000_<fc>_c<cc>_f.fits[.fz]    LED dome flats
    sim/truth/YYYYMMDD/<raw name>_truth.fits   per raw CCD file: one table per quadrant Q1-Q4 (every
                                               source with its true position, flux and magnitude)
                                               with the true WCS, zero point, gain, read noise, seeing
                                               and sky in its header; COSMICS (the cosmic-ray hits);
                                               MASK1-MASK4, the true artefact maps (`truth_mask`)
    sim/catalogs/<field>_c<cc>_gaia.fits, _ps1.fits   the Gaia-like and PS1-like calibrator catalogs
    catalogs/asteroids.fits                    the known asteroids (`known_asteroids`), as MPC publishes
                                               them: read by the alert stage for ``ssnamenr``...
    sim/schedule.ecsv, sim/camera.ecsv, sim/manifest.json

The sky of each field and CCD is drawn once (seeded by the seed, field and CCD) and seen by every
exposure, so references and lightcurves can be built from history epochs.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table

from .. import camera as _camera
from .._version import __version__
from ..errors import ConfigError
from ..products import MaskBits, ProductKey, ProductStore, atomic_write, expid, filefracday, write_fits
from . import conditions as _conditions
from . import instrument as _instrument
from . import optics as _optics
from . import raw as _raw
from . import sky as _sky

__all__ = ["NightResult", "simulate_night", "simulate_exposure_ccd", "sky_for_ccd", "truth_mask", "truth_path"]

log = logging.getLogger(__name__)

#: Margin around a quadrant within which sources are rendered (their wings fall on it) [px].
_RENDER_MARGIN = 64
#: Fast movers leave streaks: rate above which an asteroid is rendered as a trail [arcsec/min].
_STREAK_RATE = 10.0
#: Galaxies fainter than this are rendered as point sources [mag].
_GALAXY_SHAPE_LIMIT = 22.5
#: Chance that a satellite crosses a given CCD in one exposure.
_TRAIL_PROBABILITY = 0.05


@dataclasses.dataclass
class NightResult:
    """What `simulate_night` wrote.

    Attributes
    ----------
    root : pathlib.Path
        The data root.
    science : list of pathlib.Path
        Raw science CCD files.
    calibration : list of pathlib.Path
        Raw bias and dome-flat CCD files.
    truth : list of pathlib.Path
        Truth tables (one per science raw file).
    catalogs : list of pathlib.Path
        Calibrator catalogs.
    schedule : `~astropy.table.Table`
        The exposures (one row per science exposure).
    elapsed : float
        Wall time [s].
    """

    root: Path
    science: list[Path]
    calibration: list[Path]
    truth: list[Path]
    catalogs: list[Path]
    schedule: Table
    elapsed: float


def _seed(*parts: int) -> int:
    """A stable 32-bit seed from integers (independent of Python's hash randomisation)."""
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes())


def _ccd_radius(field_center: SkyCoord, ccdid: int, shape) -> tuple[SkyCoord, float]:
    """Centre and radius [deg] of a circle covering a CCD's quadrants (plus pointing margin)."""
    corners = []
    for qid in _camera.QIDS:
        wcs = _camera.nominal_wcs(field_center, ccdid, qid)
        ny, nx = shape
        x0, y0 = _optics.subarray_origin(shape)
        xs = np.array([x0, x0 + nx - 1, x0 + nx - 1, x0], dtype=float)
        ys = np.array([y0, y0, y0 + ny - 1, y0 + ny - 1], dtype=float)
        corners.append(wcs.pixel_to_world(xs, ys))
    ra = np.concatenate([c.ra.deg for c in corners])
    dec = np.concatenate([c.dec.deg for c in corners])
    pts = SkyCoord(ra * u.deg, dec * u.deg)
    xyz = np.mean(pts.cartesian.xyz.value, axis=1)
    center = SkyCoord(np.degrees(np.arctan2(xyz[1], xyz[0])) % 360.0 * u.deg,
                      np.degrees(np.arcsin(xyz[2] / np.linalg.norm(xyz))) * u.deg)
    radius = float(center.separation(pts).deg.max()) + 100.0 / 3600.0
    return center, radius


def sky_for_ccd(field: int, ccdid: int, *, seed: int, shape=_camera.QUADRANT_SHAPE,
                transient_window=None, asteroid_epoch=None, density_scale: float = 1.0,
                faint_limit: float = 24.0) -> Table:
    """The simulated sky seen by one CCD of a field (the same for every exposure of it).

    Parameters
    ----------
    field : int
        ZTF field id.
    ccdid : int
        CCD id.
    seed : int
        Simulation seed.
    shape : tuple of int, optional
        Quadrant (sub-)array shape: only the sky around the simulated pixels is drawn.
    transient_window, asteroid_epoch : optional
        Passed to `ztfsds.sim.sky.make_sky`.
    density_scale, faint_limit : float, optional
        Star density factor and faintest magnitude drawn.
    """
    center, radius = _ccd_radius(_camera.field_center(field), ccdid, shape)
    return _sky.make_sky(center, radius, seed=_seed(seed, field, ccdid), transient_window=transient_window,
                         asteroid_epoch=asteroid_epoch, density_scale=density_scale, faint_limit=faint_limit)


def _render_threads() -> int:
    """Threads used to render the quadrants of a CCD: the usable cores, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def _quadrant_truth(exposure, ccdid, qid, sky, ra, dec, mags, shape):
    """Project, render and tabulate the sources of one quadrant: (electrons image, truth Table, WCS)."""
    ny, nx = shape
    wcs = _optics.true_wcs(exposure, ccdid=ccdid, qid=qid, shape=shape)
    centre = wcs.pixel_to_world((nx - 1) / 2.0, (ny - 1) / 2.0)
    half = 0.5 * np.hypot(nx, ny) * (_camera.PIXEL_SCALE.value / 3600.0) + _RENDER_MARGIN * 2.9e-4
    cosd = np.cos(np.radians(centre.dec.deg))
    near = (np.abs((ra - centre.ra.deg + 180.0) % 360.0 - 180.0) * cosd < half) & (
        np.abs(dec - centre.dec.deg) < half) & np.isfinite(mags)
    idx = np.flatnonzero(near)
    x, y = _optics.sky_to_pixel(wcs, ra[idx], dec[idx])
    keep = (x > -_RENDER_MARGIN) & (x < nx - 1 + _RENDER_MARGIN) & (y > -_RENDER_MARGIN) & (y < ny - 1 + _RENDER_MARGIN)
    idx, x, y = idx[keep], x[keep], y[keep]
    src = sky[idx]
    kind = np.asarray(src["kind"]).astype(str)
    rate = np.hypot(np.asarray(src["ra_rate"], float), np.asarray(src["dec_rate"], float))
    streak = (kind == "asteroid") & (rate >= _STREAK_RATE)
    flux = _optics.mag_to_electrons(mags[idx], exposure.zp)
    psf = _optics.psf_params(ccdid, qid, x, y, exposure.seeing, exposure.airmass, shape=shape)
    # Galaxies fainter than _GALAXY_SHAPE_LIMIT have S/N < ~3 in 30 s: their light is kept but drawn
    # through the PSF alone (their shape is unmeasurable and Sersic rendering dominated the run time)
    gal = (kind == "galaxy") & (mags[idx] < _GALAXY_SHAPE_LIMIT)
    pixscale = _camera.PIXEL_SCALE.value
    sky_e = _optics.sky_electrons_per_pixel(exposure.sky_mag, exposure.zp)
    image = _optics.sky_image(shape, sky_e, exposure.sky_gradient)
    point = ~streak
    _optics.render_sources(
        shape, x[point], y[point], flux[point], fwhm=psf.fwhm[point], ellipticity=psf.ellipticity[point],
        pa=psf.pa[point],
        sersic_n=np.where(gal, np.asarray(src["sersic_n"], float), 0.0)[point],
        r_eff_px=np.where(gal, np.asarray(src["r_eff"], float) / pixscale, 0.0)[point],
        axis_ratio=np.asarray(src["axis_ratio"], float)[point], gal_pa=np.asarray(src["pa"], float)[point],
        out=image)
    for j in np.flatnonzero(streak):
        ra0, dec0, ra1, dec1 = (float(np.ravel(v)[0]) for v in _sky.asteroid_track(
            {k: src[k][j] for k in ("ra", "dec", "ra_rate", "dec_rate", "t0", "pmra", "pmdec", "kind")},
            exposure.jd, exposure.exptime))
        (x0, x1), (y0, y1) = _optics.sky_to_pixel(wcs, np.array([ra0, ra1], float), np.array([dec0, dec1], float))
        _optics.render_streak(shape, float(x0), float(y0), float(x1), float(y1), float(flux[j]), float(psf.fwhm[j]),
                              out=image)
    truth = Table()
    truth["source_id"] = np.asarray(src["source_id"], np.int64)
    truth["kind"] = kind
    truth["ra"] = ra[idx] * u.deg
    truth["dec"] = dec[idx] * u.deg
    truth["x"] = x * u.pix  # 0-based array coordinates of the (sub-)array
    truth["y"] = y * u.pix
    truth["mag"] = mags[idx] * u.mag
    truth["flux_e"] = flux  # electrons (FITS has no electron unit)
    truth["fwhm"] = psf.fwhm * u.pix
    truth["streak"] = streak
    truth["on_image"] = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    return image, truth, wcs


def _satellite_trail(shape, exposure, rng, image):
    """Maybe add a satellite trail crossing the quadrant; returns its end points or None."""
    ny, nx = shape
    if rng.random() >= _TRAIL_PROBABILITY:
        return None
    angle = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0, nx), rng.uniform(0, ny)
    length = 2.0 * np.hypot(nx, ny)
    x0, y0 = cx - 0.5 * length * np.cos(angle), cy - 0.5 * length * np.sin(angle)
    x1, y1 = cx + 0.5 * length * np.cos(angle), cy + 0.5 * length * np.sin(angle)
    flux = rng.uniform(200.0, 3000.0) * length  # e- per pixel of trail
    _optics.render_streak(shape, x0, y0, x1, y1, flux, exposure.seeing / _camera.PIXEL_SCALE.value,
                          out=image)
    return (x0, y0, x1, y1)


def simulate_exposure_ccd(exposure, ccdid: int, sky: Table, camera, *, rng, cosmic_rays: bool = True):
    """Simulate one raw CCD file of a science exposure.

    Parameters
    ----------
    exposure : `~ztfsds.sim.conditions.Exposure`
        The exposure and its true conditions.
    ccdid : int
        CCD id.
    sky : `~astropy.table.Table`
        The sky around the CCD (`sky_for_ccd`).
    camera : `~ztfsds.sim.instrument.CameraTruth`
        The simulated camera (its ``shape`` is the quadrant shape).
    rng : `numpy.random.Generator`
        Random numbers of this exposure and CCD.
    cosmic_rays : bool, optional
        Add cosmic rays.

    Returns
    -------
    quadrants, overscans : dict of int to numpy.ndarray
        Raw uint16 data by qid.
    truth : dict of int to `~astropy.table.Table`
        Per quadrant, every source near it with its true position, magnitude and flux; the table
        ``meta`` holds the true WCS header, zero point, seeing and sky.
    readout : dict
        What `ztfsds.sim.raw.electrons_to_raw` records (cosmic rays, saturation, crosstalk).
    """
    shape = camera.shape
    ra, dec = _sky.positions_at(sky, exposure.jd)
    mags = _sky.mags_at(sky, exposure.filtercode, exposure.jd)
    electrons, truth = {}, {}
    # the four quadrants' rendering draws no random numbers: run it on threads (the compiled kernel
    # and numpy's array operations release the GIL); the results do not depend on the thread count
    with ThreadPoolExecutor(max_workers=_render_threads()) as pool:
        rendered = list(pool.map(lambda q: _quadrant_truth(exposure, ccdid, q, sky, ra, dec, mags, shape),
                                 _camera.QIDS))
    for qid, (image, table, wcs) in zip(_camera.QIDS, rendered):
        trail = _satellite_trail(shape, exposure, rng, image)
        channel = camera.channel(ccdid, qid)
        ny, nx = shape
        centre_psf = _optics.psf_params(ccdid, qid, (nx - 1) / 2.0, (ny - 1) / 2.0, exposure.seeing,
                                        exposure.airmass, shape=shape)
        header = wcs.to_header(relax=True)
        header["MAGZP"] = (exposure.zp + 2.5 * np.log10(_camera.NOMINAL_GAIN.value / channel.gain),
                           "true ZP of this channel [mag, DN]")
        header["EXPZP"] = (exposure.zp, "exposure ZP at nominal gain [mag, DN]")
        k, blue, red = _sky.COLOUR_TERMS[exposure.filtercode]
        header["CLRCOEFF"] = (k, "true colour term vs PS1 (m_PS1 - m = ZP + k c)")
        header["PCOLOR"] = (f"{blue} - {red}", "colour of the colour term")
        header["GAIN"] = (channel.gain, "true gain [e-/DN]")
        header["READNOI"] = (channel.read_noise, "true read noise [e-]")
        header["SEEING"] = (float(np.asarray(centre_psf.fwhm).ravel()[0]), "true PSF FWHM at centre [px]")
        header["SKYE"] = (float(_optics.sky_electrons_per_pixel(exposure.sky_mag, exposure.zp)),
                          "sky at centre [e-/px]")
        header["SKYMAG"] = (exposure.sky_mag, "sky brightness [mag/arcsec2]")
        header["SKYGRADX"] = (float(exposure.sky_gradient[0]), "sky fractional change across x")
        header["SKYGRADY"] = (float(exposure.sky_gradient[1]), "sky fractional change across y")
        header["AIRMASS"] = exposure.airmass
        header["SATTRAIL"] = (trail is not None, "satellite trail on quadrant")
        table.meta.update({"QID": qid, "CCDID": ccdid, "RCID": _camera.rcid(ccdid, qid)})
        table.meta["header"] = header
        electrons[qid] = image
        truth[qid] = table
    quadrants, overscans, readout = _raw.electrons_to_raw(electrons, ccdid, camera, exposure.filtercode,
                                                          rng=rng, exptime=exposure.exptime,
                                                          cosmic_rays=cosmic_rays)
    return quadrants, overscans, truth, readout


def truth_path(store: ProductStore, raw_key: ProductKey) -> Path:
    """Where the truth table of a raw science file is written."""
    stem = raw_key.filename.split(".fits")[0]
    return store.root / "sim" / "truth" / raw_key.night / f"{stem}_truth.fits"


def truth_mask(readout: dict, camera, ccdid: int, qid: int) -> np.ndarray:
    """The true artefact map of a quadrant: int16, an OR of `~ztfsds.products.MaskBits`.

    The camera's defects (DEAD, LOW/HIGH_RESPONSIVITY, NOISY), SATURATED (ADC ceiling or full well,
    bleed trails included), SPIKE (cosmic-ray hits) and GHOST (crosstalk ghosts above 1 DN), in
    science orientation. It is written to the truth file as the compressed image HDU ``MASK<qid>``.
    """
    mask = camera.defects(ccdid, qid).astype(np.int16)
    for key, bit in (("saturated", MaskBits.SATURATED), ("cosmic_ray_mask", MaskBits.SPIKE)):
        m = readout.get(key, {}).get(qid)
        if m is not None:
            mask[m] |= np.int16(bit)
    ghost = readout.get("crosstalk", {}).get("ghost_mask", {}).get(qid)
    if ghost is not None:
        mask[ghost] |= np.int16(MaskBits.GHOST)
    return mask


def _write_truth(path: Path, truth: dict, exposure, readout, *, camera=None, ccdid=None) -> Path:
    hdus = [fits.PrimaryHDU()]
    primary = hdus[0].header
    for key, value in (("OBSJD", exposure.jd), ("FIELDID", exposure.field), ("FILTER", exposure.filtercode),
                       ("EXPID", exposure.expid), ("SEEINGA", exposure.seeing), ("AIRMASS", exposure.airmass),
                       ("EXPZP", exposure.zp), ("TRANSP", exposure.transparency),
                       ("SKYMAG", exposure.sky_mag), ("PIPEVERS", __version__)):
        primary[key] = value
    for qid, table in truth.items():
        hdu = fits.table_to_hdu(Table(table, meta={}))
        hdu.name = f"Q{qid}"
        for card in table.meta["header"].cards:
            hdu.header.append(card)
        hdus.append(hdu)
    crs = readout.get("cosmic_rays")
    if crs is not None and len(crs):
        crs = Table(crs)
        for col in crs.itercols():
            if col.unit is not None and col.unit.is_equivalent(u.electron):
                col.unit = None  # FITS has no electron unit; the column name says it
        hdu = fits.table_to_hdu(crs)
        hdu.name = "COSMICS"
        hdus.append(hdu)
    if camera is not None:
        for qid in truth:
            hdus.append(fits.CompImageHDU(truth_mask(readout, camera, ccdid, qid), name=f"MASK{qid}",
                                          compression_type="RICE_1"))
    return write_fits(path, fits.HDUList(hdus))


def _write_table(table: Table, path: Path, fmt: str) -> Path:
    if fmt == "fits":  # FITS keywords: 8 upper-case characters
        table = Table(table, meta={k.upper()[:8]: v for k, v in table.meta.items()})
    with atomic_write(path) as tmp:
        table.write(tmp, format=fmt, overwrite=True)
    return path


def known_asteroids(skies: dict) -> Table:
    """The simulated skies' asteroids as a known-object list (what MPC's orbit file is for IPAC).

    Parameters
    ----------
    skies : dict
        ``{(field, ccdid): sky}`` of `sky_for_ccd` tables.

    Returns
    -------
    `~astropy.table.Table`
        ``name`` (``<field:06d><ccdid:02d><source_id:07d>``: unique across skies), ``ra``, ``dec`` [deg] at
        ``t0`` [JD], ``ra_rate`` (along RA cos Dec), ``dec_rate`` [arcsec/min] (the simulator moves them
        linearly), ``vmag`` (V = r + 0.2) and ``h_mag`` [mag].
    """
    parts = []
    for (field, ccdid), sky in sorted(skies.items()):
        sel = np.asarray(sky["kind"]).astype(str) == "asteroid"
        sid = np.asarray(sky["source_id"], np.int64)[sel]
        parts.append({"name": [f"{int(field):06d}{int(ccdid):02d}{int(i):07d}" for i in sid],
                      **{c: np.asarray(sky[c], float)[sel] for c in ("ra", "dec", "t0", "ra_rate", "dec_rate")},
                      "vmag": np.asarray(sky["r"], float)[sel] + 0.2, "h_mag": np.asarray(sky["h_mag"], float)[sel]})
    out = Table()
    out["name"] = np.array(sum((p["name"] for p in parts), []), dtype="U15")
    for col, unit in (("ra", "deg"), ("dec", "deg"), ("t0", "d"), ("ra_rate", "arcsec/min"),
                      ("dec_rate", "arcsec/min"), ("vmag", "mag"), ("h_mag", "mag")):
        out[col] = np.concatenate([p[col] for p in parts]) if parts else np.zeros(0)
        out[col].unit = unit
    return out


def _write_known_asteroids(store: ProductStore, skies: dict) -> Path:
    """``<root>/catalogs/asteroids.fits``: the known asteroids, merged with those already published there."""
    path = store.root / "catalogs" / "asteroids.fits"
    table = known_asteroids(skies)
    if path.is_file():
        from astropy.table import vstack

        old = Table.read(path)
        old = old[~np.isin(np.asarray(old["name"]).astype(str), np.asarray(table["name"]).astype(str))]
        table = vstack([old, table], metadata_conflicts="silent") if len(old) else table
    table.meta = {"ORIGIN": "ztfsds.sim", "COMMENT": "known asteroids: linear motion from t0"}
    return _write_table(table, path, "fits")


def simulate_night(out, *, fields: Sequence[int] = (655,), ccds: Sequence[int] = (13,), nexp: int = 1,
                   filters: Sequence[str] = ("zr",), size: int | tuple[int, int] | None = None, seed: int = 0,
                   night: _dt.date = _dt.date(2020, 9, 24), history_nights: int = 0, nbias: int = 5,
                   nflat: int = 5, flat_level: float = 25000.0, compress: bool = False,
                   density_scale: float = 1.0, faint_limit: float = 24.0,
                   progress: Callable[[int, int, str], None] | None = None) -> NightResult:
    """Simulate a raw ZTF night (science and calibration exposures) with truth tables.

    Parameters
    ----------
    out : path-like
        Data root to write under (created).
    fields : sequence of int, optional
        ZTF field ids observed.
    ccds : sequence of int, optional
        CCDs simulated (1-16; all 16 for the whole camera).
    nexp : int, optional
        Visits per field and filter on the night.
    filters : sequence of str, optional
        Filter codes.
    size : int or (int, int), optional
        Quadrant size ``(ny, nx)`` (an int for a square); None for the real 3080x3072. Smaller sizes
        are the centred sub-array of each quadrant (fast tests).
    seed : int, optional
        Everything is deterministic given the seed.
    night : datetime.date, optional
        UT date of the night.
    history_nights : int, optional
        Earlier nights (one every 2-3 days) with one visit per field and filter, so references can be
        built (15-40 good epochs need 20 or more).
    nbias, nflat : int, optional
        Bias exposures, and LED dome flats per filter, at the start of the night.
    flat_level : float, optional
        Mean illumination of the dome flats [e-].
    compress : bool, optional
        Write Rice-compressed ``.fits.fz`` raw files.
    density_scale, faint_limit : float, optional
        Star density factor and faintest magnitude of the sky model.
    progress : callable, optional
        Called as ``progress(done, total, file_name)`` after each raw file (the CLI's progress bar).

    Returns
    -------
    NightResult
    """
    start = time.perf_counter()
    shape = _camera.QUADRANT_SHAPE if size is None else (
        (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size))
    if not (8 <= shape[0] <= _camera.QUADRANT_SHAPE[0] and 8 <= shape[1] <= _camera.QUADRANT_SHAPE[1]):
        raise ConfigError(f"size {shape} must be between 8 and the full quadrant {_camera.QUADRANT_SHAPE}")
    ccds = tuple(int(c) for c in ccds)
    for c in ccds:
        if c not in _camera.CCDIDS:
            raise ConfigError(f"ccd {c} must be 1..16")
    fields = tuple(int(f) for f in fields)
    for f in fields:
        _camera.field_center(f)  # raises a clear error for an unknown field
    store = ProductStore(out)
    ext = ".fits.fz" if compress else ".fits"

    schedule = _conditions.make_schedule(fields, night=night, nexp_per_field=nexp, filters=tuple(filters),
                                         seed=seed, history_nights=history_nights)
    if not schedule:
        raise ConfigError(f"none of fields {fields} is observable on {night}")
    jds = np.array([e.jd for e in schedule])
    window = (float(jds.min()) - 40.0, float(jds.max()) + 40.0)
    tonight = [e for e in schedule if e.night == night]
    asteroid_epoch = float(np.mean([e.jd for e in tonight])) if tonight else float(jds.max())
    camera = _instrument.make_camera(seed, shape=shape, ccdids=ccds, date=night)
    total = (nbias + nflat * len(filters) + len(schedule)) * len(ccds)
    count = [0]

    def note(name):
        count[0] += 1
        if progress is not None:
            progress(count[0], total, name)

    science, truth_files, catalogs = [], [], []
    skies = {}
    for field in fields:
        for ccdid in ccds:
            sky = sky_for_ccd(field, ccdid, seed=seed, shape=shape, transient_window=window,
                              asteroid_epoch=asteroid_epoch, density_scale=density_scale, faint_limit=faint_limit)
            skies[field, ccdid] = sky
            base = store.root / "sim" / "catalogs"
            catalogs.append(_write_table(_sky.gaia_like(sky, seed=_seed(seed, field, ccdid, 1)),
                                         base / f"{field:06d}_c{ccdid:02d}_gaia.fits", "fits"))
            catalogs.append(_write_table(_sky.ps1_like(sky, seed=_seed(seed, field, ccdid, 2)),
                                         base / f"{field:06d}_c{ccdid:02d}_ps1.fits", "fits"))

    # the asteroids are "known": published under the data root, as MPC's orbit file is for IPAC
    catalogs.append(_write_known_asteroids(store, skies))

    calibration = _simulate_calibration(store, camera, tonight or schedule, ccds, filters, seed, nbias, nflat,
                                        flat_level, ext, note)

    for exposure in schedule:
        for ccdid in ccds:
            rng = np.random.default_rng(_seed(seed, exposure.expid, ccdid))
            quads, overs, truth, readout = simulate_exposure_ccd(exposure, ccdid, skies[exposure.field, ccdid],
                                                                 camera, rng=rng)
            key = ProductKey.raw(exposure.filefracday, exposure.field, exposure.filtercode, ccdid, ext=ext)
            centre = _optics.true_pointing(exposure)
            header = _raw.raw_header(ccdid=ccdid, obsjd=exposure.jd, imgtype="object", exptime=exposure.exptime,
                                     filtercode=exposure.filtercode, field=exposure.field,
                                     ra=float(exposure.center.ra.deg), dec=float(exposure.center.dec.deg),
                                     airmass=exposure.airmass, expid=exposure.expid)
            header["SIMSEED"] = (seed, "ztfsds.sim seed")
            header["SIMRA"] = (float(centre.ra.deg), "true pointing RA [deg]")
            header["SIMDEC"] = (float(centre.dec.deg), "true pointing Dec [deg] (truth)")
            science.append(_raw.write_raw_ccd(store.path(key), quads, overs, header, compress=compress))
            truth_files.append(_write_truth(truth_path(store, key), truth, exposure, readout,
                                            camera=camera, ccdid=ccdid))
            note(key.filename)

    sched = _conditions.schedule_table(schedule)
    _write_table(sched, store.root / "sim" / "schedule.ecsv", "ascii.ecsv")
    channels = Table(rows=[(c, q, _camera.rcid(c, q), camera.channel(c, q).gain, camera.channel(c, q).read_noise,
                            camera.channel(c, q).bias_level) for c in ccds for q in _camera.QIDS],
                     names=("ccdid", "qid", "rcid", "gain", "read_noise", "bias_level"))
    _write_table(channels, store.root / "sim" / "camera.ecsv", "ascii.ecsv")
    manifest = {"ztfsds": __version__, "seed": seed, "fields": list(fields), "ccds": list(ccds), "nexp": nexp,
                "filters": list(filters), "shape": list(shape), "night": night.isoformat(),
                "history_nights": history_nights, "nbias": nbias, "nflat": nflat, "flat_level": flat_level,
                "density_scale": density_scale, "faint_limit": faint_limit,
                "science": [str(p.relative_to(store.root)) for p in science],
                "calibration": [str(p.relative_to(store.root)) for p in calibration]}
    with atomic_write(store.root / "sim" / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    return NightResult(store.root, science, calibration, truth_files, catalogs, sched,
                       time.perf_counter() - start)


def _simulate_calibration(store, camera, exposures, ccds, filters, seed, nbias, nflat, flat_level, ext, note):
    """Bias and LED dome-flat exposures before the first science exposure of the night."""
    first = min(e.jd for e in exposures)
    t = first - (nbias + nflat * len(filters) + 2) * 60.0 / 86400.0
    written = []
    plan = [("b", "OO", None)] * nbias + [("f", fc, fc) for fc in filters for _ in range(nflat)]
    for k, (imgtype, filtercode, flat_filter) in enumerate(plan):
        jd = t + k * 60.0 / 86400.0
        ffd = filefracday(jd)
        for ccdid in ccds:
            rng = np.random.default_rng(_seed(seed, 7, k, ccdid))
            if imgtype == "b":
                quads, overs, _ = _raw.simulate_bias_ccd(camera, ccdid, rng=rng)
                header = _raw.raw_header(ccdid=ccdid, obsjd=jd, imgtype="bias", exptime=0.0, filtercode="OO",
                                         expid=expid(jd))
            else:
                quads, overs, _ = _raw.simulate_dome_flat_ccd(camera, ccdid, flat_filter, flat_level, rng=rng)
                wave = float(_camera.get_filter(flat_filter).wavelength.to_value(u.nm))
                header = _raw.raw_header(ccdid=ccdid, obsjd=jd, imgtype="dome", exptime=10.0,
                                         filtercode=flat_filter, expid=expid(jd), ilum_led=1, ilumwave=wave,
                                         ilumpowr=1.0)
            header["SIMSEED"] = (seed, "ztfsds.sim seed")
            key = ProductKey.raw(ffd, 0, filtercode, ccdid, imgtype=imgtype, ext=ext)
            written.append(_raw.write_raw_ccd(store.path(key), quads, overs, header, compress=ext == ".fits.fz"))
            note(key.filename)
    return written
