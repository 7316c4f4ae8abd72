"""A spatially varying PSF model in the manner of PSFEx.

The model is a *pixel basis*: the pixel-integrated PSF sampled on a grid ``oversample`` times finer than
the image pixels, ``m = (size + 4) * oversample + 1`` nodes a side (2 px of padding for the
interpolation), whose every node is a polynomial of degree ``degree`` in the normalised image position
``u = (x - x0) / scale``, ``v = (y - y0) / scale``. A star's pixel values are the grid interpolated
(Keys bicubic, a = -0.5) at the offsets of its pixels from its centre, times its flux. The model is
linear in the grid, so `build_psf` fits the basis by weighted linear least squares over all the pixels
of the selected stars at once (normal equations, banded Cholesky): first the mean PSF on the whole grid,
then all the polynomial terms on the central nodes (``var_radius`` px; the wings are the same
everywhere), alternating with a fit of each star's flux and position and rejecting deviant stars and
pixels (neighbours, cosmic rays) between rounds. Interpolating the *model*, never the undersampled
stars, is what lets the stars' random sub-pixel phases recover the finer grid. Two degeneracies of
undersampled data are broken explicitly: the sums of the grid's ``oversample**2`` sub-lattices are tied
(else the stars' fluxes absorb a phase-dependent normalisation), and the stars' starting positions are
fitted pixel-integrated Gaussian centroids (windowed moments have a pixel-phase bias of several
hundredths of a pixel at ZTF's sampling, which the grid would otherwise reproduce as a distortion).

`PSFModel.stamp` renders the PSF at any position and sub-pixel offset, normalised to unit sum;
`PSFModel.fwhm` measures it (by default the FWHM of the pixel-integrated circular Gaussian that best
fits the model's core, which is what ZTF's ``SEEING`` keyword and `photutils.psf.fit_fwhm` measure on
stars); `PSFModel.to_hdulist` / `PSFModel.from_hdulist` write and read the FITS product (basis cube,
header cards ``PSFDEG``, ``PSFOVS``, ``PSFNSTAR``, ``PSF_FWHM``, ``PSFX0``, ``PSFY0``, ``PSFSCALE``).

Examples
--------
>>> import numpy as np
>>> from ztfsds.photom.psf import PSFModel
>>> g = np.exp(-0.5 * (np.arange(-10, 11) / 2.0) ** 2)          # a Gaussian on a 0.5-px grid
>>> model = PSFModel(basis=(g[:, None] * g[None, :])[None], oversample=2, degree=0, x0=0.0, y0=0.0,
...                  scale=1.0, nstar=0)
>>> s = model.stamp(100.0, 100.0, size=11)
>>> s.shape, f"{s.sum():.3f}", bool(s[5, 5] == s.max()), model.size
((11, 11), '1.000', True, 5)

The grid is already pixel-integrated: the Gaussian whose pixel integrals it holds has
``sigma**2 = 1 - 1/12`` px^2, so FWHM ``2.355 * sqrt(11 / 12) = 2.25`` px:

>>> round(model.fwhm(0.0, 0.0), 2)
2.26
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse
import scipy.sparse.linalg
import scipy.special
from astropy.io import fits

from ..errors import ConfigError, PhotometryError
from ..products import InfoBits, MaskBits

__all__ = ["PSFModel", "build_psf", "poly_terms", "cubic_weights"]

log = logging.getLogger(__name__)

#: Source flags a PSF star must not carry: neighbours, blended, saturated, truncated, incomplete.
_BAD_FLAGS = 1 | 2 | 4 | 8 | 16
#: Padding of the node grid beyond the model's size [px] (room for the interpolation kernel).
_PAD = 2
# stars per polynomial term and per oversampling step (see build_psf), and the largest L1 departure
# (in units of the flux) of a spatially varying model from the mean PSF before its degree is lowered
_STARS_PER_TERM = 10
_MAX_VARIATION = 0.6
_GAUSS_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))


def poly_terms(u, v, degree: int) -> np.ndarray:
    """The polynomial terms ``u**i * v**j`` (``i + j <= degree``, by total degree then ``j``).

    Parameters
    ----------
    u, v : float or array-like
        Normalised positions (dimensionless).
    degree : int
        Total degree.

    Returns
    -------
    `numpy.ndarray`
        ``(n, nterm)`` float64, ``nterm = (degree + 1) (degree + 2) / 2``.

    Examples
    --------
    >>> poly_terms(2.0, 3.0, 1).tolist()
    [[1.0, 2.0, 3.0]]
    """
    u = np.atleast_1d(np.asarray(u, dtype=float)).ravel()
    v = np.atleast_1d(np.asarray(v, dtype=float)).ravel()
    cols = [u ** (d - j) * v ** j for d in range(degree + 1) for j in range(d + 1)]
    return np.stack(cols, axis=1)


def cubic_weights(t) -> tuple[np.ndarray, np.ndarray]:
    """Keys bicubic (a = -0.5) interpolation: first node and the four weights at grid coordinates ``t``.

    Parameters
    ----------
    t : array-like
        Coordinates in units of the grid spacing (node ``k`` at ``t = k``).

    Returns
    -------
    i0 : `numpy.ndarray`
        int64 index of the first of the four nodes ``i0 .. i0 + 3``.
    w : `numpy.ndarray`
        ``(n, 4)`` weights (they sum to 1).

    Examples
    --------
    >>> i0, w = cubic_weights([2.0, 2.5])
    >>> i0.tolist(), np.round(w, 4).tolist()
    ([1, 1], [[0.0, 1.0, 0.0, 0.0], [-0.0625, 0.5625, 0.5625, -0.0625]])
    """
    t = np.asarray(t, dtype=float).ravel()
    f = np.floor(t)
    s = (t - f)[:, None]
    # Keys (a = -0.5) at the distances 1 + s, s, 1 - s, 2 - s of the four nodes
    s2, s3 = s * s, s * s * s
    w = np.hstack([-0.5 * s3 + s2 - 0.5 * s,
                   1.5 * s3 - 2.5 * s2 + 1.0,
                   -1.5 * s3 + 2.0 * s2 + 0.5 * s,
                   0.5 * s3 - 0.5 * s2])
    return f.astype(np.int64) - 1, w


def _cubic_dweights(t) -> np.ndarray:
    """``(n, 4)`` derivatives of the `cubic_weights` with respect to ``t``."""
    t = np.asarray(t, dtype=float).ravel()
    s = (t - np.floor(t))[:, None]
    s2 = s * s
    return np.hstack([-1.5 * s2 + 2.0 * s - 0.5, 4.5 * s2 - 5.0 * s, -4.5 * s2 + 4.0 * s + 0.5, 1.5 * s2 - s])


def _interp_matrix(offsets, m: int, oversample: int) -> np.ndarray:
    """Dense ``(len(offsets), m)`` bicubic weights of grid nodes at pixel offsets from the centre node."""
    t = np.asarray(offsets, dtype=float) * oversample + (m // 2)
    i0, w = cubic_weights(t)
    out = np.zeros((len(t), m))
    for k in range(4):
        idx = i0 + k
        ok = (idx >= 0) & (idx < m)
        out[np.nonzero(ok)[0], idx[ok]] += w[ok, k]
    return out


@dataclass
class PSFModel:
    """A spatially varying pixel-basis PSF (see the module notes).

    Attributes
    ----------
    basis : `numpy.ndarray`
        ``(nterm, m, m)`` float64: polynomial coefficients of the pixel-integrated PSF on the
        oversampled grid (node spacing ``1 / oversample`` px, centre node ``m // 2``) [per unit flux:
        ``basis[0].sum() / oversample**2 == 1``, so the pixel values of a star sum to about 1].
    oversample : int
        Grid nodes per image pixel.
    degree : int
        Total degree of the polynomial in position.
    x0, y0, scale : float
        Normalisation of positions: ``u = (x - x0) / scale``, ``v = (y - y0) / scale`` [px].
    nstar : int
        Number of stars the model was fitted to.
    fwhm0 : float
        FWHM at ``(x0, y0)`` [px] (`fwhm`'s default method; NaN if not measured).
    """

    basis: np.ndarray
    oversample: int
    degree: int
    x0: float
    y0: float
    scale: float
    nstar: int
    fwhm0: float = float("nan")

    @property
    def grid_size(self) -> int:
        """Nodes a side of the oversampled grid, ``m``."""
        return int(self.basis.shape[-1])

    @property
    def size(self) -> int:
        """Side of the model [px]: ``(m - 1) // oversample - 4``, made odd (the default `stamp` size)."""
        size = (self.grid_size - 1) // self.oversample - 2 * _PAD
        return size if size % 2 else size - 1

    def poly(self, x, y) -> np.ndarray:
        """The polynomial terms of the model at image positions ``(x, y)`` [px].

        Parameters
        ----------
        x, y : float or array-like
            Image positions [px, 0-based].

        Returns
        -------
        `numpy.ndarray`
            ``(n, nterm)`` float64; the oversampled model at position ``i`` is
            ``tensordot(poly(x, y)[i], basis, 1)``.
        """
        x = np.atleast_1d(np.asarray(x, dtype=float)).ravel()
        y = np.atleast_1d(np.asarray(y, dtype=float)).ravel()
        return poly_terms((x - self.x0) / self.scale, (y - self.y0) / self.scale, self.degree)

    def oversampled(self, x: float, y: float) -> np.ndarray:
        """The oversampled pixel-integrated PSF at image position ``(x, y)`` [px], ``(m, m)`` float64."""
        return np.tensordot(self.poly(float(x), float(y))[0], self.basis, axes=1)

    def stamp(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
              dy: float = 0.0) -> np.ndarray:
        """The PSF sampled on the image pixels at position ``(x, y)``.

        Parameters
        ----------
        x, y : float
            Image position [px, 0-based] where the PSF is evaluated.
        size : int, optional
            Odd stamp size [px]; default the model's `size`.
        dx, dy : float, optional
            Offset of the PSF centre from the centre of the stamp's central pixel [px].

        Returns
        -------
        `numpy.ndarray`
            ``(size, size)`` float64, normalised to unit sum.
        """
        m = self.grid_size
        size = self.size if size is None else int(size)
        if size < 1 or size % 2 == 0:
            raise ConfigError(f"size must be a positive odd integer, got {size!r}")
        off = np.arange(size) - size // 2
        wx = _interp_matrix(off - float(dx), m, self.oversample)
        wy = _interp_matrix(off - float(dy), m, self.oversample)
        out = wy @ self.oversampled(x, y) @ wx.T
        total = out.sum()
        return out / total if total != 0 else out

    def fwhm(self, x: float, y: float, *, method: str = "gaussian", radius: int = 3) -> float:
        """FWHM of the PSF at ``(x, y)`` [px].

        Parameters
        ----------
        x, y : float
            Image position [px, 0-based].
        method : {'gaussian', 'moffat'}, optional
            ``'gaussian'``: the median, over 16 sub-pixel phases, of the FWHM of the circular Gaussian
            whose pixel integrals best fit (unweighted least squares, centre free) the model's stamp
            of ``2 radius + 1`` px a side: what `photutils.psf.fit_fwhm` measures on a star and what
            ZTF's ``SEEING`` keyword reports (the FWHM of the pixel-integrated point source).
            ``'moffat'``: the FWHM of the underlying (pixel-deconvolved) profile, ``sqrt(a b)`` of the
            elliptical Moffat (beta free) whose pixel integrals best fit the grid; smaller, since the
            pixel's own width is taken out.
        radius : int, optional
            Half-side of the fitted stamp [px] (``'gaussian'`` only; 3 px is `photutils.psf.fit_fwhm`
            with ``fit_shape=7``).

        Returns
        -------
        float
            FWHM [px].
        """
        if method == "gaussian":
            return _gaussian_fwhm(self, x, y, int(round(radius)))
        if method == "moffat":
            return _moffat_fwhm(self.oversampled(x, y), self.oversample)
        raise ConfigError(f"method must be 'gaussian' or 'moffat', got {method!r}")

    def to_hdulist(self) -> fits.HDUList:
        """The FITS product: primary HDU the ``(nterm, m, m)`` float32 basis cube with the model cards."""
        hdr = fits.Header()
        hdr["PSFDEG"] = (int(self.degree), "degree of the PSF polynomial in position")
        hdr["PSFOVS"] = (int(self.oversample), "PSF grid nodes per image pixel")
        hdr["PSFNSTAR"] = (int(self.nstar), "number of stars in the PSF fit")
        hdr["PSF_FWHM"] = (float(self.fwhm0) if math.isfinite(self.fwhm0) else -1.0,
                           "[px] PSF FWHM at PSFX0, PSFY0")
        hdr["PSFX0"] = (float(self.x0), "[px] x origin of the position polynomial")
        hdr["PSFY0"] = (float(self.y0), "[px] y origin of the position polynomial")
        hdr["PSFSCALE"] = (float(self.scale), "[px] scale of the position polynomial")
        hdr["PSFBASIS"] = ("PIXEL", "pixel basis, Keys bicubic interpolation")
        return fits.HDUList([fits.PrimaryHDU(self.basis.astype(np.float32), header=hdr)])

    @classmethod
    def from_hdulist(cls, hdul: fits.HDUList) -> PSFModel:
        """Read a model written by `to_hdulist`."""
        h = hdul[0].header
        fw = float(h.get("PSF_FWHM", -1.0))
        return cls(basis=np.asarray(hdul[0].data, dtype=np.float64), oversample=int(h["PSFOVS"]),
                   degree=int(h["PSFDEG"]), x0=float(h["PSFX0"]), y0=float(h["PSFY0"]),
                   scale=float(h["PSFSCALE"]), nstar=int(h["PSFNSTAR"]), fwhm0=fw if fw > 0 else float("nan"))


def _gaussian_fwhm(model: PSFModel, x: float, y: float, radius: int, nphase: int = 4) -> float:
    """FWHM [px] of pixel-integrated circular Gaussians fitted to the model's stamps (``2 radius + 1``
    px a side, unweighted, centre free) at ``nphase**2`` sub-pixel phases: the median."""
    ph = (np.arange(nphase) + 0.5) / nphase - 0.5
    dxs, dys = np.meshgrid(ph, ph)
    dxs, dys = dxs.ravel(), dys.ravel()
    size = 2 * int(radius) + 1
    stamps = np.stack([model.stamp(x, y, size=size, dx=a, dy=b) for a, b in zip(dxs, dys)])
    p = _fit_gaussians(stamps, np.ones_like(stamps), int(radius), dxs, dys)
    return float(_GAUSS_FWHM * np.nanmedian(p[:, 3]))


def _moffat_fwhm(img: np.ndarray, oversample: int, nsub: int = 4) -> float:
    """FWHM [px] ``sqrt(a b)`` of the elliptical Moffat whose pixel integrals fit the grid's core."""
    m = img.shape[0]
    c = m // 2
    half = min(c, 6 * oversample)
    sub = img[c - half:c + half + 1, c - half:c + half + 1]
    g = (np.arange(-half, half + 1) / oversample)
    s = (np.arange(nsub) + 0.5) / nsub - 0.5          # sub-pixel sampling of the pixel box
    X = (g[None, :, None, None] + s[None, None, None, :])
    Y = (g[:, None, None, None] + s[None, None, :, None])

    def model(p):
        amp, lf, e1, e2, lb, x0, y0 = p
        fw = math.exp(lf)
        beta = 1.0 + math.exp(lb)
        e = min(math.hypot(e1, e2), 0.9)
        pa = 0.5 * math.atan2(e2, e1)
        q = math.sqrt(1.0 - e)
        k = 2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0)
        a, b = fw / q / k, fw * q / k
        cs, sn = math.cos(pa), math.sin(pa)
        dx, dy = X - x0, Y - y0
        xr, yr = dx * cs + dy * sn, -dx * sn + dy * cs
        v = (1.0 + (xr / a) ** 2 + (yr / b) ** 2) ** -beta
        return amp * v.mean(axis=(2, 3))

    peak = float(sub.max())
    p0 = [peak, math.log(2.0), 0.0, 0.0, math.log(2.0), 0.0, 0.0]
    res = scipy.optimize.least_squares(lambda p: (model(p) - sub).ravel(), p0, method="lm")
    return float(math.exp(res.x[1]))


