"""Pure numpy reference implementations of `ztfsds._ext._zogy`, and of IPAC's ``py_zogy.py`` as a whole.

``spectra``, ``variance_spectrum`` and ``scorr`` have the kernels' names, arguments and in-place outputs;
the tests check that the compiled kernels agree with them on random input.

`zogy_ipac` is the whole subtraction written the way IPAC's ``py_zogy.py`` (``SBC 28 Jul 2017``) and
PyZOGY write it: full complex128 transforms with `numpy.fft` of full-size PSF arrays (the stamp placed at
the image centre and shifted to the origin), every kernel (``k_N``, ``k_R``) transformed back and forth
on the full grid, the astrometric term from ``np.roll`` differences. Slow (about 8 s at full size) and
written for clarity; `ztfsds.subtract.zogy.zogy` must agree with it.
"""

from __future__ import annotations

import numpy as np

#: IPAC's regulariser of the denominator of eq. 13 [DN^2]
EPS = 1.0e-8


def spectra(p_new, p_ref, n_hat, r_hat, sn2, sr2, eps, inv_fd):
    """Numpy version of `ztfsds._ext._zogy.spectra` (same in-place outputs)."""
    an = np.abs(p_new) ** 2
    ar = np.abs(p_ref) ** 2
    den2 = sn2 * ar + sr2 * an + eps
    d_hat = (p_ref * n_hat - p_new * r_hat) / np.sqrt(den2) * inv_fd
    sn_hat = np.conj(p_new) * ar * n_hat / den2
    sr_hat = np.conj(p_ref) * an * r_hat / den2
    p_new[...] = d_hat
    n_hat[...] = sn_hat
    r_hat[...] = sr_hat


def variance_spectrum(v_new, k_new, v_ref, k_ref):
    """Numpy version of `ztfsds._ext._zogy.variance_spectrum` (in place in ``v_new``)."""
    v_new[...] = v_new * k_new + v_ref * k_ref


def scorr(s_new, s_ref, v_s, v_s_const, dx2, dy2, s_out, scorr_out, mask, use_mask):
    """Numpy version of `ztfsds._ext._zogy.scorr` (same in-place outputs)."""
    s_new = s_new.astype(np.float64)
    s_ref = s_ref.astype(np.float64)
    v = np.full(s_new.shape, float(v_s_const))
    if v_s.shape == s_new.shape and s_new.shape[0] > 1:
        v += v_s
    for s in (s_new, s_ref):
        v += dx2 * (s - np.roll(s, 1, axis=1)) ** 2 + dy2 * (s - np.roll(s, 1, axis=0)) ** 2
    s = s_new - s_ref
    with np.errstate(invalid="ignore", divide="ignore"):
        sc = np.where(v > 0, s / np.sqrt(np.where(v > 0, v, 1.0)), np.nan)
    if use_mask:
        bad = mask.astype(bool)
        s = np.where(bad, np.nan, s)
        sc = np.where(bad, np.nan, sc)
    s_out[...] = s
    scorr_out[...] = sc


def _psf_on_grid(stamp, shape):
    """The stamp at the grid's centre, shifted so that its central pixel is at the origin."""
    big = np.zeros(shape)
    hy, hx = stamp.shape[0] // 2, stamp.shape[1] // 2
    cy, cx = shape[0] // 2, shape[1] // 2
    big[cy - hy:cy + hy + 1, cx - hx:cx + hx + 1] = stamp
    # ifftshift moves index n // 2 to 0 for odd and even n (IPAC's fftshift does so for even n only)
    return np.fft.ifftshift(big)


def zogy_ipac(new, ref, psf_new, psf_ref, sigma_new, sigma_ref, var_new=None, var_ref=None,
              dx=0.25, dy=0.25, eps=EPS):
    """ZOGY as IPAC's ``py_zogy.py`` computes it (complex128 `numpy.fft` on full arrays).

    Parameters
    ----------
    new, ref : ndarray
        Aligned, background-subtracted, flux-matched images [DN].
    psf_new, psf_ref : ndarray
        Odd unit-sum PSF stamps.
    sigma_new, sigma_ref : float
        Scalar background sigmas [DN].
    var_new, var_ref : ndarray, optional
        Variance maps [DN^2]; default ``sigma**2`` everywhere.
    dx, dy : float, optional
        Astrometric uncertainties [px].
    eps : float, optional
        Regulariser of the denominator [DN^2].

    Returns
    -------
    D, P_D, S, S_corr : ndarray
        float64; D in the flux units of ``new``; ``P_D`` cropped to the shape of ``psf_new``.
    """
    shape = new.shape
    p_n = np.fft.fft2(_psf_on_grid(psf_new, shape))
    p_r = np.fft.fft2(_psf_on_grid(psf_ref, shape))
    n_hat = np.fft.fft2(new)
    r_hat = np.fft.fft2(ref)
    den = np.sqrt(sigma_new**2 * np.abs(p_r) ** 2 + sigma_ref**2 * np.abs(p_n) ** 2 + eps)
    d_hat = (p_r * n_hat - p_n * r_hat) / den
    f_d = 1.0 / np.sqrt(sigma_new**2 + sigma_ref**2)
    d = np.real(np.fft.ifft2(d_hat)) / f_d
    p_d_hat = p_r * p_n / f_d / den
    p_d = np.fft.fftshift(np.real(np.fft.ifft2(p_d_hat)))
    hy, hx = psf_new.shape[0] // 2, psf_new.shape[1] // 2
    cy, cx = shape[0] // 2, shape[1] // 2
    p_d = p_d[cy - hy:cy + hy + 1, cx - hx:cx + hx + 1]
    s = np.real(np.fft.ifft2(f_d * d_hat * np.conj(p_d_hat)))
    v_n = np.full(shape, sigma_new**2) if var_new is None else var_new
    v_r = np.full(shape, sigma_ref**2) if var_ref is None else var_ref
    kr_hat = np.conj(p_r) * np.abs(p_n) ** 2 / den**2
    kn_hat = np.conj(p_n) * np.abs(p_r) ** 2 / den**2
    kr = np.real(np.fft.ifft2(kr_hat))
    kn = np.real(np.fft.ifft2(kn_hat))
    v_s_n = np.real(np.fft.ifft2(np.fft.fft2(v_n) * np.fft.fft2(kn**2)))
    v_s_r = np.real(np.fft.ifft2(np.fft.fft2(v_r) * np.fft.fft2(kr**2)))
    s_n = np.real(np.fft.ifft2(kn_hat * n_hat))
    s_r = np.real(np.fft.ifft2(kr_hat * r_hat))
    v_ast = 0.0
    for sk in (s_n, s_r):
        v_ast = v_ast + dx**2 * (sk - np.roll(sk, 1, axis=1)) ** 2 + dy**2 * (sk - np.roll(sk, 1, axis=0)) ** 2
    s_corr = s / np.sqrt(v_s_n + v_s_r + v_ast)
    return d, p_d, s, s_corr
