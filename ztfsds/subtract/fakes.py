"""Artificial point sources ("fakes") injected into science images, to measure completeness and train
real-bogus classifiers, as survey pipelines do.

Examples
--------
>>> import numpy as np
>>> from ztfsds.photom.psf import PSFModel
>>> from ztfsds.subtract.fakes import inject_point_sources
>>> g = np.exp(-0.5 * ((np.arange(26) - 13) / 1.0) ** 2)         # a 21-px model, 1 node per pixel
>>> psf = PSFModel(basis=(g[:, None] * g[None, :] / g.sum() ** 2)[None], oversample=1, degree=0, x0=0.0,
...                y0=0.0, scale=1.0, nstar=0)
>>> img = np.zeros((64, 64), np.float32)
>>> out = inject_point_sources(img, psf, [32.3], [20.0], [1000.0])
>>> round(float(out.sum()), 1)
1000.0
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..photom.psf import PSFModel, _interp_matrix

__all__ = ["inject_point_sources"]


def inject_point_sources(sciimg, psf: PSFModel, x, y, flux, *, gain: float | None = None, rng=None,
                         size: int | None = None, product: str | None = None) -> np.ndarray:
    """A copy of ``sciimg`` with point sources added.

    Parameters
    ----------
    sciimg : array-like
        ``(ny, nx)`` image [DN].
    psf : `~ztfsds.photom.psf.PSFModel`
        The image's PSF, rendered at each position and sub-pixel offset as the PSF-fit kernels
        interpolate it (unit flux in the model's convention).
    x, y : array-like
        Positions [px, 0-based].
    flux : array-like
        Total fluxes [DN].
    gain : float, optional
        [e-/DN]: when given, the sources' own photon noise is added (drawn from ``rng``).
    rng : numpy.random.Generator, optional
    size : int, optional
        Odd stamp side [px] (default the model's).
    product : str, optional
        Named in errors.

    Returns
    -------
    numpy.ndarray
        float32 image.
    """
    out = np.array(sciimg, dtype=np.float32, copy=True)
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    flux = np.atleast_1d(np.asarray(flux, dtype=float))
    if not (x.shape == y.shape == flux.shape):
        raise InputError(product, f"x, y and flux must have one shape, got {x.shape}, {y.shape}, {flux.shape}")
    rng = np.random.default_rng() if rng is None else rng
    ny, nx = out.shape
    size = psf.size if size is None else int(size)
    h = size // 2
    off = np.arange(size) - h
    for xi, yi, fi in zip(x, y, flux):
        ix, iy = int(round(xi)), int(round(yi))
        # the model exactly as the PSF-fit kernels interpolate it (no per-phase renormalisation), so
        # that a fake of flux f is measured as f by the pipeline's own photometry
        grid = psf.oversampled(xi, yi)
        m = grid.shape[0]
        stamp = fi * (_interp_matrix(off - (yi - iy), m, psf.oversample) @ grid
                      @ _interp_matrix(off - (xi - ix), m, psf.oversample).T)
        if gain:
            stamp = rng.poisson(np.clip(stamp, 0, None) * gain) / gain
        y0, y1, x0, x1 = iy - h, iy + h + 1, ix - h, ix + h + 1
        sy0, sx0 = max(0, -y0), max(0, -x0)
        y0c, y1c, x0c, x1c = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
        if y0c >= y1c or x0c >= x1c:
            continue
        out[y0c:y1c, x0c:x1c] += stamp[sy0:sy0 + (y1c - y0c), sx0:sx0 + (x1c - x0c)].astype(np.float32)
    return out