def _select(sources, shape, size: int, max_stars: int, min_snr: float, clip: float, max_peak: float):
    """Indices of PSF stars: clean, bright but below ``max_peak``, inside, FWHM and elongation near the
    median; highest S/N first."""
    ny, nx = shape
    x = np.asarray(sources["x"], dtype=float)
    y = np.asarray(sources["y"], dtype=float)
    flux = np.asarray(sources["flux"], dtype=float)
    ok = (np.asarray(sources["flags"]) & _BAD_FLAGS) == 0
    with np.errstate(invalid="ignore"):
        ok &= np.asarray(sources["snr"], dtype=float) >= min_snr
        ok &= np.isfinite(x) & np.isfinite(y) & np.isfinite(flux) & (flux > 0)
        h = size // 2
        ok &= (x >= h) & (x <= nx - 1 - h) & (y >= h) & (y <= ny - 1 - h)
        if np.isfinite(max_peak) and "peak" in sources.colnames:
            ok &= np.asarray(sources["peak"], dtype=float) < max_peak
    for col in ("fwhm", "elongation"):
        v = np.asarray(sources[col], dtype=float)
        ok &= np.isfinite(v)
        if ok.sum() < 3:
            break
        med = np.median(v[ok])
        mad = 1.4826 * np.median(np.abs(v[ok] - med))
        ok &= np.abs(v - med) <= clip * max(mad, 0.02 * med)
    idx = np.nonzero(ok)[0]
    idx = idx[np.argsort(-np.asarray(sources["snr"], dtype=float)[idx], kind="stable")]
    return idx[:max_stars]


