"""PSF-fit photometry of one science quadrant: ztfsds against photutils' PSFPhotometry.

The image is the real IPAC quadrant ``ztf_20200924431759_000655_zr_c13_o_q3_{sciimg,mskimg}.fits``
(3080 x 3072) read from ``$ZTFSDS_REAL_QUADRANT_DIR`` (default ``/work/shared/data/ztfimg-pypi-0.19.0``);
without it, ``full`` tiles the 400 x 400 test cutout 8 x 8 (no mask), as ``bench_extract.py`` does.
``small`` is the cutout itself. In the setup (not timed): the sources of `ztfsds.astrom.extract`
(~12,000 on the real quadrant), its background maps, and the PSF of `ztfsds.photom.psf.build_psf`.

* ``photom.psf_model_and_psfcat``: the budgeted work of the stage: `build_psf` + `psf_photometry` with
  the pipeline's parameters (`~ztfsds.config.PhotomParams`).
* ``photom.psf_photometry``: ours, `ztfsds.photom.psffit.psf_photometry` on every source (flux and
  position, blends fitted together, 2 passes, fit radius 3 px, group radius 4 px), one thread. No peer:
  photutils on ~12,000 sources takes minutes; see the next case.
* ``photom.psf_photometry_strip``: both on the same subset, the sources of a strip of 1/8 of the image
  height (~1,500 sources, the whole image given to both): ours as above; photutils
  ``PSFPhotometry(ImagePSF(our PSF's oversampled grid at the centre of the image), fit_shape=(5, 5),
  grouper=SourceGrouper(4), aperture_radius=3)`` with the same first positions and fluxes, the
  background-subtracted image, our mask and an error map ``sqrt(rms^2 + max(data, 0) / gain)``. The ratio
  of this case applies to the full quadrant (both scale linearly with the number of sources).
* ``photom.forced_photometry``: ours, `forced_photometry` at every source position (PSF amplitude only).
"""

import os
from pathlib import Path

import numpy as np

from ztfsds.bench import Case

STEM = "ztf_20200924431759_000655_zr_c13_o_q3"
REAL_DIR = Path(os.environ.get("ZTFSDS_REAL_QUADRANT_DIR", "/work/shared/data/ztfimg-pypi-0.19.0"))
CUTOUT = Path(__file__).resolve().parents[1] / "tests" / "data" / f"{STEM}_cutout.fits.gz"
GAIN = 6.0
SATURATE = 58647.0
STRIP = 8


def quadrant(size):
    """(sciimg, mskimg or None): the real quadrant, or the test cutout (tiled for 'full')."""
    from astropy.io import fits

    real = REAL_DIR / f"{STEM}_sciimg.fits"
    if size == "full" and real.exists():
        sci = np.ascontiguousarray(fits.getdata(real), dtype=np.float32)
        msk = np.asarray(fits.getdata(REAL_DIR / f"{STEM}_mskimg.fits")).astype(np.int16)
        return sci, msk
    cut = np.ascontiguousarray(fits.getdata(CUTOUT), dtype=np.float32)
    if size == "small":
        return cut, None
    return np.ascontiguousarray(np.tile(cut, (8, 8))[:3080, :3072]), None


def setup(size):
    from ztfsds.astrom.extraction import background, extract
    from ztfsds.photom.psf import build_psf

    sci, msk = quadrant(size)
    src = extract(sci, msk, gain=GAIN, saturate=SATURATE)
    bkg = background(sci, msk)
    psf = build_psf(sci, msk, src, gain=GAIN)
    return {"sci": sci, "msk": msk, "src": src, "bkg": bkg, "psf": psf}


def setup_strip(size):
    d = setup(size)
    ny = d["sci"].shape[0]
    y = np.asarray(d["src"]["y"])
    d["src"] = d["src"][(y >= ny * 3 / STRIP) & (y < ny * 4 / STRIP)]
    return d


