"""Synthetic pipeline products for the alert-runner tests: a small quadrant observed at several epochs,
each with sciimg + psfcat, a candidates product (table + cutouts), and a difference image with its PSF
stamp and variance (a Gaussian transient where it is detected), written with ztfsds's own writers.

One transient ``T`` at a fixed position is detected at some epochs; a second object ``A`` at one epoch;
random other candidates elsewhere; and, where asked, a candidate on a streak at ``T`` (not an alert, so that
epoch is an upper limit of ``T``).
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ztfsds.products import ProductKey, filefracday, table_hdulist

SIZE = 96
PIXSCALE = 1.0
RA0, DEC0 = 55.0, 33.3
JD0 = 2459100.70
FIELD, CCD, QID = 655, 13, 3
SIGMA_D = 5.0        # noise of the difference images [DN]
PSF_SIGMA = 1.3      # Gaussian PSF sigma [px]
MAGZP = 26.0
T_XY = (48.3, 44.7)  # the transient (0-based px)
A_XY = (20.2, 70.6)


def header(jd, *, size=SIZE):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0]
    w.wcs.crpix = [(size + 1) / 2.0, (size + 1) / 2.0]
    w.wcs.cd = np.array([[-PIXSCALE / 3600.0, 0.0], [0.0, PIXSCALE / 3600.0]])
    h = w.to_header()
    h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 2, size, size
    key = key_of(jd)
    for k, v in (("OBSJD", jd), ("FIELDID", FIELD), ("FILTERID", 2), ("FILTER", "zr"), ("CCDID", CCD), ("QID", QID),
                 ("RCID", key.rcid), ("DBPID", key.pid()), ("EXPID", key.expid), ("PROGRMID", 1), ("EXPTIME", 30.0),
                 ("MAGZP", MAGZP), ("MAGZPUNC", 1e-4), ("MAGZPRMS", 0.02), ("CLRCOEFF", 0.08), ("CLRCOUNC", 1e-3),
                 ("NMATCHES", 300), ("SEEING", 2.35 * PSF_SIGMA), ("MAGLIM", 20.8), ("PIXSCALE", PIXSCALE),
                 ("MEDSKY", 150.0), ("SKYSIG", 6.0), ("INFOBITS", 0), ("GAIN", 6.2)):
        h[k] = v
    return h


def key_of(jd):
    return ProductKey.science(filefracday(jd), FIELD, "zr", CCD, QID)


def world(xy, jd=JD0):
    ra, dec = WCS(header(jd)).all_pix2world([xy[0]], [xy[1]], 0)
    return float(ra[0]), float(dec[0])


def psf_model(size=15, ovs=4):
    """A constant Gaussian `~ztfsds.photom.psf.PSFModel` (the difference images' PSF product)."""
    from ztfsds.photom.psf import PSFModel

    m = ovs * (size + 4) + 1
    y, x = (np.mgrid[:m, :m] - m // 2) / ovs
    grid = np.exp(-(x**2 + y**2) / (2 * PSF_SIGMA**2))
    grid *= ovs**2 / grid.sum()
    return PSFModel(basis=grid[None], oversample=ovs, degree=0, x0=0.0, y0=0.0, scale=1.0, nstar=0)


def _gaussian(shape, x0, y0, flux):
    y, x = np.mgrid[:shape[0], :shape[1]]
    return flux * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * PSF_SIGMA**2)) / (2 * np.pi * PSF_SIGMA**2)