class _Stars:
    """The selected stars' pixels as a linear function of the oversampled grid.

    Star ``s``'s pixel ``(j, i)`` of its ``S x S`` box (centred on the pixel nearest to the star) is
    ``sum_u k_s[u] G_s[b_s + (j, i) * oversample + u]``: the 4 x 4 bicubic weights ``k_s`` are the same
    for all the pixels of a star (they depend only on its sub-pixel phase), and the base nodes of its
    pixels lie on one of the ``oversample**2`` sub-lattices of the grid. The normal equations are
    accumulated per sub-lattice as dense matrix products (BLAS), never pixel by pixel.
    """

    def __init__(self, xs, ys, ix, iy, S: int, m: int, oversample: int):
        c = m // 2
        ty = (iy - ys) * oversample + c          # grid coordinate of each star's central pixel
        tx = (ix - xs) * oversample + c
        iyc, self.wy = cubic_weights(ty)
        ixc, self.wx = cubic_weights(tx)
        # derivatives of the weights with respect to the star's position
        self.dwy = -oversample * _cubic_dweights(ty)
        self.dwx = -oversample * _cubic_dweights(tx)
        h = S // 2
        self.by0 = iyc - h * oversample          # base node of each star's first pixel row / column
        self.bx0 = ixc - h * oversample
        self.kern = (self.wy[:, :, None] * self.wx[:, None, :]).reshape(len(xs), 16)
        self.S, self.m, self.ovs = S, m, oversample

    def _lattice(self, lo: int, M: int):
        """Per sub-lattice ``(a, b)`` of the window ``[lo, lo + M)``: its stars and their first lattice row
        and column (``(a + t * ovs)`` are the lattice's window coordinates)."""
        ovs = self.ovs
        ay, ax = (self.by0 - lo) % ovs, (self.bx0 - lo) % ovs
        for a in range(ovs):
            for b in range(ovs):
                sel = np.nonzero((ay == a) & (ax == b))[0]
                if len(sel):
                    yield a, b, sel, (self.by0[sel] - lo - a) // ovs, (self.bx0[sel] - lo - b) // ovs

    def _scatter(self, values, sel, t0y, t0x, La, Lb):
        """Pixel values ``(len(sel), S, S)`` placed on a sub-lattice ``(len(sel), La * Lb)``."""
        n, S = len(sel), self.S
        j = np.arange(S)
        ry = t0y[:, None] + j
        rx = t0x[:, None] + j
        oky = (ry >= 0) & (ry < La)
        okx = (rx >= 0) & (rx < Lb)
        out = np.zeros((n, La, Lb))
        if oky.all() and okx.all():
            out[np.arange(n)[:, None, None], ry[:, :, None], rx[:, None, :]] = values
        else:
            ok = oky[:, :, None] & okx[:, None, :]
            s = np.broadcast_to(np.arange(n)[:, None, None], ok.shape)[ok]
            out[s, np.broadcast_to(ry[:, :, None], ok.shape)[ok], np.broadcast_to(rx[:, None, :], ok.shape)[ok]] \
                = values[ok]
        return out.reshape(n, -1)

    def normal(self, w, r, coef, lo: int, M: int):
        """Normal-equation pieces on the base-node window ``[lo, lo + M)``.

        For pixel weights ``w`` and targets ``r`` (``(n, S, S)``) and per-star coefficients ``coef``
        (``(n, T)``, the products of the polynomial terms of each pair of unknowns' terms), returns
        the bands ``Nb[t, dy + 3, dx + 3, py, px]`` (the normal matrix between node ``p`` and node
        ``p + d`` for coefficient ``t``; ``p`` in ``[lo, lo + M + 3)``) and, for the per-star
        coefficients ``rcoef`` used in `rhs`, nothing: see `rhs`.
        """
        ovs = self.ovs
        T = coef.shape[1]
        Q = np.zeros((T, 4, 4, 4, 4, M, M))
        kk = (self.kern[:, :, None] * self.kern[:, None, :])              # (n, 16, 16)
        for a, b, sel, t0y, t0x in self._lattice(lo, M):
            La, Lb = len(range(a, M, ovs)), len(range(b, M, ovs))
            om = self._scatter(w[sel], sel, t0y, t0x, La, Lb)
            ck = (coef[sel][:, :, None, None] * kk[sel][:, None]).reshape(len(sel), -1)
            Q[..., a::ovs, b::ovs] += (ck.T @ om).reshape(T, 4, 4, 4, 4, La, Lb)
        Nb = np.zeros((T, 7, 7, M + 3, M + 3))
        for uy in range(4):
            for ux in range(4):
                Nb[:, 3 - uy:7 - uy, 3 - ux:7 - ux, uy:uy + M, ux:ux + M] += Q[:, uy, ux]
        return Nb

    def rhs(self, w, r, coef, lo: int, M: int):
        """``(T, M + 3, M + 3)`` right-hand sides ``sum_s coef[s, t] A_s^T w_s r_s`` on the nodes
        ``[lo, lo + M + 3)``."""
        ovs = self.ovs
        T = coef.shape[1]
        q = np.zeros((T, 4, 4, M, M))
        for a, b, sel, t0y, t0x in self._lattice(lo, M):
            La, Lb = len(range(a, M, ovs)), len(range(b, M, ovs))
            om = self._scatter(w[sel] * r[sel], sel, t0y, t0x, La, Lb)
            ck = (coef[sel][:, :, None] * self.kern[sel][:, None, :]).reshape(len(sel), -1)
            q[..., a::ovs, b::ovs] += (ck.T @ om).reshape(T, 4, 4, La, Lb)
        out = np.zeros((T, M + 3, M + 3))
        for uy in range(4):
            for ux in range(4):
                out[:, uy:uy + M, ux:ux + M] += q[:, uy, ux]
        return out

    def render(self, G, lo: int = 0, deriv: bool = False):
        """Pixel values ``(n, S, S)`` of a grid, and with ``deriv`` their derivatives with respect to
        the stars' ``x`` and ``y``.

        ``G`` is the ``(m, m)`` grid of all the stars, or ``(n, M, M)`` per-star grids of the nodes
        ``[lo, lo + M)`` (zero elsewhere): then only the pixels whose stencils reach it are computed.
        """
        n, S, ovs = len(self.by0), self.S, self.ovs
        j = np.arange(S)
        if G.ndim == 3:
            M = G.shape[-1]
            jy0 = max(0, int(np.floor((lo - 3 - self.by0.max()) / ovs)))
            jy1 = min(S, int(np.ceil((lo + M - self.by0.min()) / ovs)) + 1)
            jx0 = max(0, int(np.floor((lo - 3 - self.bx0.max()) / ovs)))
            jx1 = min(S, int(np.ceil((lo + M - self.bx0.min()) / ovs)) + 1)
            jy, jx = j[jy0:jy1], j[jx0:jx1]
            # pad the grids so that every stencil of those pixels falls inside
            ry = self.by0[:, None] + jy * ovs - lo
            rx = self.bx0[:, None] + jx * ovs - lo
            py0, px0 = max(0, -int(ry.min())), max(0, -int(rx.min()))
            py1, px1 = max(0, int(ry.max()) + 4 - M), max(0, int(rx.max()) + 4 - M)
            Gp = np.pad(G, ((0, 0), (py0, py1), (px0, px1)))
            ry = ry + py0
            rx = rx + px0
            ry = ry[:, :, None] + np.arange(4)
            rx = rx[:, :, None] + np.arange(4)
            sub = Gp[np.arange(n)[:, None, None, None, None], ry[:, :, :, None, None], rx[:, None, None, :, :]]
        else:
            jy0 = jx0 = 0
            jy1 = jx1 = S
            ry = (self.by0[:, None] + j * ovs)[:, :, None] + np.arange(4)
            rx = (self.bx0[:, None] + j * ovs)[:, :, None] + np.arange(4)
            sub = G[ry[:, :, :, None, None], rx[:, None, None, :, :]]
        out = [np.einsum("nbpaq,np,nq->nba", sub, self.wy, self.wx, optimize=True)]
        if deriv:
            out.append(np.einsum("nbpaq,np,nq->nba", sub, self.wy, self.dwx, optimize=True))
            out.append(np.einsum("nbpaq,np,nq->nba", sub, self.dwy, self.wx, optimize=True))
        if G.ndim == 3:
            full = []
            for v in out:
                f = np.zeros((n, S, S))
                f[:, jy0:jy1, jx0:jx1] = v
                full.append(f)
            out = full
        return out if deriv else out[0]


