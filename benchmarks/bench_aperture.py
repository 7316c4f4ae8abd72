"""Fixed circular aperture photometry (ZTF's six apertures) of one quadrant: ztfsds against photutils and sep.

The image is the real IPAC quadrant ``ztf_20200924431759_000655_zr_c13_o_q3`` (``sciimg`` and ``mskimg``,
3080 x 3072), read from ``$ZTFSDS_REAL_QUADRANT_DIR`` (default ``/work/shared/data/ztfimg-pypi-0.19.0``);
without it, ``full`` tiles the 400 x 400 test cutout 8 x 8 (no mask). ``small`` is the cutout itself.
Setup (not timed) runs `ztfsds.astrom.extract` for the positions (12,000 on the real quadrant), tops
them up to 20,000 with uniformly random positions (the count of a dense field), and takes the
background level and rms maps of `ztfsds.astrom.extraction.background`.

Every implementation measures the six apertures of diameters 2, 3, 4, 6, 10, 14 px with the exact
circle/pixel overlap, on the background-subtracted image (the subtraction is timed), leaving out the
``MaskBits.BAD`` pixels, with errors from the rms map:

* ours: `ztfsds.photom.aperture.aperture_photometry` (one thread; also areas, masked areas, flags);
* ``photutils``: ``photutils.aperture.aperture_photometry`` with a list of six ``CircularAperture`` and
  ``method='exact'`` (``error=rms``, ``mask=bad``);
* ``sep``: ``sep.sum_circle`` once per radius with ``subpix=0`` (exact), ``err=rms``, ``mask=bad``.

Both peers weight the variances by the overlap ``a`` rather than ``a^2`` (see the module notes of
`ztfsds.photom.aperture`); the fluxes agree to rounding.
"""

import os
from pathlib import Path

import numpy as np

from ztfsds.bench import Case
from ztfsds.photom.aperture import ZTF_DIAMETERS, aperture_photometry
from ztfsds.products import MaskBits

STEM = "ztf_20200924431759_000655_zr_c13_o_q3"
REAL_DIR = Path(os.environ.get("ZTFSDS_REAL_QUADRANT_DIR", "/work/shared/data/ztfimg-pypi-0.19.0"))
CUTOUT = Path(__file__).resolve().parents[1] / "tests" / "data" / f"{STEM}_cutout.fits.gz"
RADII = [d / 2 for d in ZTF_DIAMETERS]
NSOURCES = {"full": 20000, "small": 1000}


def setup(size):
    from astropy.io import fits

    from ztfsds.astrom.extraction import background, extract

    real = REAL_DIR / f"{STEM}_sciimg.fits"
    msk = None
    if size == "full" and real.exists():
        sci = np.ascontiguousarray(fits.getdata(real), dtype=np.float32)
        msk = np.ascontiguousarray(fits.getdata(REAL_DIR / f"{STEM}_mskimg.fits").astype(np.int16))
    else:
        sci = np.ascontiguousarray(fits.getdata(CUTOUT), dtype=np.float32)
        if size == "full":
            sci = np.ascontiguousarray(np.tile(sci, (8, 8))[:3080, :3072])
    bkg = background(sci, msk)
    sources = extract(sci, msk)
    x, y = np.asarray(sources["x"], float), np.asarray(sources["y"], float)
    rng = np.random.default_rng(1)
    extra = max(NSOURCES[size] - x.size, 0)
    x = np.r_[x, rng.uniform(0, sci.shape[1] - 1, extra)][:NSOURCES[size]]
    y = np.r_[y, rng.uniform(0, sci.shape[0] - 1, extra)][:NSOURCES[size]]
    bad = np.zeros(sci.shape, bool) if msk is None else (msk & int(MaskBits.BAD)) != 0
    return {"sci": sci, "msk": msk, "bad": bad, "level": bkg.level, "rms": bkg.rms, "x": x, "y": y}


def ours(d):
    return aperture_photometry(d["sci"], d["x"], d["y"], mskimg=d["msk"], background=d["level"],
                               bkg_rms=d["rms"])


def photutils_peer(d):
    from photutils.aperture import CircularAperture
    from photutils.aperture import aperture_photometry as pu_photometry

    pos = np.column_stack([d["x"], d["y"]])
    return pu_photometry(d["sci"] - d["level"], [CircularAperture(pos, r) for r in RADII], error=d["rms"],
                         mask=d["bad"], method="exact")


def sep_peer(d):
    import sep

    data = d["sci"] - d["level"]
    return [sep.sum_circle(data, d["x"], d["y"], r, err=d["rms"], mask=d["bad"], subpix=0) for r in RADII]


CASES = [
    Case(
        name="photom.aperture",
        description="six exact circular apertures (diameters 2-14 px) of 20,000 positions on one quadrant, "
                    "background map subtracted, bad pixels left out, errors from the rms map",
        setup=setup,
        ours=ours,
        peers={"photutils (exact)": photutils_peer, "sep sum_circle (subpix=0)": sep_peer},
    ),
]
