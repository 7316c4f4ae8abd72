"""PSF-fit photometry (the ZTF ``psfcat``) and forced photometry with a `~ztfsds.photom.psf.PSFModel`.

`psf_photometry` fits the flux and position of every source, blended neighbours together, in the
manner of DAOPHOT's ALLSTAR; `forced_photometry` fits the PSF amplitude alone at given positions, as
IPAC's forced-photometry service does on difference images. The hot loops are compiled
(`ztfsds._ext._psffit`, without the GIL); `ztfsds._ext.reference_psffit` holds their numpy equivalents.

Model
-----
A source of flux ``F`` [DN] at ``(x, y)`` [px, 0-based] contributes ``F * P(px - x, py - y)`` to pixel
``(px, py)``, where ``P`` is the PSF model's oversampled grid at the source's position
(`PSFModel.oversampled`, evaluated once per source) interpolated with the Keys bicubic kernel, exactly as
`PSFModel.stamp` does but without renormalising (the model has unit flux). The background
(``background``: a scalar or a full-size map [DN]) is subtracted first; there is no free sky.

Fit (`psf_photometry`)
----------------------
* **Groups.** Sources closer than ``group_radius`` are linked, and groups are the connected sets
  (friends of friends). A group of more than ``max_group`` sources is cut at the median of its longer
  side, again until every part is small enough (flag ``GROUP_SPLIT``); the parts see each other through
  the residual image.
* **Residual image.** ``R = data - background - sum of the current models``, each model rendered in a
  ``(2 model_radius + 1)^2`` box round the source's rounded initial position. To fit a group its members
  are added back to ``R``; the fit pixels are the usable pixels within ``fit_radius`` of any member's
  initial position; the members' ``(F, x, y)`` are fitted jointly by Gauss-Newton (a ``3n x 3n`` normal
  matrix, analytic derivatives of the bicubic interpolation; position steps at most 0.5 px, the limit
  halved whenever a coordinate's step changes sign, as DAOPHOT does; stop when every step is below 0.01
  of its parameter's conditional sigma); the new models are subtracted again.
  All groups are fitted ``npass`` times, so that neighbours outside a group are subtracted with
  their improved models.
* **Weights.** The variance of a pixel is ``bkg_rms**2 + max(M, 0) / gain + (psf_error * max(M, 0))**2``
  with ``M`` the *model* of all the sources at that pixel (never the data, whose noise would bias bright
  stars low); the last term (DAOPHOT's profile error, default 0) accounts for the PSF model's own errors. Pixels with a
  ``MaskBits.BAD`` bit, non-finite pixels and pixels at or above ``saturate`` are left out.
* **Position.** A source whose position would move more than ``max_shift`` from the given one is put
  back and its flux alone is fitted (``MOVED``); so is a source whose flux becomes negative or that has
  fewer than 5 usable pixels (``FIXED_POSITION``), and every source with ``recentre=False``.
* **Errors.** ``flux_err``, ``x_err``, ``y_err`` are the square roots of the diagonal of the inverse of
  the group's Fisher matrix ``J^T W J`` at the solution (marginalised over the other members and the
  source's own other parameters): honest 1-sigma errors when the PSF and the variance are right.
* **Quality.** ``chi2`` is ``sum(w r^2) / (npix - nfree)`` over the source's own fit pixels (its
  circle), ``r`` the residual with every model subtracted. ``sharp`` is the weighted least-squares
  coefficient ``e`` of the template ``T = 2 P + dx dP/dx + dy dP/dy`` (the change of the PSF when its
  width shrinks by the fraction ``e``), orthogonalised to ``P``, fitted to the residual, per unit flux:
  ``sharp = <r, T'> / (F <T', T'>)``, ``T' = T - (<T, P> / <P, P>) P``, ``<a, b> = sum(w a b)``. A star
  gives ``sharp ~ 0 +- noise``; a source narrower than the PSF (a cosmic ray, a hot pixel) is positive,
  a resolved one (a galaxy) negative; ``sharp = 0.1`` means about 10 % narrower.

Forced photometry (`forced_photometry`)
---------------------------------------
At fixed positions, ``F = sum(w P d) / sum(w P^2)`` over the pixels within ``fit_radius``, and
``flux_err = 1 / sqrt(sum(w P^2))``, with ``w = 1 / varimg`` when a variance image is given (for
example the difference image's), else ``1 / (bkg_rms**2 + max(F P, 0) / gain)`` iterated three times.
Positions are independent (no simultaneous fit of neighbours).
"""