def ours(d):
    from ztfsds.photom.psffit import psf_photometry

    return psf_photometry(d["sci"], d["psf"], d["src"]["x"], d["src"]["y"], mskimg=d["msk"],
                          background=d["bkg"].level, bkg_rms=d["bkg"].rms, gain=GAIN, saturate=SATURATE)


def ours_psf_and_psfcat(d):
    """The stage's budgeted work: the PSF model from the extraction's stars, then the PSF-fit catalog
    (with the pipeline's profile error)."""
    from ztfsds.config import PhotomParams
    from ztfsds.photom.psf import build_psf
    from ztfsds.photom.psffit import psf_photometry

    p = PhotomParams()
    psf = build_psf(d["sci"], d["msk"], d["src"], size=p.psf_size, oversample=p.psf_oversampling,
                    degree=p.psf_degree, max_stars=p.psf_max_stars, gain=GAIN, saturate=SATURATE)
    return psf_photometry(d["sci"], psf, d["src"]["x"], d["src"]["y"], d["src"]["flux"], mskimg=d["msk"],
                          background=d["bkg"].level, bkg_rms=d["bkg"].rms, gain=GAIN, saturate=SATURATE,
                          fit_radius=p.fit_radius, group_radius=p.group_radius, max_group=p.max_group,
                          psf_error=p.psf_error)


def ours_forced(d):
    from ztfsds.photom.psffit import forced_photometry

    return forced_photometry(d["sci"], d["psf"], d["src"]["x"], d["src"]["y"], mskimg=d["msk"],
                             background=d["bkg"].level, bkg_rms=d["bkg"].rms, gain=GAIN)


def photutils_peer(d):
    from astropy.table import Table
    from photutils.psf import ImagePSF, PSFPhotometry, SourceGrouper

    from ztfsds.products import MaskBits

    psf = d["psf"]
    ny, nx = d["sci"].shape
    grid = psf.oversampled((nx - 1) / 2.0, (ny - 1) / 2.0)
    model = ImagePSF(grid / grid.sum(), oversampling=psf.oversample)
    data = d["sci"] - d["bkg"].level
    mask = ~np.isfinite(data) if d["msk"] is None else ((d["msk"] & int(MaskBits.BAD)) != 0) | ~np.isfinite(data)
    error = np.sqrt(d["bkg"].rms ** 2 + np.maximum(np.nan_to_num(data), 0) / GAIN)
    init = Table({"x": np.asarray(d["src"]["x"]), "y": np.asarray(d["src"]["y"]),
                  "flux": np.asarray(d["src"]["flux"])})
    phot = PSFPhotometry(model, (5, 5), grouper=SourceGrouper(4.0), aperture_radius=3)
    return phot(data, mask=mask, error=error, init_params=init)


CASES = [
    Case(
        name="photom.psf_model_and_psfcat",
        description="PSF model (degree 2, oversampled 3x, from up to 300 stars) + PSF-fit catalog of every "
                    "source of one quadrant, as run_photom does it (budget: 2 s on one core); the ratio "
                    "against photutils is the strip case's",
        setup=setup,
        ours=ours_psf_and_psfcat,
        peers={},
    ),
    Case(
        name="photom.psf_photometry",
        description="PSF-fit catalog (flux + position, blends together) of every source of one quadrant "
                    "(~12k on the real one); sources, background and PSF made in the setup",
        setup=setup,
        ours=ours,
        peers={},
    ),
    Case(
        name="photom.psf_photometry_strip",
        description=f"PSF-fit photometry of the sources of a 1/{STRIP}-height strip of one quadrant "
                    "(~1.5k on the real one): ours against photutils PSFPhotometry (ImagePSF of our PSF, "
                    "5x5 fit shape, SourceGrouper(4)); the ratio holds for the full quadrant",
        setup=setup_strip,
        ours=ours,
        peers={"photutils PSFPhotometry": photutils_peer},
        repeat=1,
    ),
    Case(
        name="photom.forced_photometry",
        description="forced PSF photometry (amplitude only) at every source position of one quadrant",
        setup=setup,
        ours=ours_forced,
        peers={},
    ),
]
