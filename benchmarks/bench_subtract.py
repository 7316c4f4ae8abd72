"""The subtraction stage on one full quadrant: resampling + ZOGY + candidates (budget: 3 s on one core).

``subtract.stage``: `ztfsds.subtract.subtract_images` on the real IPAC quadrant (``$ZTFSDS_REAL_QUADRANT_DIR``,
default ``/work/shared/data/ztfimg-pypi-0.19.0``; without it the test cutout tiled 8 x 8) as the new image,
and as the reference the same image put through a 0.4 px / 0.3 px shift of its WCS (so that it must be
resampled back), with its noise reduced 3x as a co-add's would be, scaled to zero point 27. Point sources
are injected into the new image so that there are candidates to measure. Timed: the resampling of the
reference (image, variance, mask), the flux-ratio fit, the reference PSF refitted on the resampled image,
ZOGY with variance maps, streak detection and the candidates with their PSF fits, features and cutouts.
The setup (not timed) extracts sources and fits both PSFs and catalogs. The peer is the PyZOGY-style
numpy implementation of ``bench_zogy.py`` on the same (already aligned) pair: the subtraction alone.
"""

import os
from pathlib import Path

import numpy as np

from ztfsds.bench import Case

STEM = "ztf_20200924431759_000655_zr_c13_o_q3"
REAL_DIR = Path(os.environ.get("ZTFSDS_REAL_QUADRANT_DIR", "/work/shared/data/ztfimg-pypi-0.19.0"))
HEADER = Path(__file__).resolve().parents[1] / "tests" / "data" / "real_sciimg_header.txt"


def setup(size):
    from astropy.io import fits
    from astropy.wcs import WCS

    from ztfsds.astrom.extraction import background, extract
    from ztfsds.photom.psf import build_psf
    from ztfsds.photom.psffit import psf_photometry
    from ztfsds.photom.runner import psfcat_table
    from ztfsds.refimg.resample import resample
    from ztfsds.subtract.fakes import inject_point_sources

    header = fits.Header.fromtextfile(HEADER)
    real = REAL_DIR / f"{STEM}_sciimg.fits"
    if real.exists():
        sci = np.asarray(fits.getdata(real), dtype=np.float32)
        msk = np.asarray(fits.getdata(REAL_DIR / f"{STEM}_mskimg.fits")).astype(np.int16)
    else:
        cut = fits.getdata(Path(__file__).resolve().parents[1] / "tests" / "data" / f"{STEM}_cutout.fits.gz")
        sci = np.ascontiguousarray(np.tile(cut, (8, 8))[:3080, :3072], dtype=np.float32)
        msk = np.zeros(sci.shape, np.int16)
    if size == "small":
        sci, msk = sci[:512, :512].copy(), msk[:512, :512].copy()
        header["NAXIS1"], header["NAXIS2"] = 512, 512
    sci = np.where(np.isfinite(sci), sci, 0.0).astype(np.float32)
    gain, sat = float(header["GAIN"]), float(header["SATURATE"])
    wcs = WCS(header)
    src = extract(sci, msk, gain=gain, saturate=sat)
    bkg = background(sci, msk)
    psf = build_psf(sci, msk, src, gain=gain, saturate=sat)
    # the reference: the image on a WCS shifted by (0.4, 0.3) px, 3x less noisy, at zero point 27
    ref_header = header.copy()
    ref_header["CRPIX1"] = header["CRPIX1"] + 0.4
    ref_header["CRPIX2"] = header["CRPIX2"] + 0.3
    scale = 10 ** (0.4 * (27.0 - header["MAGZP"]))
    rs = resample(sci - bkg.level, wcs, WCS(ref_header), sci.shape, mask=msk)
    rng = np.random.default_rng(1)
    smooth = np.where(np.isfinite(rs.image), rs.image, 0.0)
    ref = ((smooth + rng.normal(0, 1, sci.shape) * np.median(bkg.rms) / 3) * scale).astype(np.float32)
    ref_header["MAGZP"] = 27.0
    ref_msk = np.where(rs.footprint, rs.mask if rs.mask is not None else 0, int(2**10)).astype(np.int16)
    rsrc = extract(ref, ref_msk, gain=gain * 9 / scale)
    rbkg = background(ref, ref_msk)
    rpsf = build_psf(ref, ref_msk, rsrc, gain=gain * 9 / scale)
    fit = psf_photometry(ref, rpsf, rsrc["x"], rsrc["y"], rsrc["flux"], mskimg=ref_msk, background=rbkg.level,
                         bkg_rms=rbkg.rms)
    rcat = psfcat_table(fit, rsrc, WCS(ref_header), 27.0)
    rsrc["ra"], rsrc["dec"] = WCS(ref_header).all_pix2world(np.asarray(rsrc["x"]), np.asarray(rsrc["y"]), 0)
    ny, nx = sci.shape
    new = inject_point_sources(sci, psf, rng.uniform(20, nx - 20, 300), rng.uniform(20, ny - 20, 300),
                               10 ** (-0.4 * (rng.uniform(17, 21, 300) - header["MAGZP"])))
    var = (np.median(bkg.rms) ** 2 + np.maximum(new - bkg.level, 0) / gain).astype(np.float32)
    rvar = np.full(sci.shape, (np.median(rbkg.rms)) ** 2, np.float32)
    return dict(new=new, header=header, msk=msk, var=var, psf=psf, ref=ref, ref_header=ref_header, ref_msk=ref_msk,
                ref_var=rvar, ref_psf=rpsf, refcat=rcat, ref_sources=rsrc)


#: The steps of the acceptance budget "resampling + ZOGY + candidates <= 3 s" (streak detection and the
#: two real-bogus scores are timed too, outside it).
CORE_STEPS = ("resample", "prepare", "ref_psf", "zogy", "candidates")


def ours(d):
    from ztfsds.subtract import subtract_images

    sub = subtract_images(d["new"], d["header"], d["msk"], d["var"], d["psf"], d["ref"], d["ref_header"],
                          d["ref_msk"], d["ref_var"], d["ref_psf"], refcat=d["refcat"], ref_sources=d["ref_sources"])
    t = sub.timings
    core = sum(t[k] for k in CORE_STEPS)
    print("  subtract.stage steps [s]: " + ", ".join(f"{k} {v:.2f}" for k, v in t.items())
          + f"; resampling + ZOGY + candidates {core:.2f} (budget 3); {len(sub.candidates)} candidates")
    return sub


def _bench_zogy():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_zogy", Path(__file__).with_name("bench_zogy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pyzogy_peer(d):
    ny, nx = d["new"].shape
    pn = d["psf"].stamp((nx - 1) / 2, (ny - 1) / 2, size=25)
    pr = d["ref_psf"].stamp((nx - 1) / 2, (ny - 1) / 2, size=25)
    data = {"new": d["new"] - np.median(d["new"]), "ref": d["ref"] * 10 ** (0.4 * (d["header"]["MAGZP"] - 27.0)),
            "p_n": pn / pn.sum(), "p_r": pr / pr.sum(), "var_new": d["var"], "var_ref": d["ref_var"]}
    return _bench_zogy().pyzogy_style(data)


CASES = [
    Case(
        name="subtract.stage",
        description="resampling of the reference + flux ratio + reference PSF on the science grid + ZOGY with "
                    "variance maps + streaks + candidates (PSF fits on D, features, cutouts) of one quadrant "
                    "(budget 3 s); peer: PyZOGY-style ZOGY alone on the aligned pair",
        setup=setup,
        ours=ours,
        peers={"PyZOGY-style ZOGY only": pyzogy_peer},
        repeat=3,
    ),
]