from __future__ import annotations

import enum
import logging
import math

import numpy as np
from astropy import units as u
from astropy.table import Table

from .._ext import _psffit
from ..errors import ConfigError, InputError, ShapeError
from ..products import MaskBits
from .psf import PSFModel, poly_terms

__all__ = [
    "FORCED_COLUMNS",
    "PSFCAT_COLUMNS",
    "ForcedPhotFlags",
    "PSFFitFlags",
    "forced_photometry",
    "psf_photometry",
]

log = logging.getLogger(__name__)


class PSFFitFlags(enum.IntFlag):
    """Bits of the ``flags`` column of `psf_photometry`.

    Examples
    --------
    >>> from ztfsds.photom.psffit import PSFFitFlags
    >>> PSFFitFlags(5)
    <PSFFitFlags.MASKED|EDGE: 5>
    """

    #: some pixels within ``fit_radius`` are masked (``MaskBits.BAD``, non-finite, saturated) and left out
    MASKED = 1
    #: saturated pixels within ``fit_radius`` (left out; the flux comes from the unsaturated wings)
    SATURATED = 2
    #: the fit circle is cut by the image edge
    EDGE = 4
    #: the Gauss-Newton fit of the group did not converge in ``niter`` iterations
    NOT_CONVERGED = 8
    #: the position moved more than ``max_shift``: reset to the given one, flux alone fitted
    MOVED = 16
    #: the fitted flux is zero or negative
    NONPOSITIVE = 32
    #: the source's group of blended neighbours was larger than ``max_group`` and was split
    GROUP_SPLIT = 64
    #: no fit (no usable pixel, a singular system, a position off the image): flux NaN
    FAILED = 128
    #: the position was held at the given one (flux went negative, or fewer than 5 usable pixels)
    FIXED_POSITION = 256


class ForcedPhotFlags(enum.IntFlag):
    """Bits of the ``flags`` column of `forced_photometry`.

    Examples
    --------
    >>> from ztfsds.photom.psffit import ForcedPhotFlags
    >>> ForcedPhotFlags(12)
    <ForcedPhotFlags.SOME_BAD|EDGE: 12>
    """

    #: the position is off the image (or not finite): no measurement
    OFF_IMAGE = 1
    #: more than ``max_bad_frac`` of the fit circle is masked or off the image: flux NaN
    TOO_MANY_BAD = 2
    #: some pixels of the fit circle are masked
    SOME_BAD = 4
    #: the fit circle is cut by the image edge
    EDGE = 8
    #: the flux is zero or negative (normal for faint or absent sources)
    NONPOSITIVE = 16


#: (name, dtype, unit, description) of the columns of `psf_photometry`, in order.
PSFCAT_COLUMNS = (
    ("x", np.float64, u.pix, "fitted x (0-based column)"),
    ("y", np.float64, u.pix, "fitted y (0-based row)"),
    ("x_err", np.float64, u.pix, "1-sigma error of x (NaN if the position was not fitted)"),
    ("y_err", np.float64, u.pix, "1-sigma error of y (NaN if the position was not fitted)"),
    ("flux", np.float64, u.adu, "PSF-fit flux"),
    ("flux_err", np.float64, u.adu, "1-sigma error of flux (inverse Fisher matrix of the group fit)"),
    ("snr", np.float64, None, "flux / flux_err"),
    ("chi2", np.float64, None, "reduced chi^2 over the source's fit pixels"),
    ("sharp", np.float64, None, "sharpness: > 0 narrower than the PSF, < 0 extended"),
    ("npix", np.int32, None, "usable pixels within fit_radius"),
    ("nbad", np.int32, None, "masked pixels within fit_radius"),
    ("group_id", np.int32, None, "group of blended sources fitted together"),
    ("group_size", np.int32, None, "number of sources in the group"),
    ("niter", np.int32, None, "Gauss-Newton iterations of the group, all passes"),
    ("x_init", np.float64, u.pix, "given x"),
    ("y_init", np.float64, u.pix, "given y"),
    ("flags", np.int32, None, "PSFFitFlags bits"),
)