def _solve_const(stars, w, r, m: int, free: np.ndarray, ridge: float | None):
    """Least-squares grid ``(m, m)`` (one term) of targets ``r`` with weights ``w``: banded Cholesky.

    Nodes outside ``free`` (beyond the stars' boxes, where only the tails of the interpolation kernel
    reach) are held at zero.
    """
    one = np.ones((len(w), 1))
    Nb = stars.normal(w, r, one, 0, m)[0, :, :, :m, :m].reshape(7, 7, m * m)
    f = free.ravel().astype(float)
    rhs = stars.rhs(w, r, one, 0, m)[0, :m, :m].ravel() * f
    bw = 3 * m + 3
    n = m * m
    ab = np.zeros((bw + 1, n))
    for dy in range(0, 4):
        for dx in range(-3, 4):
            off = dy * m + dx
            if off < 0:
                continue
            ab[bw - off, off:] = Nb[dy + 3, dx + 3, :n - off] * f[:n - off] * f[off:]
    if ridge is None:
        ridge = 1e-9 * float(ab[bw].max())
    ab[bw] += ridge
    ab[bw, f == 0] = 1.0
    cf = scipy.linalg.cholesky_banded(ab, lower=False, check_finite=False)
    cls = _phase_classes(m, stars.ovs, 0)
    sol = _solve_constrained(cf, rhs, _class_constraints(cls.ravel(), stars.ovs))
    return sol.reshape(m, m), ridge


