"""Synthetic pipeline products for the archive tests: sciimg headers with a TAN WCS, psfcat, candidates,
refimg, written with ztfsds's own writers into a ProductStore (small images: cheap to make)."""

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ztfsds.products import ProductKey, filefracday, table_hdulist

#: Pixel scale of the synthetic images [arcsec/px] and their size [px].
PIXSCALE = 1.0
SIZE = 128
JD0 = 2459116.9


def sci_header(ra, dec, jd, *, field=655, fid=2, magzp=26.3, seeing=2.1, maglim=20.8, infobits=0, size=SIZE,
               rotation=0.0, programid=1):
    """A sciimg header with a TAN WCS centred on (ra, dec)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(size + 1) / 2.0, (size + 1) / 2.0]
    c, s = np.cos(np.radians(rotation)), np.sin(np.radians(rotation))
    scale = PIXSCALE / 3600.0
    w.wcs.cd = np.array([[-scale * c, scale * s], [scale * s, scale * c]])
    h = w.to_header()
    h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 2, size, size
    for key, value in (("OBSJD", jd), ("FIELDID", field), ("FILTERID", fid), ("PROGRMID", programid),
                       ("EXPTIME", 30.0), ("AIRMASS", 1.2), ("TELRAD", ra), ("TELDECD", dec), ("MAGZP", magzp),
                       ("MAGZPUNC", 1e-4), ("MAGZPRMS", 0.02), ("CLRCOEFF", 0.08), ("CLRCOUNC", 1e-3),
                       ("SEEING", seeing), ("MAGLIM", maglim), ("INFOBITS", infobits)):
        h[key] = value
    return h


def quadrant_key(jd, field=655, filtercode="zr", ccdid=13, qid=3):
    return ProductKey.science(filefracday(jd), field, filtercode, ccdid, qid)


def write_quadrant(store, ra, dec, jd, *, nsrc=40, seed=0, ccdid=13, qid=3, field=655, filtercode="zr",
                   psfcat=True, size=SIZE, **kw):
    """Write a sciimg (zeros, the header above) and a psfcat of ``nsrc`` random sources; returns the key."""
    key = quadrant_key(jd, field, filtercode, ccdid, qid)
    fid = {"zg": 1, "zr": 2, "zi": 3}[filtercode]
    h = sci_header(ra, dec, jd, field=field, fid=fid, size=size, **kw)
    store.write_fits(key, fits.PrimaryHDU(np.zeros((size, size), np.float32), h))
    if psfcat:
        rng = np.random.default_rng(seed)
        x = rng.uniform(0, size - 1, nsrc)
        y = rng.uniform(0, size - 1, nsrc)
        r, d = WCS(h).all_pix2world(x, y, 0)
        cat = Table({"sourceid": np.arange(nsrc), "x": x, "y": y, "ra": r, "dec": d,
                     "flux": rng.uniform(100, 1e4, nsrc), "sigflux": np.full(nsrc, 10.0),
                     "mag": rng.uniform(15, 20, nsrc), "sigmag": np.full(nsrc, 0.01), "snr": np.full(nsrc, 50.0),
                     "chi": np.ones(nsrc), "sharp": np.zeros(nsrc), "flags": np.zeros(nsrc, np.int32)})
        store.write_fits(key.with_suffix("psfcat"), table_hdulist(h, cat, "PSFCAT"))
    return key


def write_candidates(store, key, xy, *, isdiffpos=None, diffmaglim=20.5, rfid=655122250, seed=0):
    """Write a candidates product for a quadrant written by `write_quadrant` (no ra/dec columns: the
    ingest computes them from xpos/ypos and the WCS); returns the table."""
    h = store.read_header(key)
    h["DIFFMLIM"] = diffmaglim
    h["RFID"] = rfid
    h["RBVERSN"] = "t1"
    xy = np.asarray(xy, float).reshape(-1, 2)
    n = len(xy)
    rng = np.random.default_rng(seed)
    cands = Table()
    cands["tblid"] = np.arange(n, dtype=np.int32)
    cands["xpos"], cands["ypos"] = xy[:, 0], xy[:, 1]
    cands["isdiffpos"] = np.array(isdiffpos if isdiffpos is not None else ["t"] * n)
    cands["magpsf"] = rng.uniform(17, 20, n)
    cands["sigmapsf"] = np.full(n, 0.05)
    cands["rb"] = rng.uniform(0, 1, n).astype(np.float32)
    cands["drb"] = rng.uniform(0, 1, n).astype(np.float32)
    cands["fwhm"] = np.full(n, 2.0)
    cands["nbad"] = np.zeros(n, np.int32)
    cands["onstreak"] = np.zeros(n, bool)
    store.write_fits(key.with_suffix("candidates"), table_hdulist(h, cands, "CANDIDATES"))
    return cands


def write_reference(store, key, ra, dec, *, nframes=15):
    ref = key.reference("refimg")
    h = sci_header(ra, dec, JD0)
    for k in ("OBSJD",):
        del h[k]
    h["RFID"] = 655122250
    h["NFRAMES"] = nframes
    h["JDSTART"], h["JDEND"] = JD0 - 100, JD0 - 10
    store.write_fits(ref, fits.PrimaryHDU(np.zeros((SIZE, SIZE), np.float32), h))
    return ref