#: (name, dtype, unit, description) of the columns of `forced_photometry`, in order.
FORCED_COLUMNS = (
    ("x", np.float64, u.pix, "position x (0-based column)"),
    ("y", np.float64, u.pix, "position y (0-based row)"),
    ("flux", np.float64, u.adu, "PSF amplitude (flux) at the position"),
    ("flux_err", np.float64, u.adu, "1-sigma error of flux"),
    ("snr", np.float64, None, "flux / flux_err"),
    ("chi2", np.float64, None, "reduced chi^2 over the fit pixels"),
    ("npix", np.int32, None, "usable pixels within fit_radius"),
    ("nbad", np.int32, None, "masked or off-image pixels within fit_radius"),
    ("bad_frac", np.float64, None, "nbad / pixels within fit_radius"),
    ("flags", np.int32, None, "ForcedPhotFlags bits"),
)

#: Gauss-Newton stops when every step is below this fraction of its parameter's conditional sigma.
_TOL = 1e-2


def psf_photometry(sciimg, psf: PSFModel, x, y, flux=None, *, mskimg=None, background=0.0, bkg_rms=None,
                   gain: float | None = None, saturate: float | None = None, fit_radius: float = 3.0,
                   group_radius: float = 4.0, max_group: int = 25, niter: int = 20, npass: int = 2,
                   recentre: bool = True, max_shift: float = 1.0, model_radius: int | None = None,
                   psf_error: float = 0.0, psf_xy=None, product: str | None = None) -> Table:
    """PSF-fit photometry of sources at given first positions, blended sources fitted together.

    Parameters
    ----------
    sciimg : array-like
        ``(ny, nx)`` calibrated image [DN].
    psf : `~ztfsds.photom.psf.PSFModel`
        Unit-flux PSF model of the image.
    x, y : array-like
        First positions [px, 0-based] (for example from `ztfsds.astrom.extract`).
    flux : array-like, optional
        First fluxes [DN]; NaN or omitted: a linear fit at the first position.
    mskimg : array-like, optional
        ``(ny, nx)`` integer `~ztfsds.products.MaskBits`; pixels with a ``MaskBits.BAD`` bit are left out.
    background : float or array-like, optional
        Background level [DN], a scalar or a ``(ny, nx)`` map, subtracted.
    bkg_rms : float or array-like, optional
        Background noise [DN], a scalar or a ``(ny, nx)`` map; default a robust estimate from the image.
    gain : float, optional
        [e-/DN] for the sources' shot noise ``max(model, 0) / gain`` in the weights; None: background
        noise only.
    saturate : float, optional
        Pixels at or above this value [DN] of ``sciimg`` are left out (and flag ``SATURATED``).
    fit_radius : float, optional
        Radius [px] of the pixels fitted round each source.
    group_radius : float, optional
        Sources closer than this [px] are fitted together.
    max_group : int, optional
        Largest group fitted together; larger ones are split (``GROUP_SPLIT``).
    niter : int, optional
        Most Gauss-Newton iterations of one group fit.
    npass : int, optional
        Passes over all the groups.
    recentre : bool, optional
        Fit the positions; False: fluxes only at the given positions.
    max_shift : float, optional
        Largest move [px] from the given position in x or y (``MOVED`` beyond it).
    model_radius : int, optional
        Half-side [px] of the box in which each model is subtracted from the residual image; default
        ``max(2 fit_radius, fit_radius + 2)``, at most the model's own half-size.
    psf_error : float, optional
        Relative error of the PSF model per pixel (DAOPHOT's profile error): adds ``(psf_error * M)**2``
        to the variance, so that the errors of bright stars include the model's own.
    psf_xy : (array-like, array-like), optional
        Where a spatially varying ``psf`` is evaluated for each source [px]; default its first
        position. For images that are cut-outs of a larger one (the PSF's coordinates are the large
        image's).
    product : str, optional
        Named in errors.

    Returns
    -------
    astropy.table.Table
        One row per input source, in input order, with the columns of `PSFCAT_COLUMNS` (units ``pix``,
        ``adu`` = DN); ``meta`` holds the settings (``FITRAD``, ``GRPRAD``, ``MAXGRP``, ``NPASS``,
        ``MODRAD``, ``BKGRMS``) and ``NGROUP``, ``NSPLIT``. Definitions in the module notes.

    Raises
    ------
    ztfsds.errors.ShapeError
        The image is not 2-D, or a map has another shape.
    ztfsds.errors.ConfigError
        ``x``/``y``/``flux`` of different lengths, an out-of-range option, or ``psf`` not a PSFModel.

    Examples
    --------
    >>> import numpy as np
    >>> from ztfsds.photom.psf import PSFModel
    >>> from ztfsds.photom.psffit import psf_photometry
    >>> g = np.exp(-0.5 * (np.arange(-14, 15) / 1.7) ** 2)
    >>> psf = PSFModel(basis=(g[:, None] * g[None, :] / (g.sum() ** 2 / 4))[None], oversample=2,
    ...                degree=0, x0=0.0, y0=0.0, scale=1.0, nstar=0)
    >>> img = np.zeros((32, 32), np.float32)
    >>> img[12:21, 12:21] = 1000.0 * psf.stamp(16.3, 15.8, size=9, dx=0.3, dy=-0.2)
    >>> cat = psf_photometry(img, psf, [16.0], [16.0], bkg_rms=1.0)
    >>> f"{cat['x'][0]:.2f} {cat['y'][0]:.2f} {cat['flux'][0]:.0f}"
    '16.30 15.80 1000'
    """
    _check_psf(psf)
    fit_radius, group_radius, max_shift = float(fit_radius), float(group_radius), float(max_shift)
    psf_error = float(psf_error)
    if not psf_error >= 0.0:
        raise ConfigError(f"psf_error must be >= 0, got {psf_error!r}")
    if not (fit_radius >= 1.0 and group_radius >= 0.0 and max_shift >= 0.0 and int(max_group) >= 1
            and int(niter) >= 0 and int(npass) >= 1):
        raise ConfigError(f"need fit_radius >= 1, group_radius >= 0, max_shift >= 0, max_group >= 1, "
                          f"niter >= 0, npass >= 1; got {fit_radius}, {group_radius}, {max_shift}, "
                          f"{max_group}, {niter}, {npass}")
    ovs = int(psf.oversample)
    half = (psf.grid_size - 1) // ovs // 2 - 2
    rm = max(math.ceil(2 * fit_radius), math.ceil(fit_radius) + 2) if model_radius is None \
        else int(model_radius)
    rm = min(rm, max(half, 1))
    if rm < math.ceil(fit_radius):
        raise ConfigError(f"model_radius {rm} must be at least fit_radius {fit_radius} (PSF model half-size "
                          f"{half} px)")
    data, code = _prepare(sciimg, mskimg, background, saturate, product)
    ny, nx = data.shape
    x0, y0, f0 = _positions(x, y, flux)
    n = len(x0)
    inv_gain = _inv_gain(gain)
    rms2, rms_meta = _rms2(bkg_rms, data, code, product)

    valid = np.isfinite(x0) & np.isfinite(y0) & (x0 > -0.5) & (x0 < nx - 0.5) & (y0 > -0.5) & (y0 < ny - 0.5)
    iv = np.nonzero(valid)[0]
    xs, ys = x0[iv].copy(), y0[iv].copy()
    fs = f0[iv].copy()
    fs[~np.isfinite(fs)] = np.nan
    H = math.ceil((rm + 0.5 + max_shift) * ovs) + 2
    if psf_xy is None:
        grids = _grids(psf, xs, ys, H)
    else:
        px, py = (np.atleast_1d(np.asarray(v, dtype=np.float64)).ravel() for v in psf_xy)
        if px.shape != x0.shape or py.shape != x0.shape:
            raise ConfigError(f"psf_xy has {len(px)}, {len(py)} positions for {n} sources")
        grids = _grids(psf, px[iv], py[iv], H)
    group_start, members, split, gid = _groups(xs, ys, group_radius, int(max_group))
    flags = np.where(split, np.int32(PSFFitFlags.GROUP_SPLIT), np.int32(0)).astype(np.int32)
    out = np.zeros((len(iv), _psffit.N_OUT), dtype=np.float64)
    B = 2 * rm + 1
    stamps = np.zeros((len(iv), B * B), dtype=np.float32)
    resid = data.copy()
    xf, yf = xs.copy(), ys.copy()
    if len(iv):
        _psffit.render_subtract(grids, ovs, xs, ys, xf, yf, fs, rm, stamps, resid)
        for _ in range(int(npass)):
            _psffit.fit_groups(data, resid, code, rms2, inv_gain, psf_error, grids, ovs, xs, ys, xf, yf, fs, stamps, rm,
                               group_start, members, fit_radius, max_shift, int(niter), bool(recentre), _TOL,
                               out, flags)

    res = {name: np.full(n, np.nan) for name in ("x", "y", "x_err", "y_err", "flux", "flux_err", "chi2",
                                                 "sharp")}
    ints = {name: np.zeros(n, np.int32) for name in ("npix", "nbad", "group_id", "group_size", "niter")}
    res["x"][:], res["y"][:] = x0, y0
    allflags = np.full(n, int(PSFFitFlags.FAILED | PSFFitFlags.EDGE), dtype=np.int32)
    ints["group_id"][:] = -1
    if len(iv):
        res["x"][iv], res["y"][iv], res["flux"][iv] = xf, yf, fs
        res["x_err"][iv] = out[:, _psffit.O_X_ERR]
        res["y_err"][iv] = out[:, _psffit.O_Y_ERR]
        res["flux_err"][iv] = out[:, _psffit.O_FLUX_ERR]
        res["chi2"][iv] = out[:, _psffit.O_CHI2]
        res["sharp"][iv] = out[:, _psffit.O_SHARP]
        ints["npix"][iv] = out[:, _psffit.O_NPIX]
        ints["nbad"][iv] = out[:, _psffit.O_NBAD]
        ints["niter"][iv] = out[:, _psffit.O_NITER]
        ints["group_id"][iv] = gid
        ints["group_size"][iv] = np.bincount(gid)[gid]
        allflags[iv] = flags
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = res["flux"] / res["flux_err"]
    values = dict(res, **ints, snr=snr, x_init=x0, y_init=y0, flags=allflags)
    table = _table(PSFCAT_COLUMNS, values)
    table.meta.update({"FITRAD": fit_radius, "GRPRAD": group_radius, "MAXGRP": int(max_group),
                       "NPASS": int(npass), "MODRAD": rm, "BKGRMS": rms_meta, "PSFERR": psf_error,
                       "NGROUP": int(len(group_start) - 1), "NSPLIT": int(np.count_nonzero(split))})
    log.debug("psf_photometry: %d sources, %d groups (%d sources in split groups), %d failed", n,
              len(group_start) - 1, np.count_nonzero(split),
              np.count_nonzero(allflags & PSFFitFlags.FAILED))
    return table