def write_epoch(store, jd, *, t_flux=None, a_flux=None, streak_at_t=False, nother=6, seed=0, ncands=None):
    """Write one epoch; returns (key, candidates table). ``t_flux``/``a_flux``: flux [DN] of T / A when
    detected (None: not there). ``ncands``: make exactly this many candidates (for benchmarks)."""
    rng = np.random.default_rng(seed)
    key = key_of(jd)
    h = header(jd)
    store.write_fits(key, fits.PrimaryHDU(np.zeros((SIZE, SIZE), np.float32), h))
    w = WCS(h)
    nsrc = 30
    sx, sy = rng.uniform(2, SIZE - 3, nsrc), rng.uniform(2, SIZE - 3, nsrc)
    sra, sdec = w.all_pix2world(sx, sy, 0)
    psfcat = Table({"sourceid": np.arange(nsrc), "x": sx, "y": sy, "ra": sra, "dec": sdec,
                    "flux": rng.uniform(1e3, 1e4, nsrc), "sigflux": np.full(nsrc, 10.0),
                    "mag": rng.uniform(16, 19, nsrc), "sigmag": np.full(nsrc, 0.01), "snr": np.full(nsrc, 50.0),
                    "chi": np.ones(nsrc), "sharp": np.zeros(nsrc), "flags": np.zeros(nsrc, np.int32)})
    store.write_fits(key.with_suffix("psfcat"), table_hdulist(h, psfcat, "PSFCAT"))
    # the difference image
    dh = h.copy()
    for k, v in (("DIFFMLIM", 20.5 + 0.01 * (seed % 7)), ("RFID", 655120250), ("NFRAMREF", 15),
                 ("RFJDSTRT", JD0 - 200), ("RFJDEND", JD0 - 100), ("RBVERSN", "t_rb1"), ("DRBVERSN", "d6_m7")):
        dh[k] = v
    diff = rng.normal(0.0, SIGMA_D, (SIZE, SIZE)).astype(np.float32)
    xy, sign, flux = [], [], []
    if t_flux is not None:
        diff += _gaussian(diff.shape, *T_XY, t_flux).astype(np.float32)
        xy.append(T_XY), sign.append("t"), flux.append(t_flux)
    if a_flux is not None:
        diff += _gaussian(diff.shape, *A_XY, a_flux).astype(np.float32)
        xy.append(A_XY), sign.append("t"), flux.append(a_flux)
    streak = []
    if streak_at_t:
        xy.append((T_XY[0] + 0.4, T_XY[1] - 0.3)), sign.append("t"), flux.append(300.0)
        streak.append(len(xy) - 1)
    n_other = nother if ncands is None else max(ncands - len(xy), 0)
    if n_other:
        # the others on a grid (3 px apart at least, away from T and A), each at its own place per epoch
        gx, gy = np.meshgrid(np.arange(4, SIZE - 4, 3.0), np.arange(4, SIZE - 4, 3.0))
        gx, gy = gx.ravel() + rng.uniform(-0.3, 0.3, gx.size), gy.ravel() + rng.uniform(-0.3, 0.3, gy.size)
        far = (np.hypot(gx - T_XY[0], gy - T_XY[1]) > 6) & (np.hypot(gx - A_XY[0], gy - A_XY[1]) > 6)
        pick = rng.choice(np.flatnonzero(far), n_other, replace=False)
        for i in pick:
            xy.append((gx[i], gy[i]))
            sign.append("t" if rng.uniform() < 0.6 else "f")
            flux.append(rng.uniform(80, 2000))
    n = len(xy)
    xy = np.asarray(xy, float).reshape(n, 2)
    flux = np.asarray(flux, float)
    cands = Table()
    cands["tblid"] = np.arange(n, dtype=np.int32)
    cands["xpos"], cands["ypos"] = xy[:, 0], xy[:, 1]
    cands["isdiffpos"] = np.array(sign if n else [], dtype="U1")
    cands["scorr"] = flux / 40.0
    cands["flux"], cands["sigflux"] = flux, np.full(n, 20.0)
    cands["magpsf"] = MAGZP - 2.5 * np.log10(flux)
    cands["sigmapsf"] = 1.0857 * 20.0 / flux
    cands["chipsf"] = np.ones(n)
    cands["magap"] = cands["magpsf"] + 0.01
    cands["sigmagap"] = cands["sigmapsf"] * 1.2
    cands["magapbig"] = cands["magap"]
    cands["sigmagapbig"] = cands["sigmagap"]
    cands["magdiff"] = cands["magap"] - cands["magpsf"]
    cands["aimage"], cands["bimage"] = np.full(n, 1.1), np.full(n, 1.0)
    cands["elong"] = cands["aimage"] / cands["bimage"]
    cands["fwhm"] = np.full(n, 2.35 * PSF_SIGMA)
    cands["nbad"] = np.zeros(n, np.int32)
    cands["nneg"] = np.zeros(n, np.int32)
    cands["sumrat"] = np.ones(n)
    cands["mindtoedge"] = np.minimum.reduce([xy[:, 0], xy[:, 1], SIZE - 1 - xy[:, 0], SIZE - 1 - xy[:, 1]]) \
        if n else np.zeros(0)
    cands["distnr"] = np.full(n, np.nan)
    cands["onstreak"] = np.isin(np.arange(n), streak)
    cands["rb"] = np.full(n, 0.9, np.float32)
    cands["drb"] = np.full(n, 0.95, np.float32)
    stamps = rng.normal(0, SIGMA_D, (n, 3, 63, 63)).astype(np.float32)
    stamps[:, 0] += 150.0
    hdul = table_hdulist(dh, cands, "CANDIDATES")
    hdul.append(fits.ImageHDU(stamps, name="CUTOUTS"))
    store.write_fits(key.with_suffix("candidates"), hdul)
    store.write_fits(key.with_suffix("scimrefdiffimg"), fits.PrimaryHDU(diff, dh))
    store.write_fits(key.with_suffix("diffimgvar"), fits.PrimaryHDU(np.full_like(diff, SIGMA_D**2), dh))
    store.write_fits(key.with_suffix("diffimgpsf"), psf_model().to_hdulist())
    return key, cands


def write_reference_catalog(store, key, sources):
    """The reference's PSF catalog: ``sources`` as (x, y, mag) on the science grid."""
    w = WCS(header(JD0))
    x, y, mag = (np.asarray(c, float) for c in zip(*sources))
    ra, dec = w.all_pix2world(x, y, 0)
    cat = Table({"ra": ra, "dec": dec, "mag": mag, "sigmag": np.full(len(x), 0.02), "chi": np.ones(len(x)),
                 "sharp": np.zeros(len(x))})
    store.write_fits(key.reference("refpsfcat"), table_hdulist(fits.Header(), cat, "PSFCAT"))


def write_asteroids(store, name, xy, jd, rate=(0.5, 0.0), vmag=19.5):
    """A one-asteroid known list whose mid-exposure position at ``jd`` is ``xy``."""
    ra, dec = world(xy)
    t = Table({"name": [name], "ra": [ra], "dec": [dec], "t0": [jd + 15.0 / 86400.0], "ra_rate": [rate[0]],
               "dec_rate": [rate[1]], "vmag": [vmag]})
    path = store.root / "catalogs" / "asteroids.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    t.write(path, overwrite=True)
