"""Resampling one quadrant onto another epoch's grid: ztfsds against reproject doing the same job.

The data: the real IPAC quadrant ``ztf_20200924431759_000655_zr_c13_o_q3`` (sciimg and mskimg, 3080 x
3072) read from ``$ZTFSDS_REAL_QUADRANT_DIR`` (default ``/work/shared/data/ztfimg-pypi-0.19.0``), with a
variance ``sci / gain + 80 DN^2``; without it, a seeded simulated star field with a random mask. The
mapping: IPAC's real TPV WCS of that quadrant (``tests/data/real_sciimg_header.txt``) to the same WCS
moved by 20" and rotated by 0.05 deg (a second epoch of the field). ``small`` crops to 256 x 256.

``refimg.resample``: ours (`ztfsds.refimg.resample.resample`, one thread) builds the mapping (astropy
on a 16 px grid, a bicubic spline in between) and resamples image + variance + mask with Lanczos3 and
flux conservation. reproject's `reproject_interp` resamples the image only (no variance, no mask, no
Jacobian: a surface brightness) with its exact astropy mapping at every pixel, bilinear or bicubic
(scipy's ``map_coordinates``): it does less than ours. ``refimg.resample_image``: ours on the image
alone, against reproject bilinear.
"""

import os
from pathlib import Path

import numpy as np

from ztfsds.bench import Case
from ztfsds.refimg.resample import resample

STEM = "ztf_20200924431759_000655_zr_c13_o_q3"
REAL_DIR = Path(os.environ.get("ZTFSDS_REAL_QUADRANT_DIR", "/work/shared/data/ztfimg-pypi-0.19.0"))
HEADER = Path(__file__).resolve().parents[1] / "tests" / "data" / "real_sciimg_header.txt"
FULL = (3080, 3072)


def wcs_pair():
    """IPAC's real TPV WCS and the same moved by 20" in RA, -7" in Dec and rotated by 0.05 deg."""
    from astropy.io import fits
    from astropy.wcs import WCS

    h = fits.Header.fromtextfile(HEADER)
    h2 = h.copy()
    h2["CRVAL1"] += 20.0 / 3600.0 / np.cos(np.radians(h["CRVAL2"]))
    h2["CRVAL2"] -= 7.0 / 3600.0
    t = np.radians(0.05)
    cd = np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]])
    cd = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ cd
    for i in range(2):
        for j in range(2):
            h2[f"CD{i + 1}_{j + 1}"] = cd[i, j]
    return WCS(h), WCS(h2)


def _simulated(shape):
    rng = np.random.default_rng(11)
    sci = rng.normal(150.0, 12.0, shape).astype(np.float32)
    n = shape[0] * shape[1] // 1000
    ys, xs = rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)
    np.add.at(sci, (ys, xs), rng.pareto(1.5, n).astype(np.float32) * 200.0)
    msk = np.zeros(shape, np.int16)
    msk[ys, xs] = 2
    msk[rng.random(shape) < 3e-4] = 256
    return sci, msk


def setup(size):
    from astropy.io import fits

    sci_path, msk_path = REAL_DIR / f"{STEM}_sciimg.fits", REAL_DIR / f"{STEM}_mskimg.fits"
    if sci_path.exists() and msk_path.exists():
        sci = np.ascontiguousarray(fits.getdata(sci_path), dtype=np.float32)
        msk = np.ascontiguousarray(fits.getdata(msk_path), dtype=np.int16)
    else:
        sci, msk = _simulated(FULL)
    if size == "small":
        sci, msk = np.ascontiguousarray(sci[:256, :256]), np.ascontiguousarray(msk[:256, :256])
    var = (np.maximum(sci, 0.0) / 6.2 + 80.0).astype(np.float32)
    w_in, w_out = wcs_pair()
    return sci, var, msk, w_in, w_out


def ours(data):
    sci, var, msk, w_in, w_out = data
    return resample(sci, w_in, w_out, sci.shape, variance=var, mask=msk, workers=1)


def ours_image(data):
    sci, _, _, w_in, w_out = data
    return resample(sci, w_in, w_out, sci.shape, workers=1)


def reproject_peer(order):
    def run(data):
        from reproject import reproject_interp

        sci, _, _, w_in, w_out = data
        return reproject_interp((sci, w_in), w_out, shape_out=sci.shape, order=order)
    return run


CASES = [
    Case(
        name="refimg.resample",
        description="one quadrant + variance + mask onto a second epoch's TPV grid (Lanczos3, flux-conserving); "
                    "reproject: the image only",
        setup=setup,
        ours=ours,
        peers={"reproject_interp bilinear": reproject_peer("bilinear"),
               "reproject_interp bicubic": reproject_peer("bicubic")},
    ),
    Case(
        name="refimg.resample_image",
        description="one quadrant (image only) onto a second epoch's TPV grid",
        setup=setup,
        ours=ours_image,
        peers={"reproject_interp bilinear": reproject_peer("bilinear")},
    ),
]