def forced_photometry(image, psf: PSFModel, x, y, *, varimg=None, mskimg=None, background=0.0, bkg_rms=None,
                      gain: float | None = None, fit_radius: float = 3.0, max_bad_frac: float = 0.5,
                      product: str | None = None) -> Table:
    """PSF amplitude (flux) at fixed positions by weighted linear least squares.

    Parameters
    ----------
    image : array-like
        ``(ny, nx)`` image [DN] (a ``sciimg`` or a ``diffimg``).
    psf : `~ztfsds.photom.psf.PSFModel`
        Unit-flux PSF model of the image.
    x, y : array-like
        Positions [px, 0-based].
    varimg : array-like, optional
        ``(ny, nx)`` variance of ``image`` [DN^2] (the weights are ``1 / varimg``); pixels with a
        non-positive or non-finite variance are left out.
    mskimg : array-like, optional
        ``(ny, nx)`` integer `~ztfsds.products.MaskBits`; pixels with a ``MaskBits.BAD`` bit are left out.
    background : float or array-like, optional
        Background level [DN], scalar or ``(ny, nx)`` map, subtracted.
    bkg_rms : float or array-like, optional
        Background noise [DN] when there is no ``varimg``; default a robust estimate from the image.
    gain : float, optional
        [e-/DN]: without ``varimg``, adds the model's shot noise ``max(F P, 0) / gain``.
    fit_radius : float, optional
        Radius [px] of the fit pixels.
    max_bad_frac : float, optional
        Largest fraction of the fit circle that may be masked or off the image (more: flux NaN,
        ``TOO_MANY_BAD``).
    product : str, optional
        Named in errors.

    Returns
    -------
    astropy.table.Table
        One row per position with the columns of `FORCED_COLUMNS` (``flags``: `ForcedPhotFlags`).

    Raises
    ------
    ztfsds.errors.ShapeError
        The image is not 2-D, or a map has another shape.
    ztfsds.errors.ConfigError
        ``x``/``y`` of different lengths, an out-of-range option, or ``psf`` not a PSFModel.

    Examples
    --------
    >>> import numpy as np
    >>> from ztfsds.photom.psf import PSFModel
    >>> from ztfsds.photom.psffit import forced_photometry
    >>> g = np.exp(-0.5 * (np.arange(-14, 15) / 1.7) ** 2)
    >>> psf = PSFModel(basis=(g[:, None] * g[None, :] / (g.sum() ** 2 / 4))[None], oversample=2,
    ...                degree=0, x0=0.0, y0=0.0, scale=1.0, nstar=0)
    >>> img = np.zeros((32, 32), np.float32)
    >>> img[12:21, 12:21] = 500.0 * psf.stamp(16.0, 16.0, size=9)
    >>> cat = forced_photometry(img, psf, [16.0, 5.0], [16.0, 5.0], bkg_rms=1.0)
    >>> [round(f) for f in cat["flux"]]
    [500, 0]
    """
    _check_psf(psf)
    fit_radius, max_bad_frac = float(fit_radius), float(max_bad_frac)
    if not (fit_radius >= 0.5 and 0.0 <= max_bad_frac <= 1.0):
        raise ConfigError(f"need fit_radius >= 0.5 and 0 <= max_bad_frac <= 1; got {fit_radius}, "
                          f"{max_bad_frac}")
    data, code = _prepare(image, mskimg, background, None, product)
    x0, y0, _ = _positions(x, y, None)
    inv_gain = _inv_gain(gain)
    if varimg is not None:
        var = _as_map(varimg, data.shape, "varimg", product)
        badvar = ~(np.isfinite(var) & (var > 0))
        if badvar.any():
            code = code | badvar.astype(np.uint8)
            var = np.where(badvar, np.float32(1.0), var)
        var_total, inv_gain = True, 0.0
    else:
        var, _ = _rms2(bkg_rms, data, code, product)
        var_total = False
    H = math.ceil(fit_radius * psf.oversample) + 3
    ok = np.isfinite(x0) & np.isfinite(y0)
    grids = _grids(psf, np.where(ok, x0, psf.x0), np.where(ok, y0, psf.y0), H)
    n = len(x0)
    fl = np.zeros(n)
    out = np.zeros((n, _psffit.N_OUT))
    flags = np.zeros(n, dtype=np.int32)
    if n:
        _psffit.forced_fit(data, code, var, var_total, inv_gain, grids, int(psf.oversample), x0, y0, fit_radius,
                           max_bad_frac, fl, out, flags)
    err = out[:, _psffit.O_FLUX_ERR]
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = fl / err
    values = {"x": x0, "y": y0, "flux": fl, "flux_err": err, "snr": snr, "chi2": out[:, _psffit.O_CHI2],
              "npix": out[:, _psffit.O_NPIX], "nbad": out[:, _psffit.O_NBAD],
              "bad_frac": out[:, _psffit.O_BADFRAC], "flags": flags}
    table = _table(FORCED_COLUMNS, values)
    table.meta.update({"FITRAD": fit_radius, "MAXBAD": max_bad_frac, "VARIMG": varimg is not None})
    return table


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _check_psf(psf):
    if not isinstance(psf, PSFModel):
        raise ConfigError(f"psf must be a ztfsds.photom.psf.PSFModel, got {type(psf).__name__}")


