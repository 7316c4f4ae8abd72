"""Source extraction of one science quadrant: ztfsds against sep and photutils doing the same job.

The image is the real IPAC quadrant ``ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits`` (3080 x 3072,
float32 DN), read from ``$ZTFSDS_REAL_QUADRANT_DIR`` (default ``/work/shared/data/ztfimg-pypi-0.19.0``);
it is not in the repository. Without it, ``full`` tiles the 400 x 400 cutout of ``tests/data`` 8 x 8
times and crops to the quadrant's shape (same density of sources). ``small`` is the cutout itself.

``astrom.extract``: every implementation estimates the background (64 px cells, 3 x 3 median filter),
filters with sep's default 3 x 3 kernel, detects at sep's ``thresh=5`` with a scalar ``err`` (ours:
the same pixels, 5 x 16 / 6 = 13.3 sigma of its matched filter), keeps 5-pixel components,
deblends (32 levels, contrast 0.005) and measures the sources:

* ours: `ztfsds.astrom.extraction.extract` (isophotal and windowed centroids and their errors, moments,
  isophotal and 4 px aperture fluxes with errors, FWHM, flags), one thread;
* ``sep``: ``sep.Background`` + ``sep.extract`` (isophotal measurements only; it also CLEANs);
* ``sep + winpos + aperture``: the same plus what ours also measures: ``sep.flux_radius``,
  ``sep.winpos`` and ``sep.sum_circle`` at 4 px;
* ``photutils``: ``Background2D`` (SExtractor estimator) + ``astropy.convolution.convolve`` +
  ``detect_sources`` + ``deblend_sources`` + ``SourceCatalog`` (centroids, moments, FWHM, segment flux)
  and its ``circular_photometry(4)``, as photutils' documentation does it.

``astrom.extract_ztf``: ours with the pipeline's parameters (`~ztfsds.config.AstromParams`: 128 px
cells, a Gaussian matched filter of FWHM 2 px at 5 sigma, which finds ~50 % more, fainter sources).
"""

import os
from pathlib import Path

import numpy as np

from ztfsds.astrom.extraction import extract
from ztfsds.bench import Case
from ztfsds.config import AstromParams

STEM = "ztf_20200924431759_000655_zr_c13_o_q3"
REAL_DIR = Path(os.environ.get("ZTFSDS_REAL_QUADRANT_DIR", "/work/shared/data/ztfimg-pypi-0.19.0"))
CUTOUT = Path(__file__).resolve().parents[1] / "tests" / "data" / f"{STEM}_cutout.fits.gz"
SEP_KERNEL = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32)
#: sep's thresh=5 with a scalar err is applied to the unit-sum filtered image in units of the raw rms:
#: 5 * sum(k) / sqrt(sum(k**2)) sigma of the matched filter
SEP_EQUIVALENT_THRESHOLD = float(5.0 * SEP_KERNEL.sum() / np.sqrt((SEP_KERNEL**2).sum()))
APER_RADIUS = 4.0


def quadrant(size):
    """The science image (native float32): the real quadrant, or the test cutout (tiled for 'full')."""
    from astropy.io import fits

    real = REAL_DIR / f"{STEM}_sciimg.fits"
    if size == "full" and real.exists():
        return np.ascontiguousarray(fits.getdata(real), dtype=np.float32)
    cut = np.ascontiguousarray(fits.getdata(CUTOUT), dtype=np.float32)
    if size == "small":
        return cut
    return np.ascontiguousarray(np.tile(cut, (8, 8))[:3080, :3072])


def ours(sci):
    params = AstromParams(background_mesh=64, detect_threshold=SEP_EQUIVALENT_THRESHOLD)
    return extract(sci, params=params, kernel=SEP_KERNEL, aper_radius=APER_RADIUS)


def ours_ztf(sci):
    return extract(sci, aper_radius=APER_RADIUS)


def sep_extract(sci):
    import sep

    bkg = sep.Background(sci)
    return sep.extract(sci - bkg, 5.0, err=bkg.globalrms), bkg


def sep_full(sci):
    import sep

    objs, bkg = sep_extract(sci)
    data = sci - bkg
    r50, _ = sep.flux_radius(data, objs["x"], objs["y"], 6.0 * objs["a"], 0.5, normflux=objs["flux"], subpix=5)
    xw, yw, _ = sep.winpos(data, objs["x"], objs["y"], 2.0 / 2.3548 * r50)
    flux, err, _ = sep.sum_circle(data, objs["x"], objs["y"], APER_RADIUS, err=bkg.globalrms, subpix=5)
    return objs, xw, yw, flux, err


def photutils_peer(sci):
    from astropy.convolution import convolve
    from photutils.background import Background2D, SExtractorBackground
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources

    bkg = Background2D(sci, 64, filter_size=3, bkg_estimator=SExtractorBackground())
    data = sci - bkg.background
    conv = convolve(data, SEP_KERNEL / SEP_KERNEL.sum())
    segm = detect_sources(conv, 5.0 * bkg.background_rms_median, 5)
    segm = deblend_sources(conv, segm, 5, n_levels=32, contrast=0.005, progress_bar=False)
    cat = SourceCatalog(data, segm, convolved_data=conv)
    table = cat.to_table(columns=["x_centroid", "y_centroid", "segment_flux", "semimajor_axis",
                                  "semiminor_axis", "orientation", "fwhm", "max_value"])
    return table, cat.circular_photometry(APER_RADIUS)


CASES = [
    Case(
        name="astrom.extract",
        description="background + detection + deblending + measurements of one quadrant at sep's default "
                    "settings (3x3 filter, thresh 5 with a scalar err, 64 px cells)",
        setup=quadrant,
        ours=ours,
        peers={"sep": lambda sci: sep_extract(sci)[0], "sep + winpos + aperture": sep_full,
               "photutils": photutils_peer},
    ),
    Case(
        name="astrom.extract_ztf",
        description="background + extraction of one quadrant with the pipeline's parameters (AstromParams)",
        setup=quadrant,
        ours=ours_ztf,
        peers={"sep": lambda sci: sep_extract(sci)[0]},
    ),
]