@functools.lru_cache(maxsize=8)
def _core_band_index(nc: int, K: int):
    """Where the bands of `_Stars.normal` go in the banded storage of the core system (node-major
    unknowns ``(py * nc + px) * K + k``): flat indices into the bands and into the storage."""
    pairs = [(k, l) for k in range(K) for l in range(k, K)]
    bw = (3 * nc + 3) * K + K
    py, px = np.meshgrid(np.arange(nc), np.arange(nc), indexing="ij")
    src, dst = [], []
    for t, (k, l) in enumerate(pairs):
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                qy, qx = py + dy, px + dx
                ok = (qy >= 0) & (qy < nc) & (qx >= 0) & (qx < nc)
                rr = (py[ok] * nc + px[ok]) * K + k
                cc = (qy[ok] * nc + qx[ok]) * K + l
                r, c = np.minimum(rr, cc), np.maximum(rr, cc)
                src.append(np.ravel_multi_index((t, dy + 3, dx + 3, py[ok], px[ok]),
                                                (len(pairs), 7, 7, nc, nc)))
                dst.append((bw + r - c) * (nc * nc * K) + c)
    return pairs, bw, np.concatenate(src), np.concatenate(dst)


def _solve_core(stars, w, r, P, lo: int, nc: int, ridge: float):
    """Least-squares correction ``(K, nc, nc)`` of all the terms on the core nodes ``[lo, lo + nc)``
    (the rest of the grid held), banded Cholesky with the unknowns node-major."""
    n, K = P.shape
    pairs, bw, src, dst = _core_band_index(nc, K)
    coef = np.stack([P[:, k] * P[:, l] for k, l in pairs], axis=1)
    wlo, M = lo - 3, nc + 3                     # base nodes whose stencils reach the core
    Nb = stars.normal(w, r, coef, wlo, M)[:, :, :, 3:3 + nc, 3:3 + nc]        # p in the core
    rq = stars.rhs(w, r, P, wlo, M)[:, 3:3 + nc, 3:3 + nc]
    rhs = np.moveaxis(rq, 0, -1).ravel()                                   # node-major: (py, px, k)
    nv = nc * nc * K
    ab = np.zeros((bw + 1, nv))
    ab.ravel()[dst] = Nb.ravel()[src]
    ab[bw] += ridge
    cf = scipy.linalg.cholesky_banded(ab, lower=False, check_finite=False)
    # the constant term's sub-lattice sums stay equal (the other terms' normalisation is free)
    C = np.zeros((nv, stars.ovs**2 - 1))
    C[0::K] = _class_constraints(_phase_classes(nc, stars.ovs, lo).ravel(), stars.ovs)
    sol = _solve_constrained(cf, rhs, C)
    return np.moveaxis(sol.reshape(nc, nc, K), -1, 0)


def _phase_classes(n: int, oversample: int, lo: int) -> np.ndarray:
    """``(n, n)`` sub-lattice (pixel-phase class) of the nodes ``[lo, lo + n)``, ``0 .. ovs**2 - 1``."""
    j = (lo + np.arange(n)) % oversample
    return j[:, None] * oversample + j[None, :]


def _class_constraints(cls: np.ndarray, oversample: int) -> np.ndarray:
    """Columns ``c_j - c_0`` (``c_j`` the indicator of class ``j``): the class sums are all equal."""
    return np.stack([(cls == j).astype(float) - (cls == 0) for j in range(1, oversample**2)], axis=1)


def _solve_constrained(cf, rhs, C):
    """``argmin x^T N x - 2 rhs^T x`` subject to ``C^T x = 0`` (``N`` given by its banded Cholesky
    factor ``cf``; Lagrange multipliers).

    The sum of a star's pixels is the average of the sums of the grid's ``oversample**2`` sub-lattices
    weighted by its sub-pixel phase; the fitted fluxes would absorb any phase-dependent normalisation,
    which distorts the grid (not its interpolated stamps), so the sub-lattice sums are tied together.
    """
    x0 = scipy.linalg.cho_solve_banded((cf, False), rhs, check_finite=False)
    if C.shape[1] == 0:
        return x0
    NC = scipy.linalg.cho_solve_banded((cf, False), C, check_finite=False)
    lam = np.linalg.solve(C.T @ NC, C.T @ x0)
    return x0 - NC @ lam


def _fit_gaussians(d, w, radius: int, dx, dy, niter: int = 10):
    """Pixel-integrated circular Gaussians fitted to boxes (vectorised Gauss-Newton).

    ``d``, ``w`` are ``(n, 2 r + 1, 2 r + 1)`` pixel values and weights centred on the boxes' central
    pixels, ``dx, dy`` first guesses of the centres [px]. Returns ``(n, 4)``: amplitude (flux), ``x``,
    ``y`` offsets [px] and sigma [px]; a row of NaN where a fit fails or runs away.
    """
    n = d.shape[0]
    d = d.reshape(n, -1)
    w = w.reshape(n, -1)
    o = np.arange(-radius, radius + 1, dtype=float)
    gy, gx = np.meshgrid(o, o, indexing="ij")
    gy, gx = gy.ravel(), gx.ravel()
    p = np.stack([np.maximum(np.sum(d, axis=1), 1e-30), dx, dy, np.full(n, 0.6)], axis=1)
    rt2pi, sq2 = math.sqrt(2.0 * math.pi), math.sqrt(2.0)

    def prof(t, s):
        # pixel integral of a unit 1-d Gaussian, and its derivatives by the centre and by sigma
        g = 0.5 * (scipy.special.erf((t + 0.5) / (sq2 * s)) - scipy.special.erf((t - 0.5) / (sq2 * s)))
        pa = np.exp(-0.5 * ((t + 0.5) / s) ** 2) / (s * rt2pi)
        pb = np.exp(-0.5 * ((t - 0.5) / s) ** 2) / (s * rt2pi)
        return g, -(pa - pb), -((t + 0.5) * pa - (t - 0.5) * pb) / s

    with np.errstate(all="ignore"):
        for _ in range(niter):
            s = p[:, 3:4]
            fx, dfx, sfx = prof(gx[None] - p[:, 1:2], s)
            fy, dfy, sfy = prof(gy[None] - p[:, 2:3], s)
            a = p[:, 0:1]
            J = np.stack([fx * fy, a * dfx * fy, a * fx * dfy, a * (sfx * fy + fx * sfy)], axis=1)
            Jw = J * w[:, None]
            A = np.einsum("nip,njp->nij", Jw, J)
            A += (1e-3 * np.einsum("nii->ni", A) + 1e-30)[:, :, None] * np.eye(4)
            b = np.einsum("nip,np->ni", Jw, d - a * fx * fy)
            p += np.linalg.solve(A, b[:, :, None])[:, :, 0]
            p[:, 3] = np.clip(p[:, 3], 0.1, 5.0)
    ok = (np.isfinite(p).all(axis=1) & (np.abs(p[:, 1] - dx) < 0.5) & (np.abs(p[:, 2] - dy) < 0.5)
          & (p[:, 0] > 0))
    p[~ok] = np.nan
    return p