def _as_map(value, shape, name, product):
    arr = np.asarray(value)
    if arr.ndim != 2 or arr.shape != tuple(shape):
        raise ShapeError(product, arr.shape, tuple(shape), hdu=name)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(product, f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _prepare(sciimg, mskimg, background, saturate, product):
    """Background-subtracted float32 image (0 on unusable pixels) and the uint8 pixel codes (1 unusable,
    2 saturated)."""
    sci = np.asarray(sciimg)
    if sci.ndim != 2:
        raise ShapeError(product, sci.shape, ("ny", "nx"), hdu="sciimg")
    if not np.issubdtype(sci.dtype, np.number) or np.iscomplexobj(sci):
        raise InputError(product, f"sciimg must be a real numeric array, got dtype {sci.dtype}")
    sci = np.asarray(sci, dtype=np.float32)
    bad = ~np.isfinite(sci)
    code = bad.view(np.uint8).copy() if bad.dtype == np.bool_ else bad.astype(np.uint8)
    if mskimg is not None:
        msk = np.asarray(mskimg)
        if msk.shape != sci.shape:
            raise ShapeError(product, msk.shape, sci.shape, hdu="mskimg")
        if not np.issubdtype(msk.dtype, np.integer):
            raise InputError(product, f"mskimg must be an integer array, got dtype {msk.dtype}")
        code |= ((msk & int(MaskBits.BAD)) != 0).view(np.uint8)
        code |= ((msk & int(MaskBits.SATURATED)) != 0).view(np.uint8) * np.uint8(2)
    if saturate is not None:
        with np.errstate(invalid="ignore"):
            sat = (sci >= np.float32(saturate)).view(np.uint8)
        code |= sat | (sat << 1)
    if np.ndim(background) == 0:
        b = float(background)
        if not math.isfinite(b):
            raise ConfigError(f"background must be finite, got {background!r}")
        data = sci - np.float32(b) if b != 0.0 else sci.copy()
    else:
        data = sci - _as_map(background, sci.shape, "background", product)
        code |= (~np.isfinite(data)).view(np.uint8)
    data[code != 0] = 0.0
    return np.ascontiguousarray(data, dtype=np.float32), np.ascontiguousarray(code)


def _positions(x, y, flux):
    x0 = np.atleast_1d(np.asarray(x, dtype=np.float64)).ravel()
    y0 = np.atleast_1d(np.asarray(y, dtype=np.float64)).ravel()
    if x0.shape != y0.shape:
        raise ConfigError(f"x and y have different lengths: {len(x0)} and {len(y0)}")
    if flux is None:
        f0 = np.full(len(x0), np.nan)
    else:
        f0 = np.atleast_1d(np.asarray(flux, dtype=np.float64)).ravel()
        if f0.shape != x0.shape:
            raise ConfigError(f"flux has {len(f0)} values for {len(x0)} positions")
    return np.ascontiguousarray(x0), np.ascontiguousarray(y0), np.ascontiguousarray(f0)


def _inv_gain(gain):
    if gain is None:
        return 0.0
    g = float(gain)
    if not (g > 0 and math.isfinite(g)):
        raise ConfigError(f"gain must be positive, got {gain!r}")
    return 1.0 / g


def _rms2(bkg_rms, data, code, product):
    """Background variance [DN^2] as a float32 map or a 1 x 1 array, and its value for the meta."""
    if bkg_rms is None:
        sub = data[::3, ::3][code[::3, ::3] == 0]
        if sub.size < 10:
            raise ConfigError("bkg_rms not given and too few usable pixels to estimate it")
        med = np.median(sub)
        rms = 1.4826 * float(np.median(np.abs(sub - med)))
        if not rms > 0:
            raise ConfigError("bkg_rms not given and the image has no noise to estimate it from")
        log.debug("background rms estimated from the image: %.3f DN", rms)
        return np.full((1, 1), rms * rms, np.float32), rms
    if np.ndim(bkg_rms) == 0:
        rms = float(bkg_rms)
        if not (rms > 0 and math.isfinite(rms)):
            raise ConfigError(f"bkg_rms must be positive, got {bkg_rms!r}")
        return np.full((1, 1), rms * rms, np.float32), rms
    r = _as_map(bkg_rms, data.shape, "bkg_rms", product)
    r2 = r * r
    good = np.isfinite(r2) & (r > 0)
    if not good.all():
        if not good.any():
            raise ConfigError("bkg_rms map has no positive value")
        r2[~good] = np.median(r2[good])
    return r2, float(np.sqrt(np.median(r2[::16, ::16])))


def _grids(psf, x, y, H):
    """float32 PSF grids (S = 2H + 1 nodes a side, the model's centre block, zero beyond it): one per
    source, or a single one for a constant model."""
    m = psf.grid_size
    c = m // 2
    S = 2 * H + 1
    K = psf.basis.shape[0]
    block = np.zeros((K, S, S))
    lo, hi = max(c - H, 0), min(c + H + 1, m)
    block[:, lo - c + H:hi - c + H, lo - c + H:hi - c + H] = psf.basis[:, lo:hi, lo:hi]
    if psf.degree == 0 or len(x) == 0:
        # a constant model: one grid shared by every source (the kernels see a (1, S, S) array)
        return np.ascontiguousarray(block[:1], dtype=np.float32)
    terms = np.ascontiguousarray(poly_terms((x - psf.x0) / psf.scale, (y - psf.y0) / psf.scale, psf.degree))
    # the terms of degree >= 1 vary the core only (build_psf's var_radius): evaluate them there alone
    nz = np.nonzero(np.any(block[1:] != 0, axis=(0, 1)) | np.any(block[1:] != 0, axis=(0, 2)))[0]
    lo, hi = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
    out = np.empty((len(x), S, S), dtype=np.float32)
    _psffit.psf_grids(np.ascontiguousarray(block), terms, lo, hi, out)
    return out


def _groups(x, y, radius, max_group):
    """Friends-of-friends groups within ``radius``, split to at most ``max_group`` members.

    Returns group_start (ngroup + 1) and members (int64, grouped), the split mask and the group id of
    every source.
    """
    n = len(x)
    if n == 0:
        return np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int32)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    xy = np.column_stack([x, y])
    pairs = cKDTree(xy).query_pairs(radius, output_type="ndarray") if radius > 0 else np.zeros((0, 2), int)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    split = np.zeros(n, bool)
    big = np.nonzero(sizes > max_group)[0]
    if len(big):
        nxt = labels.max() + 1
        for g in big:
            idx = np.nonzero(labels == g)[0]
            split[idx] = True
            for part in _split(xy, idx, max_group)[1:]:
                labels[part] = nxt
                nxt += 1
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    keep = counts > 0
    remap = np.cumsum(keep) - 1
    group_start = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)
    return group_start, order.astype(np.int64), split, remap[labels].astype(np.int32)


def _split(xy, idx, max_group):
    """Cut a set of sources at the median of its longer side until every part has ``max_group`` or fewer."""
    if len(idx) <= max_group:
        return [idx]
    p = xy[idx]
    axis = int(np.ptp(p[:, 1]) > np.ptp(p[:, 0]))
    o = np.argsort(p[:, axis], kind="stable")
    half = len(idx) // 2
    return _split(xy, idx[o[:half]], max_group) + _split(xy, idx[o[half:]], max_group)


def _table(columns, values):
    table = Table()
    for name, dtype, unit, description in columns:
        table[name] = np.asarray(values[name]).astype(dtype)
        table[name].unit = unit
        table[name].description = description
    return table
