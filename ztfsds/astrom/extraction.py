"""Source extraction from a calibrated quadrant: background, detection, deblending and measurements.

`background` estimates the sky level and noise of a ``sciimg``; `extract` finds and measures the
sources on it, as SExtractor (and sep) do, for the astrometric and photometric stages. The hot loops
are compiled (`ztfsds._ext._extract`, without the GIL); `ztfsds._ext.reference` holds their pure numpy
equivalents.

Conventions
-----------
* **Pixels** are **0-based numpy** ``(x, y)``: ``x`` the column, ``y`` the row, pixel ``(0, 0)`` the
  centre of array element ``[0, 0]`` (SExtractor's ``X_IMAGE`` minus 1, as sep).
* **Units.** ``sciimg`` is in DN (``adu`` in the table), ``varimg`` in DN^2.
* **Masks.** Pixels with a `~ztfsds.products.MaskBits` bit of `DETECT_EXCLUDE` (every bit of
  ``MaskBits.BAD`` except SATURATED) or a non-finite value are never detected nor measured;
  saturated pixels are (and flag their source). The background ignores every ``MaskBits.BAD`` bit
  (`BACKGROUND_EXCLUDE`). ``SOURCE`` and ``PSF_SOURCE`` are informational and ignored.

Background (`background`)
-------------------------
The image is cut into cells of ``mesh x mesh`` pixels from pixel (0, 0); a remainder of at least half a
mesh at the far edges makes a last, narrower row or column of cells, a smaller one widens the last
(SExtractor makes a cell of any remainder, noisy when it is a few pixels wide). In each cell with at
least half of its pixels good, as SExtractor's ``backstat`` and ``backguess``: the mean and standard
deviation of the good values; their mean ``m0`` and deviation ``s0`` after one clip at 2 sigma; a
histogram of ``m0 +- 5 s0`` in ``min(n + 1, 4096)`` bins; then up to 100 rounds of 3-sigma clipping
about the median on the histogram (the median interpolated in the cumulative histogram, mean and
deviation from bin centres) until the deviation changes by less than 1e-4 of itself. The cell's level
is the mode estimate ``2.5 median - 1.5 mean`` when ``|mean - median| < 0.3 sigma``, else the median
(a crowded cell); its rms is the clipped deviation. Cells with too few good pixels take the
inverse-distance-squared mean of the valid cells. Both grids are median-filtered (``filter_size x
filter_size`` cells; beyond the grid's edges the cells are continued by point reflection,
``2 edge - mirror``, so that a gradient is not bent there, where SExtractor repeats the edge cells),
then interpolated to full size by a bicubic spline: natural cubic splines through the cell centres,
first along y for each column of cells, then along x (beyond the outer centres the end cubics
continue). ``global_level`` and ``global_rms`` are the medians of the filtered grids.

Detection
---------
The background-subtracted image (0 on excluded pixels) is correlated with the kernel ``k``: by default a
circular Gaussian of FWHM ``fwhm_guess`` sampled at the pixel centres out to ``ceil(3 sigma)`` pixels
(`gaussian_kernel`). A pixel is detected where

    ``(k * (sciimg - level)) / (rms * sqrt(sum(k**2))) >= detect_threshold``,

i.e. where the matched filter exceeds ``detect_threshold`` sigma of its own noise for background-limited
pixels (``rms`` the background rms map); off the image the kernel sees zeros. SExtractor, and sep with a
scalar ``err``, apply their threshold ``t`` to the image filtered with the kernel normalised to unit
sum, in units of the *unfiltered* rms: that is ours at ``t sum(k) / sqrt(sum(k**2))`` (13.3 sigma for
``t = 5`` and sep's default 3 x 3 kernel), so ours at 5 sigma goes deeper (on the real IPAC quadrant
that the test cutout comes from: ~12,000 sources where sep's defaults find 7,741). Detected pixels are grouped into
connected components (8-connectivity); components of fewer than ``min_area`` pixels are dropped.

Deblending
----------
Two passes of SExtractor's multi-threshold deblending. A component's tree has ``deblend_nthresh`` levels
``t_i = T (peak / T)**(i / N)``, ``i = 0 .. N - 1``, between the threshold ``T`` and its peak; the
connected parts above each level are its nodes. From the top down, a node splits when at least two of
its children are significant: each holds more than ``deblend_mincont`` of the component's total
(``sum(D - t_i)`` over the child's pixels against ``sum(D)`` over the component) and, in the second
pass, rises at least ``deblend_minrise`` above ``t_i``; its significant children with no split above
them become objects. Pixels in no object go to the object whose bivariate Gaussian is largest there
(its ``D``-weighted moments plus ``(fwhm_guess / 2.3548)**2`` on the diagonal, normalised to its
``sum(D)``; SExtractor draws at random from the same probabilities).

1. ``D`` is the detection image (the matched filter in sigma): SExtractor's deblending
   (``DEBLEND_NTHRESH``, ``DEBLEND_MINCONT``). The filter fills the saddle between stars closer than
   about 1.7 FWHM (sep and SExtractor do not split them either).
2. Each object of pass 1 is split again with ``D = (sciimg - level) / rms``, the unfiltered pixels in
   sigma, with the extra noise criterion ``deblend_minrise`` (default 4 sigma): this separates
   stars 3 px apart at FWHM 2 px, where a noise bump rarely rises that far.

Measurements
------------
Per object, on ``sciimg - level`` (``I``); ``V`` the pixel variance: ``varimg`` when given, else
``rms**2 + max(I, 0) / gain`` (``rms**2`` without ``gain``):

* isophotal (over the object's pixels): ``flux_iso = sum(I)``, its error ``sqrt(sum(V))``, the
  barycentre ``x_iso, y_iso`` and second moments ``x2, y2, xy`` weighted by ``I`` (unweighted when
  ``sum(I) <= 0``; ``1/12`` added to ``x2`` and ``y2`` when they are singular, as SExtractor),
  ``a, b, theta, elongation`` from them (``theta`` in degrees from +x towards +y), ``peak``
  (largest ``I``), ``npix``;
* ``flux``: the sum of ``I`` in a circle of radius ``aper_radius`` about the barycentre, with 5 x 5
  sub-pixels per pixel (as sep), its error from ``V`` likewise; ``flux_radius``, the radius holding
  half of it (SExtractor's ``FLUX_RADIUS`` within that aperture); ``snr = flux / flux_err``;
* ``x, y``: SExtractor's windowed centroid ``XWIN_IMAGE``: starting at the barycentre,
  ``x <- x + 2 sum(w I dx) / sum(w I)`` with ``w = exp(-r**2 / (2 s**2))`` over the pixels within
  ``r < 4 s``, ``s = 2 flux_radius / 2.3548`` (kept within 0.3 - 10 px; the kernel's sigma when the
  flux is not positive), until a step is smaller than 1e-4 px (at most 16 rounds). Its error is
  SExtractor's ``ERRX2WIN``: ``x_err**2 = 4 sum(w**2 V dx**2) / sum(w I)**2``, ``xy_cov`` likewise.
  When it does not converge or moves more than ``2 s`` away, ``x, y`` are the barycentre (with the
  isophotal errors ``sum(V dx**2) / sum(I)**2``) and bit WIN_FALLBACK is set;
* ``fwhm``: SExtractor's ``FWHM_IMAGE``: a fit of ``log(I) = c - k r**2`` (``r`` from the
  barycentre) weighted by ``I**2`` over the object's unsaturated pixels above ``max(peak / 5,
  detect_threshold * rms)``, ``fwhm = 2 sqrt(ln 2 / k) - 1 / (4 fwhm)`` (SExtractor's correction for
  undersampling), ``k`` at least ``1 / (13 a b)``; NaN when there are too few pixels. It measures the
  core of a point source (a Moffat's FWHM plus ~10 % from the pixels); it is meaningless for
  saturated sources;
* ``background``: the background level at the pixel nearest ``(x, y)``.

In the aperture and the window, a pixel of another object or an excluded pixel is replaced by its
mirror about the pixel nearest the barycentre when that one is clean, and left out otherwise
(SExtractor's ``MASK_TYPE CORRECT``).

Flags (`SourceFlags`, SExtractor's bit values where they exist): 1 NEIGHBOURS (pixels of another
object in the aperture), 2 BLENDED (deblended from a composite), 4 SATURATED (a saturated pixel in
the object), 8 TRUNCATED (the object touches the image edge), 16 INCOMPLETE (the aperture reaches off
the image or over excluded pixels, or the object touches an excluded pixel), 256 WIN_FALLBACK.

Examples
--------
>>> import numpy as np
>>> from ztfsds.astrom.extraction import extract
>>> rng = np.random.default_rng(0)
>>> yy, xx = np.mgrid[0:64, 0:64]
>>> sci = (100.0 + rng.normal(0.0, 5.0, (64, 64))).astype(np.float32)
>>> for x0, y0 in [(20.3, 30.6), (45.0, 12.2)]:
...     sci += 2000.0 * np.exp(-((xx - x0)**2 + (yy - y0)**2) / (2 * 0.85**2)) / (2 * np.pi * 0.85**2)
>>> cat = extract(sci, gain=6.0)
>>> len(cat)
2
>>> [(round(float(r["x"]), 1), round(float(r["y"]), 1)) for r in cat]
[(45.0, 12.2), (20.3, 30.6)]
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math

import numpy as np
from astropy import units as u
from astropy.table import Table

from .._ext import _extract
from ..config import AstromParams
from ..errors import ConfigError, InputError, NonFiniteError, ShapeError
from ..products import MaskBits

__all__ = ["Background", "SourceFlags", "background", "extract", "gaussian_kernel", "DETECT_EXCLUDE",
           "BACKGROUND_EXCLUDE", "SOURCE_COLUMNS"]

log = logging.getLogger(__name__)

#: Mask bits of pixels never detected nor measured: ``MaskBits.BAD`` but SATURATED.
DETECT_EXCLUDE = int(MaskBits.BAD) & ~int(MaskBits.SATURATED)
#: Mask bits of pixels left out of the background statistics: ``MaskBits.BAD``.
BACKGROUND_EXCLUDE = int(MaskBits.BAD)
#: A cell enters the background grid when at least this fraction of its pixels is good (SExtractor).
MIN_GOOD_FRACTION = 0.5
#: Windowed centroid: most rounds, smallest step [px], window sigma range [px] (SExtractor: 16, 1e-4).
WIN_MAXITER = 16
WIN_MINSTEP = 1e-4
WIN_SIGMA_RANGE = (0.3, 10.0)

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: (name, dtype, unit, description) of every column of the `extract` table, in order.
SOURCE_COLUMNS = (
    ("id", np.int32, None, "number of the source, 1 = largest flux"),
    ("x", np.float64, u.pix, "windowed centroid x (0-based column)"),
    ("y", np.float64, u.pix, "windowed centroid y (0-based row)"),
    ("x_err", np.float64, u.pix, "1-sigma error of x"),
    ("y_err", np.float64, u.pix, "1-sigma error of y"),
    ("xy_cov", np.float64, u.pix**2, "covariance of the x and y errors"),
    ("x_iso", np.float64, u.pix, "isophotal barycentre x"),
    ("y_iso", np.float64, u.pix, "isophotal barycentre y"),
    ("x_peak", np.int32, u.pix, "x of the brightest pixel"),
    ("y_peak", np.int32, u.pix, "y of the brightest pixel"),
    ("flux", np.float64, u.adu, "flux in the circular aperture"),
    ("flux_err", np.float64, u.adu, "1-sigma error of flux"),
    ("flux_iso", np.float64, u.adu, "isophotal flux"),
    ("flux_iso_err", np.float64, u.adu, "1-sigma error of flux_iso"),
    ("snr", np.float64, None, "flux / flux_err"),
    ("peak", np.float64, u.adu, "largest background-subtracted pixel value"),
    ("background", np.float64, u.adu, "background level at the centroid"),
    ("npix", np.int32, None, "number of pixels of the object (isophotal area)"),
    ("x2", np.float64, u.pix**2, "isophotal second moment along x"),
    ("y2", np.float64, u.pix**2, "isophotal second moment along y"),
    ("xy", np.float64, u.pix**2, "isophotal cross moment"),
    ("a", np.float64, u.pix, "isophotal semi-major axis (rms)"),
    ("b", np.float64, u.pix, "isophotal semi-minor axis (rms)"),
    ("theta", np.float64, u.deg, "position angle of a, from +x towards +y"),
    ("elongation", np.float64, None, "a / b"),
    ("fwhm", np.float64, u.pix, "FWHM of the Gaussian with the same windowed moments"),
    ("flux_radius", np.float64, u.pix, "radius holding half of flux"),
    ("flags", np.int16, None, "SourceFlags bits"),
    ("ra", np.float64, u.deg, "right ascension (NaN until the astrometric solution)"),
    ("dec", np.float64, u.deg, "declination (NaN until the astrometric solution)"),
)


class SourceFlags(enum.IntFlag):
    """Bits of the ``flags`` column of `extract` (SExtractor's values where SExtractor has the flag).

    Examples
    --------
    >>> from ztfsds.astrom.extraction import SourceFlags
    >>> SourceFlags(6)
    <SourceFlags.BLENDED|SATURATED: 6>
    """

    NEIGHBOURS = _extract.F_NEIGHBOURS      #: pixels of another object inside the aperture
    BLENDED = _extract.F_BLENDED            #: deblended from a composite detection
    SATURATED = _extract.F_SATURATED        #: a pixel of the object is saturated
    TRUNCATED = _extract.F_TRUNCATED        #: the object touches the image edge
    INCOMPLETE = _extract.F_INCOMPLETE      #: aperture off the image or over excluded pixels
    WIN_FALLBACK = _extract.F_WIN_FALLBACK  #: windowed centroid failed: x, y are the barycentre


@dataclasses.dataclass(frozen=True)
class Background:
    """The sky background of an image.

    Attributes
    ----------
    level : numpy.ndarray
        float32 (ny, nx) background level [DN].
    rms : numpy.ndarray
        float32 (ny, nx) background noise, one standard deviation [DN].
    global_level : float
        Median of the filtered cell levels [DN].
    global_rms : float
        Median of the filtered cell rms [DN].
    mesh_level, mesh_rms : numpy.ndarray or None
        float64 (nby, nbx) filtered cell values the maps interpolate [DN].
    mesh : int or None
        Cell size [px].
    """

    level: np.ndarray
    rms: np.ndarray
    global_level: float
    global_rms: float
    mesh_level: np.ndarray | None = None
    mesh_rms: np.ndarray | None = None
    mesh: int | None = None


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def background(sciimg, mskimg=None, *, mesh: int = 128, filter_size: int = 3, filename=None) -> Background:
    """Estimate the sky background and its noise, as SExtractor does.

    Parameters
    ----------
    sciimg : array-like
        (ny, nx) image [DN], any real dtype (converted once to float32).
    mskimg : array-like, optional
        (ny, nx) integer `~ztfsds.products.MaskBits`; pixels with a `BACKGROUND_EXCLUDE` bit are ignored
        (non-finite pixels always are).
    mesh : int, optional
        Cell size [px].
    filter_size : int, optional
        Side of the median filter of the cell grid, in cells (odd; 1: none).
    filename : str or path-like, optional
        Named in errors.

    Returns
    -------
    Background
        Full-size level and rms maps [DN] and their global values. The estimator is described in the
        module notes.

    Raises
    ------
    ztfsds.errors.ShapeError
        The image is not 2-D, or the mask has another shape.
    ztfsds.errors.NonFiniteError
        No cell has enough finite, unmasked pixels.
    ztfsds.errors.ConfigError
        ``mesh`` < 2 or ``filter_size`` not a positive odd integer.

    Examples
    --------
    >>> import numpy as np
    >>> from ztfsds.astrom.extraction import background
    >>> rng = np.random.default_rng(1)
    >>> sci = rng.normal(200.0, 10.0, (256, 256)).astype(np.float32)
    >>> bkg = background(sci, mesh=64)
    >>> round(bkg.global_level), round(bkg.global_rms), bkg.level.shape
    (200, 10, (256, 256))
    """
    sci = _as_image(sciimg, "sciimg", filename)
    msk = _as_mask(mskimg, sci.shape, filename)
    code = _classify(sci, msk, None)
    return _background(sci, code, mesh, filter_size, filename)


def extract(sciimg, mskimg=None, varimg=None, *, params: AstromParams | None = None,
            background: Background | None = None, gain: float | None = None, fwhm_guess: float = 2.0,
            kernel=None, saturate: float | None = None, aper_radius: float = 4.0,
            deblend_nthresh: int = 32, deblend_mincont: float = 0.005, deblend_minrise: float = 4.0,
            filename=None) -> Table:
    """Detect, deblend and measure the sources of a calibrated image.

    Parameters
    ----------
    sciimg : array-like
        (ny, nx) calibrated image [DN] (float32 ``sciimg``; any real dtype is converted).
    mskimg : array-like, optional
        (ny, nx) integer `~ztfsds.products.MaskBits` (``mskimg``): pixels with a `DETECT_EXCLUDE` bit are
        neither detected nor measured, SATURATED pixels flag their source.
    varimg : array-like, optional
        (ny, nx) variance of ``sciimg`` [DN^2] (``varimg``), for the errors of the measurements.
    params : `~ztfsds.config.AstromParams`, optional
        ``detect_threshold`` [sigma], ``background_mesh`` [px], ``min_area`` [px].
    background : Background, optional
        A background already estimated (for example by `background` with other settings); estimated
        with ``params.background_mesh`` when omitted.
    gain : float, optional
        [e-/DN]: adds the sources' shot noise ``max(I, 0) / gain`` to the background variance in the
        errors when there is no ``varimg``.
    fwhm_guess : float, optional
        FWHM of the Gaussian detection kernel [px] (ZTF: about 2 px).
    kernel : array-like, optional
        2-D detection kernel instead of the Gaussian (for example sep's default 3 x 3
        ``[[1, 2, 1], [2, 4, 2], [1, 2, 1]]``, which is the Gaussian of FWHM 2 px cut at 3 x 3);
        the threshold is in sigma of the filtered noise whatever its normalisation.
    saturate : float, optional
        Pixels of ``sciimg`` at or above this value [DN] count as saturated (header ``SATURATE``),
        besides those flagged SATURATED in ``mskimg``.
    aper_radius : float, optional
        Radius of the aperture of ``flux`` [px].
    deblend_nthresh : int, optional
        Number of deblending levels (SExtractor's ``DEBLEND_NTHRESH``; 1: no deblending).
    deblend_mincont : float, optional
        Smallest fraction of the total a branch must hold to become an object (``DEBLEND_MINCONT``).
    deblend_minrise : float, optional
        In the deblending pass on the unfiltered image, a branch must also rise this far above its
        level, in sigma of the background [sigma] (``numpy.inf``: no second pass).
    filename : str or path-like, optional
        Named in errors.

    Returns
    -------
    astropy.table.Table
        One row per source, sorted by ``flux`` descending (NaN last), with the columns of
        `SOURCE_COLUMNS` (units: ``pix``, ``adu``, ``deg``); ``meta`` holds the background and
        detection settings. No source: an empty table with every column. All definitions are in the
        module notes.

    Raises
    ------
    ztfsds.errors.ShapeError
        An image is not 2-D, or the mask, variance or background maps do not have its shape.
    ztfsds.errors.NonFiniteError
        No pixel is finite and unmasked (the background cannot be estimated).
    ztfsds.errors.InputError
        A non-numeric image or a non-integer mask.
    ztfsds.errors.ConfigError
        An out-of-range option.

    Examples
    --------
    >>> import numpy as np
    >>> from ztfsds.astrom.extraction import extract
    >>> sci = np.random.default_rng(2).normal(100.0, 5.0, (64, 64)).astype(np.float32)
    >>> cat = extract(sci)              # noise only
    >>> len(cat), cat.colnames[:5]
    (0, ['id', 'x', 'y', 'x_err', 'y_err'])
    """
    params = AstromParams() if params is None else params
    _check_options(fwhm_guess, aper_radius, deblend_nthresh, deblend_mincont, deblend_minrise, gain)
    sci = _as_image(sciimg, "sciimg", filename)
    msk = _as_mask(mskimg, sci.shape, filename)
    var = None if varimg is None else _as_image(varimg, "varimg", filename, shape=sci.shape)
    code = _classify(sci, msk, saturate)
    if background is None:
        bkg = _background(sci, code, params.background_mesh, 3, filename)
    else:
        bkg = _check_background(background, sci.shape, filename)
    ny, nx = sci.shape
    sub = np.empty_like(sci)
    _extract.subtract_rows(sci, bkg.level, code, 0, ny, sub)

    # detection image: matched filter in sigma of its noise
    if kernel is None:
        g = _gaussian_1d(fwhm_guess)
        taps, separable = np.ascontiguousarray(np.vstack([g, g])), True
        norm = float(np.sum(g.astype(np.float64) ** 2))
    else:
        taps, separable = _as_kernel(kernel), False
        norm = float(np.sqrt(np.sum(taps.astype(np.float64) ** 2)))
    det = np.empty_like(sci)
    _extract.detection_rows(sub, taps, separable, bkg.rms, code, 1.0 / norm, 0, ny, det)

    # components, objects, measurements
    segm = np.empty((ny, nx), dtype=np.int32)
    start, pix_y, pix_x = _extract.label(det, np.float32(params.detect_threshold), params.min_area, segm)
    npix = len(pix_y)
    obj_start = np.zeros(npix + 1, dtype=np.int64)
    obj_comp = np.zeros(max(npix, 1), dtype=np.int32)
    obj_blended = np.zeros(max(npix, 1), dtype=np.uint8)
    s_psf = fwhm_guess / _FWHM_PER_SIGMA
    nobj = _extract.deblend(det, sub, bkg.rms, segm, start, pix_y, pix_x, float(params.detect_threshold),
                            int(deblend_nthresh), float(deblend_mincont), float(deblend_minrise), s_psf**2,
                            obj_start,
                            obj_comp, obj_blended)
    out = np.empty((nobj, _extract.N_MEASURE), dtype=np.float64)
    flags = np.zeros(nobj, dtype=np.int32)
    have_var = var is not None
    _extract.measure(sub, var if have_var else bkg.rms, have_var, bkg.rms,
                     0.0 if gain is None else 1.0 / gain, code, segm, obj_start[:nobj + 1], pix_y, pix_x,
                     obj_blended[:nobj], float(params.detect_threshold), float(aper_radius), s_psf,
                     WIN_SIGMA_RANGE[0], WIN_SIGMA_RANGE[1], WIN_MAXITER, WIN_MINSTEP, 0, nobj, out, flags)
    table = _table(out, flags, bkg)
    table.meta.update({"BKGLEVEL": bkg.global_level, "BKGRMS": bkg.global_rms,
                       "THRESH": float(params.detect_threshold), "MINAREA": int(params.min_area),
                       "KERNEL": f"gauss {fwhm_guess:g}" if kernel is None else f"custom {taps.shape}",
                       "APERRAD": float(aper_radius), "NCOMP": int(len(start) - 1)})
    log.debug("extract: %d components, %d sources above %.1f sigma (background %.2f +- %.2f DN)",
              len(start) - 1, nobj, params.detect_threshold, bkg.global_level, bkg.global_rms)
    return table


def gaussian_kernel(fwhm: float) -> np.ndarray:
    """The default detection kernel of `extract`: a circular Gaussian of FWHM ``fwhm`` [px], peak 1.

    Sampled at the pixel centres out to ``ceil(3 sigma)`` pixels from the centre.

    Examples
    --------
    >>> from ztfsds.astrom.extraction import gaussian_kernel
    >>> k = gaussian_kernel(2.0)
    >>> k.shape, float(k[3, 3]), round(float(k[3, 4]), 3)
    ((7, 7), 1.0, 0.5)
    """
    g = _gaussian_1d(fwhm)
    return np.outer(g, g)


# --------------------------------------------------------------------------------------------------
# Background
# --------------------------------------------------------------------------------------------------


def _background(sci, code, mesh, filter_size, filename) -> Background:
    if isinstance(mesh, bool) or not isinstance(mesh, (int, np.integer)) or mesh < 2:
        raise ConfigError(f"background mesh must be an integer >= 2 px, got {mesh!r}")
    if (isinstance(filter_size, bool) or not isinstance(filter_size, (int, np.integer)) or filter_size < 1
            or filter_size % 2 == 0):
        raise ConfigError(f"background filter_size must be a positive odd integer, got {filter_size!r}")
    ny, nx = sci.shape
    nby, nbx = _ncells(ny, mesh), _ncells(nx, mesh)
    level = np.empty((nby, nbx), dtype=np.float64)
    rms = np.empty((nby, nbx), dtype=np.float64)
    ngood = np.empty((nby, nbx), dtype=np.int32)
    _extract.cell_stats(sci, code, int(mesh), MIN_GOOD_FRACTION, level, rms, ngood)
    valid = np.isfinite(level) & np.isfinite(rms)
    if not valid.any():
        raise NonFiniteError(filename, f"no {mesh}x{mesh} background cell has {MIN_GOOD_FRACTION:.0%} of "
                                       f"finite, unmasked pixels")
    level, rms = _fill_cells(level, valid), _fill_cells(rms, valid)
    level, rms = _median_filter(level, filter_size), _median_filter(rms, filter_size)
    yk = _cell_centres(ny, mesh)
    xk = _cell_centres(nx, mesh)
    return Background(level=_spline_map(level, yk, xk, (ny, nx)), rms=_spline_map(rms, yk, xk, (ny, nx)),
                      global_level=float(np.median(level)), global_rms=float(np.median(rms)),
                      mesh_level=level, mesh_rms=rms, mesh=int(mesh))


def _fill_cells(grid, valid):
    """Invalid cells take the inverse-distance-squared mean of the valid ones."""
    if valid.all():
        return grid
    out = grid.copy()
    vy, vx = np.nonzero(valid)
    for iy, ix in zip(*np.nonzero(~valid)):
        w = 1.0 / ((vy - iy) ** 2 + (vx - ix) ** 2)
        out[iy, ix] = np.sum(w * grid[vy, vx]) / np.sum(w)
    return out


def _median_filter(grid, size):
    """Median over size x size cells, the grid continued beyond its edges by point reflection."""
    if size == 1:
        return grid
    h = size // 2
    # 2 edge - mirror: a linear gradient continues, so the median does not bend it at the edges
    pad = grid
    for axis in (0, 1):
        n = grid.shape[axis]
        if n == 1:
            pad = np.repeat(pad, 2 * h + 1, axis=axis)
            continue
        width = [(0, 0), (0, 0)]
        width[axis] = (h, h)
        while width[axis][0] > n - 1:      # numpy reflects at most n - 1 cells at a time
            step = [(0, 0), (0, 0)]
            step[axis] = (n - 1, n - 1)
            pad = np.pad(pad, step, mode="reflect", reflect_type="odd")
            width[axis] = (width[axis][0] - (n - 1),) * 2
            n = pad.shape[axis]
        pad = np.pad(pad, width, mode="reflect", reflect_type="odd")
    nby, nbx = grid.shape
    stack = np.stack([pad[dy:dy + nby, dx:dx + nbx] for dy in range(size) for dx in range(size)])
    return np.median(stack, axis=0)


def _ncells(n, mesh):
    """Number of cells along an axis of n pixels: a remainder of less than half a cell joins the last."""
    full, rest = divmod(n, mesh)
    return max(1, full + (rest >= mesh / 2))


def _cell_centres(n, mesh):
    """Centres [px] of the cells along an axis of n pixels (the last cell ends at the edge)."""
    starts = np.arange(_ncells(n, mesh), dtype=np.float64) * mesh
    ends = np.append(starts[1:], n)
    return 0.5 * (starts + ends - 1.0)


def _natural_d2_operator(knots):
    """Matrix T such that T @ values are the second derivatives of the natural cubic spline."""
    n = len(knots)
    T = np.zeros((n, n))
    if n < 3:
        return T
    h = np.diff(knots)
    A = np.zeros((n - 2, n - 2))
    B = np.zeros((n - 2, n))
    for i in range(1, n - 1):
        A[i - 1, i - 1] = 2.0 * (h[i - 1] + h[i])
        if i > 1:
            A[i - 1, i - 2] = h[i - 1]
        if i < n - 2:
            A[i - 1, i] = h[i]
        B[i - 1, i - 1] = 6.0 / h[i - 1]
        B[i - 1, i] = -6.0 / h[i - 1] - 6.0 / h[i]
        B[i - 1, i + 1] = 6.0 / h[i]
    T[1:-1] = np.linalg.solve(A, B)
    return T


def _spline_weights(knots, points):
    """Segment and weights of the cubic spline through ``knots`` at ``points``:
    ``S = w0 y[k] + w1 y[k+1] + w2 M[k] + w3 M[k+1]`` (M: second derivatives)."""
    k = np.clip(np.searchsorted(knots, points, side="right") - 1, 0, len(knots) - 2)
    h = knots[k + 1] - knots[k]
    a = (knots[k + 1] - points) / h
    b = 1.0 - a
    w = np.stack([a, b, (a**3 - a) * h**2 / 6.0, (b**3 - b) * h**2 / 6.0], axis=1)
    return k.astype(np.intp), np.ascontiguousarray(w)


def _spline_map(grid, yk, xk, shape):
    """Bicubic spline of a cell grid at every pixel: along y per cell column, then along x per row."""
    ny, nx = shape
    if len(yk) == 1:
        yk, grid = np.array([yk[0], yk[0] + 1.0]), np.vstack([grid, grid])
    if len(xk) == 1:
        xk, grid = np.array([xk[0], xk[0] + 1.0]), np.hstack([grid, grid])
    seg, w = _spline_weights(yk, np.arange(ny, dtype=np.float64))
    d2 = _natural_d2_operator(yk) @ grid
    rows = (w[:, :1] * grid[seg] + w[:, 1:2] * grid[seg + 1] + w[:, 2:3] * d2[seg] + w[:, 3:4] * d2[seg + 1])
    rows = np.ascontiguousarray(rows)
    d2x = np.ascontiguousarray(rows @ _natural_d2_operator(xk).T)
    seg, w = _spline_weights(xk, np.arange(nx, dtype=np.float64))
    out = np.empty(shape, dtype=np.float32)
    _extract.spline_rows(rows, d2x, seg, np.ascontiguousarray(w.T), 0, ny, out)
    return out


# --------------------------------------------------------------------------------------------------
# Inputs and outputs
# --------------------------------------------------------------------------------------------------


def _as_image(arr, name, filename, shape=None) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        raise ShapeError(filename, a.shape, shape if shape is not None else ("ny", "nx"), name)
    if shape is not None and a.shape != tuple(shape):
        raise ShapeError(filename, a.shape, shape, name)
    if a.dtype.kind not in "fiu":
        raise InputError(filename, f"{name} must hold real numbers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _as_mask(mskimg, shape, filename):
    if mskimg is None:
        return None
    m = np.asarray(mskimg)
    if m.shape != tuple(shape):
        raise ShapeError(filename, m.shape, shape, "mskimg")
    if m.dtype.kind not in "iu":
        raise InputError(filename, f"mskimg must be an integer MaskBits image, got dtype {m.dtype}")
    return np.ascontiguousarray(m.astype(np.int16, copy=False))


def _classify(sci, msk, saturate):
    code = np.empty(sci.shape, dtype=np.uint8)
    use_mask = msk is not None
    dummy = msk if use_mask else np.zeros((1, 1), dtype=np.int16)
    _extract.classify_rows(sci, dummy, use_mask, DETECT_EXCLUDE, BACKGROUND_EXCLUDE, int(MaskBits.SATURATED),
                           np.inf if saturate is None else float(saturate), 0, sci.shape[0], code)
    return code


def _check_background(bkg, shape, filename) -> Background:
    if not isinstance(bkg, Background):
        raise ConfigError(f"background must be a ztfsds.astrom.extraction.Background, got {type(bkg).__name__}")
    level = _as_image(bkg.level, "background level", filename, shape=shape)
    rms = _as_image(bkg.rms, "background rms", filename, shape=shape)
    return dataclasses.replace(bkg, level=level, rms=rms)


def _as_kernel(kernel):
    k = np.ascontiguousarray(kernel, dtype=np.float32)
    if (k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0 or not np.all(np.isfinite(k))
            or not np.any(k != 0)):
        raise ConfigError(f"kernel must be a finite, non-zero 2-D array of odd sides, got shape {k.shape}")
    return k


def _gaussian_1d(fwhm):
    sigma = fwhm / _FWHM_PER_SIGMA
    r = max(1, math.ceil(3.0 * sigma))
    i = np.arange(-r, r + 1, dtype=np.float64)
    return np.exp(-0.5 * (i / sigma) ** 2).astype(np.float32)


def _check_options(fwhm_guess, aper_radius, nthresh, mincont, minrise, gain):
    if not (isinstance(fwhm_guess, (int, float, np.number)) and math.isfinite(fwhm_guess) and fwhm_guess > 0):
        raise ConfigError(f"fwhm_guess must be a positive number of pixels, got {fwhm_guess!r}")
    if not (isinstance(aper_radius, (int, float, np.number)) and math.isfinite(aper_radius)
            and 0 < aper_radius <= 100):
        raise ConfigError(f"aper_radius must be in (0, 100] px, got {aper_radius!r}")
    if isinstance(nthresh, bool) or not isinstance(nthresh, (int, np.integer)) or not 1 <= nthresh <= 256:
        raise ConfigError(f"deblend_nthresh must be an integer in 1-256, got {nthresh!r}")
    if not (isinstance(mincont, (int, float, np.number)) and 0.0 <= mincont <= 1.0):
        raise ConfigError(f"deblend_mincont must be in [0, 1], got {mincont!r}")
    if not (isinstance(minrise, (int, float, np.number)) and minrise >= 0):
        raise ConfigError(f"deblend_minrise must be >= 0 sigma, got {minrise!r}")
    if gain is not None and not (isinstance(gain, (int, float, np.number)) and math.isfinite(gain) and gain > 0):
        raise ConfigError(f"gain must be a positive number of e-/DN, got {gain!r}")


def _table(out, flags, bkg) -> Table:
    """The source table from the kernel's measurements, sorted by flux descending."""
    m = _extract
    order = np.argsort(-out[:, m.M_FLUX_APER], kind="stable")
    out, flags = out[order], flags[order]
    x2, y2, xy = out[:, m.M_X2], out[:, m.M_Y2], out[:, m.M_XY]
    half_sum, root = 0.5 * (x2 + y2), np.sqrt((0.5 * (x2 - y2)) ** 2 + xy**2)
    a = np.sqrt(half_sum + root)
    b = np.sqrt(np.maximum(half_sum - root, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        elongation = a / b
        snr = out[:, m.M_FLUX_APER] / np.sqrt(out[:, m.M_VAR_APER])
    theta = np.degrees(0.5 * np.arctan2(2.0 * xy, x2 - y2))
    xw, yw = out[:, m.M_X_WIN], out[:, m.M_Y_WIN]
    ny, nx = bkg.level.shape
    iy = np.clip(np.floor(yw + 0.5), 0, ny - 1).astype(np.intp)
    ix = np.clip(np.floor(xw + 0.5), 0, nx - 1).astype(np.intp)
    values = {
        "id": np.arange(1, len(out) + 1),
        "x": xw, "y": yw,
        "x_err": np.sqrt(out[:, m.M_ERRX2]), "y_err": np.sqrt(out[:, m.M_ERRY2]), "xy_cov": out[:, m.M_ERRXY],
        "x_iso": out[:, m.M_X_ISO], "y_iso": out[:, m.M_Y_ISO],
        "x_peak": out[:, m.M_X_PEAK], "y_peak": out[:, m.M_Y_PEAK],
        "flux": out[:, m.M_FLUX_APER], "flux_err": np.sqrt(out[:, m.M_VAR_APER]),
        "flux_iso": out[:, m.M_FLUX_ISO], "flux_iso_err": np.sqrt(out[:, m.M_VAR_ISO]),
        "snr": snr, "peak": out[:, m.M_PEAK], "background": bkg.level[iy, ix].astype(np.float64),
        "npix": out[:, m.M_NPIX],
        "x2": x2, "y2": y2, "xy": xy, "a": a, "b": b, "theta": theta, "elongation": elongation,
        "fwhm": out[:, m.M_FWHM],
        "flux_radius": out[:, m.M_FLUX_RADIUS],
        "flags": flags,
        "ra": np.full(len(out), np.nan), "dec": np.full(len(out), np.nan),
    }
    table = Table()
    for name, dtype, unit, description in SOURCE_COLUMNS:
        table[name] = np.asarray(values[name]).astype(dtype)
        table[name].unit = unit
        table[name].description = description
    return table