def _gauss_centroids(data, use, dx, dy, var, radius: int = 3):
    """Centroids of the stars from pixel-integrated circular Gaussian fits.

    ``data`` ``(n, S, S)`` background-subtracted boxes, ``dx, dy`` the first guesses of the offsets of the
    stars from the boxes' central pixels [px]. Unlike windowed moments, a fitted symmetric profile has
    almost no pixel-phase bias ("S curve", several hundredths of a pixel for ZTF's undersampled stars),
    which would distort the model. Returns the new offsets [px] (the guesses where a fit fails).
    """
    h = data.shape[1] // 2
    sl = slice(h - radius, h + radius + 1)
    w = np.where(use[:, sl, sl], 1.0 / var[:, sl, sl], 0.0)
    p = _fit_gaussians(data[:, sl, sl], w, radius, dx, dy)
    ok = np.isfinite(p[:, 0])
    return np.where(ok, p[:, 1], dx), np.where(ok, p[:, 2], dy)


def _flux_shift(data, mod, dmx, dmy, w, flux, shift: bool):
    """Per star, the weighted least-squares flux [DN] (and, with ``shift``, position offsets [px]) of
    ``data = flux * (mod + dx * dmx + dy * dmy)``; previous flux and no shift where singular."""
    n = len(flux)
    if not shift:
        smm = np.sum(w * mod * mod, axis=(1, 2))
        smd = np.sum(w * mod * data, axis=(1, 2))
        ok = smm > 0
        return np.where(ok, smd / np.where(ok, smm, 1.0), flux), np.zeros(n), np.zeros(n)
    B = np.stack([mod, dmx, dmy], axis=1).reshape(n, 3, -1)
    wf = w.reshape(n, 1, -1)
    A = np.einsum("nip,njp->nij", B * wf, B)
    b = np.einsum("nip,np->ni", B * wf, data.reshape(n, -1))
    det = np.linalg.det(A)
    ok = np.isfinite(det) & (np.abs(det) > 1e-12 * np.abs(A[:, 0, 0] * A[:, 1, 1] * A[:, 2, 2]) + 1e-300)
    sol = np.zeros((n, 3))
    if ok.any():
        sol[ok] = np.linalg.solve(A[ok], b[ok][:, :, None])[:, :, 0]
    f = np.where(ok & (sol[:, 0] > 0), sol[:, 0], flux)
    good = ok & (sol[:, 0] > 0)
    dx = np.where(good, sol[:, 1] / np.where(good, sol[:, 0], 1.0), 0.0)
    dy = np.where(good, sol[:, 2] / np.where(good, sol[:, 0], 1.0), 0.0)
    return f, dx, dy


def _neighbour_mask(sources, idx, ix, iy, h: int) -> np.ndarray:
    """``(nstar, 2h+1, 2h+1)`` True on the pixels of each PSF star's box near another source.

    A neighbour's light in a star's wings would become part of the PSF (a percent of flux in the
    wings is a percent of every PSF-fit flux): pixels within ``2 FWHM`` of any other detected source,
    widened by ``FWHM log10(F_neighbour / F_star)`` for brighter ones, are left out of the fit.
    """
    from scipy.spatial import cKDTree

    x = np.asarray(sources["x"], dtype=float)
    y = np.asarray(sources["y"], dtype=float)
    f = np.clip(np.asarray(sources["flux"], dtype=float), 1e-3, None)
    fw = np.asarray(sources["fwhm"], dtype=float)
    fwhm = float(np.nanmedian(fw[idx])) if np.isfinite(fw[idx]).any() else 2.0
    ok = np.isfinite(x) & np.isfinite(y)
    tree = cKDTree(np.column_stack([x[ok], y[ok]]))
    rows = np.nonzero(ok)[0]
    o = np.arange(-h, h + 1, dtype=float)
    out = np.zeros((len(idx), 2 * h + 1, 2 * h + 1), dtype=bool)
    reach = h * math.sqrt(2.0) + 4.0 * fwhm
    for k, i in enumerate(idx):
        for j in rows[tree.query_ball_point((x[i], y[i]), reach)]:
            if j == i:
                continue
            r = fwhm * (2.0 + max(0.0, math.log10(f[j] / f[i])))
            dx = ix[k] + o - x[j]
            dy = iy[k] + o - y[j]
            out[k] |= (dy[:, None] ** 2 + dx[None, :] ** 2) <= r * r
    return out


def _round_wings(grid: np.ndarray, oversample: int, radius: float, width: float = 0.5) -> np.ndarray:
    """The grid with its wings beyond ``radius`` [px] replaced by their azimuthal average in rings of
    ``width`` [px], separately on each of the ``oversample**2`` sub-lattices.

    Far from the core each node is constrained by few, faint pixels: left free, the wings' noise
    carries a percent or two of the model's flux, where a real star's wings beyond 3 FWHM hold a few
    tenths of a percent. Averaging over rings leaves their mean profile and takes out their noise. A
    star's pixels sample one sub-lattice (its sub-pixel phase), so the averages are taken within each
    sub-lattice: every phase keeps its own sum, and the model's flux does not change with the phase.
    """
    m = grid.shape[0]
    c = m // 2
    idx = np.arange(m) - c
    g = idx / oversample
    r = np.hypot(g[:, None], g[None, :])
    cls = (idx[:, None] % oversample) * oversample + (idx[None, :] % oversample)
    out = grid.copy()
    outer = r > radius
    ring = np.floor((r - radius) / width).astype(int)
    nring = int(ring[outer].max()) + 1 if outer.any() else 0
    if nring <= 0:
        return out
    key = np.where(outer, cls * nring + ring, -1)
    sel = key >= 0
    n = oversample * oversample * nring
    sums = np.bincount(key[sel], weights=grid[sel], minlength=n)
    counts = np.bincount(key[sel], minlength=n)
    out[sel] = (sums / np.maximum(counts, 1))[key[sel]]
    return out


def build_psf(sciimg, mskimg, sources, *, oversample: int = 3, size: int = 25, degree: int = 2,
              max_stars: int = 300, min_stars: int = 10, min_snr: float = 20.0, clip: float = 4.0,
              gain: float = 6.2, saturate: float | None = None, peak_frac: float = 0.25,
              accuracy: float = 0.01, var_radius: float | None = None, niter: int = 2, recenter: bool = True,
              product: str | None = None) -> PSFModel:
    """Fit a spatially varying pixel-basis PSF to the bright isolated stars of a quadrant.

    The stars are the clean sources (no flag) of S/N at least ``min_snr``, peak below
    ``peak_frac * saturate``, FWHM and elongation near the median, highest S/N first. Each round fits
    (1) the position-independent grid to all their pixels, then (2) all the polynomial terms on the
    core nodes (within ``var_radius``) to the residuals, both by weighted linear least squares
    (normal equations accumulated per sub-lattice with BLAS, banded Cholesky), with the grid's
    sub-lattice sums tied (a star's flux does not depend on its sub-pixel phase); then each star's
    flux and position, and rejects deviant stars and pixels.

    Parameters
    ----------
    sciimg : array-like
        ``(ny, nx)`` calibrated image [DN].
    mskimg : array-like or None
        ``(ny, nx)`` integer mask (`~ztfsds.products.MaskBits`); pixels with a ``MaskBits.BAD`` bit
        are left out.
    sources : astropy.table.Table
        Sources of `ztfsds.astrom.extract` (``x``, ``y`` [px, 0-based], ``flux`` [DN], ``snr``,
        ``flags``, ``fwhm`` [px], ``elongation``, ``background`` [DN]; ``meta['BKGRMS']`` [DN]).
    oversample : int, optional
        Model grid nodes per image pixel.
    size : int, optional
        Odd size of the model [px].
    degree : int, optional
        Degree of the polynomial in position: lowered when there are fewer than ``10 x oversample``
        stars per polynomial term (180 for degree 2 at oversample 3), and again while the fitted model
        departs from the mean PSF by more than 60 % of its flux (L1) where the stars are (noise fitted).
    max_stars : int, optional
        Most stars used (highest S/N first).
    min_stars : int, optional
        Fewer usable stars raise `~ztfsds.errors.PhotometryError`.
    min_snr : float, optional
        Least S/N of a PSF star.
    clip : float, optional
        Stars whose FWHM or elongation differ from the median by more than ``clip`` robust sigma are
        rejected; after each fit, stars whose reduced chi-square is ``clip`` robust sigma above the
        median and pixels deviating by more than ``clip + 1`` sigma are left out of the next round.
    gain : float, optional
        [e-/DN], for the pixels' shot noise in the weights.
    saturate : float, optional
        Saturation level [DN] (header ``SATURATE``). Stars whose peak (above the background) reaches
        ``peak_frac * saturate`` are left out: on ZTF's CCDs the brightest unsaturated stars are
        broader than the rest (brighter-fatter effect; 3-8 % in FWHM above a quarter of saturation).
    peak_frac : float, optional
        See ``saturate``.
    accuracy : float, optional
        Relative accuracy of a pixel (PSFEx's ``PSF_ACCURACY``): adds ``(accuracy * value)**2`` to the
        variance, so that a few very bright stars do not outweigh all the others (the sub-pixel phases
        of many stars are what constrain the oversampled grid).
    var_radius : float, optional
        Half-width [px] of the central box of nodes whose values vary with position (outside it the
        model is the same everywhere). Default: 3 times the stars' median ``fwhm``, within 4 to 6 px
        (the cost of the fit grows as its fourth power: 0.4 s at 4 px, 0.7 s at 6 px on a full ZTF
        quadrant).
    niter : int, optional
        Rounds of (basis fit, flux and position fit, rejection).
    recenter : bool, optional
        Start from pixel-integrated Gaussian centroids of the stars and refine them with the model
        between rounds (``False``: keep the ``sources``' positions; their pixel-phase bias then blurs
        the model).
    product : str, optional
        Named in errors.

    Returns
    -------
    PSFModel
        Unit-flux model (the centre model's pixel sum is 1).

    Raises
    ------
    ztfsds.errors.PhotometryError
        Too few usable stars; ``infobits`` is `~ztfsds.products.InfoBits.PSF_FAILED`.
    ztfsds.errors.ConfigError
        Bad ``size``, ``oversample``, ``degree`` or ``var_radius``.
    """
    size, oversample, degree = int(size), int(oversample), int(degree)
    if size < 5 or size % 2 == 0 or oversample < 1 or degree < 0 or not (var_radius is None or var_radius >= 0):
        raise ConfigError(f"need odd size >= 5, oversample >= 1, degree >= 0, var_radius >= 0; got {size}, "
                          f"{oversample}, {degree}, {var_radius}")
    sci = np.asarray(sciimg, dtype=np.float32)
    ny, nx = sci.shape
    bad = np.zeros(sci.shape, bool) if mskimg is None else (np.asarray(mskimg) & int(MaskBits.BAD)) != 0
    max_peak = np.inf if saturate is None else float(peak_frac) * float(saturate)
    idx = _select(sources, sci.shape, size, max_stars, min_snr, min(clip, 2.5), max_peak)
    if len(idx) < min_stars:
        raise PhotometryError(f"PSF needs at least {min_stars} clean stars, found {len(idx)} of "
                              f"{len(sources)} sources", infobits=int(InfoBits.PSF_FAILED), product=product)
    # each polynomial term of the core needs stars at every sub-pixel phase of the oversampled grid:
    # about 10 per phase row, 10 x oversample stars a term (degree 2: 180 stars at oversample 3); with
    # fewer the terms fit noise (51 stars at degree 2 gave a model with 97 % of its flux in negative
    # spikes, and every subtraction with it a failure)
    while degree > 0 and len(idx) < _STARS_PER_TERM * oversample * (degree + 1) * (degree + 2) // 2:
        degree -= 1
    xs = np.asarray(sources["x"], dtype=float)[idx]
    ys = np.asarray(sources["y"], dtype=float)[idx]
    flux = np.asarray(sources["flux"], dtype=float)[idx]
    bkg = np.asarray(sources["background"], dtype=float)[idx]
    x0, y0, scale = (nx - 1) / 2.0, (ny - 1) / 2.0, max(nx, ny) / 2.0
    P = poly_terms((xs - x0) / scale, (ys - y0) / scale, degree)
    m = (size + 2 * _PAD) * oversample + 1
    c = m // 2
    h = size // 2
    if var_radius is None:
        fw = np.asarray(sources["fwhm"], dtype=float)[idx]
        var_radius = float(np.clip(3.0 * np.median(fw), 4.0, 6.0)) if np.isfinite(fw).any() else 4.0
    rv = int(round(min(var_radius, h) * oversample))
    lo, nc = c - rv, 2 * rv + 1
    K = P.shape[1]

    # the stars' boxes, background subtracted
    ix = np.rint(xs).astype(np.int64)
    iy = np.rint(ys).astype(np.int64)
    o = np.arange(-h, h + 1)
    py = iy[:, None, None] + o[None, :, None]
    px = ix[:, None, None] + o[None, None, :]
    raw = sci[py, px].astype(float) - bkg[:, None, None]
    use = ~bad[py, px] & np.isfinite(raw)
    use &= ~_neighbour_mask(sources, idx, ix, iy, h)
    raw = np.where(use, raw, 0.0)
    # a residual local sky per star (1 DN over the box is a large fraction of a faint star's flux):
    # the median of the box's border
    ring = (np.abs(o)[:, None] == h) | (np.abs(o)[None, :] == h)
    ringv = np.where(ring[None] & use, raw, np.nan)
    with np.errstate(all="ignore"):
        sky = np.nan_to_num(np.nanmedian(ringv.reshape(len(idx), -1), axis=1))
    data = raw - sky[:, None, None]
    rms = float(sources.meta.get("BKGRMS", np.nan)) if hasattr(sources, "meta") else np.nan
    if not np.isfinite(rms) or rms <= 0:
        rv_ = ringv[np.isfinite(ringv)]
        rms = 1.4826 * float(np.median(np.abs(rv_ - np.median(rv_)))) if rv_.size else 1.0
        rms = rms if rms > 0 else 1.0
    expect = np.maximum(data, 0.0)
    ix, iy = ix.astype(float), iy.astype(float)
    if recenter:
        var = rms**2 + expect / gain + (accuracy * expect) ** 2
        ddx, ddy = _gauss_centroids(data, use, xs - ix, ys - iy, var)
        xs, ys = ix + ddx, iy + ddy

    g = np.abs(np.arange(m) - c) <= (h + 0.5) * oversample
    free = g[:, None] & g[None, :]
    ridge = None
    for it in range(niter):
        stars = _Stars(xs, ys, ix, iy, size, m, oversample)
        var = rms**2 + expect / gain + (accuracy * expect) ** 2
        w = np.where(use, flux[:, None, None] ** 2 / var, 0.0)
        y = data / flux[:, None, None]
        # stage 1: the mean PSF on the whole grid; stage 2: all the terms on the core nodes
        G0, ridge = _solve_const(stars, w, y, m, free, ridge)
        mod, dmx, dmy = stars.render(G0, deriv=True)
        core = _solve_core(stars, w, y - mod, P, lo, nc, ridge)
        basis = np.zeros((K, m, m))
        basis[0] = G0
        basis[:, lo:lo + nc, lo:lo + nc] += core
        cmod, cdx, cdy = stars.render(np.tensordot(P, core, axes=1), lo, deriv=True)
        mod += cmod
        dmx += cdx
        dmy += cdy
        # each star's flux and position: linearised weighted least squares
        wv = np.where(use, 1.0 / var, 0.0)
        flux, dx, dy = _flux_shift(data, mod, dmx, dmy, wv, flux, recenter and it < niter - 1)
        if recenter and it < niter - 1:
            # the shifts that vary with position are the model's centroid's own variation: kept
            sh = np.stack([dx, dy], axis=1)
            coef, *_ = np.linalg.lstsq(P, sh, rcond=None)
            sh = np.clip(sh - P @ coef, -0.25, 0.25)
            xs = xs + sh[:, 0]
            ys = ys + sh[:, 1]
        expect = np.maximum(flux[:, None, None] * mod, 0.0)
        if it < niter - 1:
            var = rms**2 + expect / gain + (accuracy * expect) ** 2
            resid = (data - flux[:, None, None] * mod) / np.sqrt(var)
            nuse = np.maximum(use.sum(axis=(1, 2)), 1)
            chi2 = np.sum(np.where(use, resid * resid, 0.0), axis=(1, 2)) / nuse
            alive = use.any(axis=(1, 2))
            med = np.median(chi2[alive])
            mad = 1.4826 * np.median(np.abs(chi2[alive] - med))
            use[chi2 > med + clip * max(mad, 0.1 * med)] = False
            use &= np.abs(resid) <= clip + 1.0
    basis[0] = _round_wings(basis[0], oversample, rv / oversample)
    basis /= basis[0].sum() / oversample**2
    model = PSFModel(basis=basis, oversample=oversample, degree=degree, x0=x0, y0=y0, scale=scale,
                     nstar=int(use.any(axis=(1, 2)).sum()))
    if degree > 0:
        # a sanity check of the varying terms where the stars are: against the position-independent
        # grid of stage 1 (stable: all the stars' pixels constrain it), the model at the edges of
        # the stars' spread (the polynomial's extremes: corners, edge middles, centre) may differ by
        # the PSF's real variation (10-30 % in L1 across a ZTF quadrant) but not by its whole flux,
        # as a model that fitted noise does: refit with one degree less
        g0 = _round_wings(G0, oversample, rv / oversample)
        mean = PSFModel(basis=(g0 / (g0.sum() / oversample**2))[None], oversample=oversample, degree=0,
                        x0=x0, y0=y0, scale=scale, nstar=0)
        qx = np.quantile(xs, [0.0, 0.5, 1.0])
        qy = np.quantile(ys, [0.0, 0.5, 1.0])
        for xi, yi in ((a, b) for a in qx for b in qy):
            st = model.stamp(float(xi), float(yi))
            ref = mean.stamp(float(xi), float(yi))
            change = float(np.abs(st - ref).sum() / ref.sum())
            if change > _MAX_VARIATION:
                log.info("build_psf %s: degree %d model departs by %.0f %% from the mean PSF at (%.0f, %.0f); "
                         "refitting with degree %d", product, degree, 100 * change, xi, yi, degree - 1)
                return build_psf(sciimg, mskimg, sources, oversample=oversample, size=size, degree=degree - 1,
                                 max_stars=max_stars, min_stars=min_stars, min_snr=min_snr, clip=clip, gain=gain,
                                 saturate=saturate, peak_frac=peak_frac, accuracy=accuracy,
                                 var_radius=var_radius, niter=niter, recenter=recenter, product=product)
    model.fwhm0 = model.fwhm(x0, y0)
    log.debug("build_psf: %d stars, degree %d, %d iterations, FWHM %.3f px", model.nstar, degree, niter,
              model.fwhm0)
    return model
