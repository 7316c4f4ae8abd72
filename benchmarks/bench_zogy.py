"""ZOGY subtraction of one quadrant: ztfsds against a PyZOGY-style implementation of the same equations.

Data (``setup``): a new and a reference image of the quadrant's shape (3080 x 3072 float32; ``small``:
256 x 256), 6000 stars (log-uniform 300 DN - 1 MDN) convolved with a Moffat PSF (FWHM 2.6 px) in the
new image and a Gaussian (FWHM 2.0 px) in the reference, 25 x 25 PSF stamps, sky sigmas 8 and 3 DN,
Gaussian noise with Poisson-like variance, and the variance maps.

Every implementation computes D, P_D, S and S_corr with IPAC's ``py_zogy.py`` equations (the
astrometric term with dx = dy = 0.25 px included), single-threaded:

* ours: `ztfsds.subtract.zogy.zogy` (``workers=1``);
* ``PyZOGY-style (numpy complex128)``: the equations as IPAC's ``py_zogy.py`` and PyZOGY write them:
  `numpy.fft.fft2` on full complex128 arrays, full-size PSF arrays, every kernel transformed back and
  forth on the full grid (written out below, the same as `ztfsds._ext.reference_zogy.zogy_ipac`);
* ``lean scipy.fft float32``: the same full-grid algorithm with `scipy.fft.rfft2`/`irfft2` on float32
  (complex64 half-spectra) and numpy element-wise arithmetic: what a careful port of IPAC's code gives
  without our pruned PSF transforms, small-grid kernels and fused compiled kernels.

``subtract.zogy`` passes the variance maps (as IPAC passes sigma images); ``subtract.zogy_scalar``
passes none (sigma^2 everywhere: ours then skips the four transforms of the variance convolution; the
peers still convolve constant maps, as IPAC's code does).
"""

import numpy as np
import scipy.fft as sfft

from ztfsds.bench import Case
from ztfsds.subtract.zogy import zogy

SN, SR = 8.0, 3.0
DX = DY = 0.25
EPS = 1e-8


def _stamps(size=25):
    yy, xx = np.mgrid[-(size // 2):size // 2 + 1, -(size // 2):size // 2 + 1]
    beta, fwhm = 3.0, 2.6
    a = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    p_n = (1 + (xx**2 + yy**2) / a**2) ** (-beta)
    sig = 2.0 / 2.3548
    p_r = np.exp(-(xx**2 + yy**2) / (2 * sig**2))
    return p_n / p_n.sum(), p_r / p_r.sum()


def setup(size):
    shape = (3080, 3072) if size == "full" else (256, 256)
    nstar = 6000 if size == "full" else 40
    rng = np.random.default_rng(11)
    p_n, p_r = _stamps()
    delta = np.zeros(shape, np.float32)
    ys = rng.integers(0, shape[0], nstar)
    xs = rng.integers(0, shape[1], nstar)
    np.add.at(delta, (ys, xs), np.exp(rng.uniform(np.log(300.0), np.log(1e6), nstar)).astype(np.float32))
    out = {"p_n": p_n, "p_r": p_r}
    d_hat = sfft.rfft2(delta)
    for name, p, s, gain in (("new", p_n, SN, 5.0), ("ref", p_r, SR, 40.0)):
        big = np.zeros(shape, np.float32)
        h = p.shape[0] // 2
        big[np.ix_(np.arange(-h, h + 1) % shape[0], np.arange(-h, h + 1) % shape[1])] = p
        model = sfft.irfft2(d_hat * sfft.rfft2(big), s=shape)
        var = (s * s + np.maximum(model, 0) / gain).astype(np.float32)
        out[name] = (model + rng.standard_normal(shape, dtype=np.float32) * np.sqrt(var)).astype(np.float32)
        out["var_" + name] = var
    return out


def ours(data, maps=True):
    kw = {"var_new": data["var_new"], "var_ref": data["var_ref"]} if maps else {}
    return zogy(data["new"], data["ref"], data["p_n"], data["p_r"], sigma_new=SN, sigma_ref=SR, dx=DX, dy=DY,
                workers=1, **kw)


def _centred(stamp, shape):
    big = np.zeros(shape)
    h = stamp.shape[0] // 2
    cy, cx = shape[0] // 2, shape[1] // 2
    big[cy - h:cy + h + 1, cx - h:cx + h + 1] = stamp
    return np.fft.fftshift(big)          # as IPAC (even-sized images)


def pyzogy_style(data, maps=True):
    """IPAC's py_zogy.py equations as IPAC/PyZOGY write them: numpy.fft, complex128, full arrays."""
    new, ref = data["new"], data["ref"]
    shape = new.shape
    v_n = data["var_new"] if maps else np.full(shape, SN**2)
    v_r = data["var_ref"] if maps else np.full(shape, SR**2)
    p_n = np.fft.fft2(_centred(data["p_n"], shape))
    p_r = np.fft.fft2(_centred(data["p_r"], shape))
    n_hat = np.fft.fft2(new)
    r_hat = np.fft.fft2(ref)
    den = np.sqrt(SN**2 * np.abs(p_r**2) + SR**2 * np.abs(p_n**2) + EPS)
    d_hat = (p_r * n_hat - p_n * r_hat) / den
    f_d = 1.0 / np.sqrt(SN**2 + SR**2)
    d = np.real(np.fft.ifft2(d_hat)) / f_d
    p_d_hat = p_r * p_n / f_d / den
    p_d = np.fft.ifftshift(np.real(np.fft.ifft2(p_d_hat)))
    cy, cx = shape[0] // 2, shape[1] // 2
    p_d = p_d[cy - 12:cy + 13, cx - 12:cx + 13]
    s = np.real(np.fft.ifft2(f_d * d_hat * np.conj(p_d_hat)))
    kr_hat = np.conj(p_r) * np.abs(p_n**2) / den**2
    kn_hat = np.conj(p_n) * np.abs(p_r**2) / den**2
    kr = np.real(np.fft.ifft2(kr_hat))
    kn = np.real(np.fft.ifft2(kn_hat))
    v_s_n = np.real(np.fft.ifft2(np.fft.fft2(v_n) * np.fft.fft2(kn**2)))
    v_s_r = np.real(np.fft.ifft2(np.fft.fft2(v_r) * np.fft.fft2(kr**2)))
    s_n = np.real(np.fft.ifft2(kn_hat * n_hat))
    s_r = np.real(np.fft.ifft2(kr_hat * r_hat))
    v_ast_n = DX**2 * (s_n - np.roll(s_n, 1, axis=1)) ** 2 + DY**2 * (s_n - np.roll(s_n, 1, axis=0)) ** 2
    v_ast_r = DX**2 * (s_r - np.roll(s_r, 1, axis=1)) ** 2 + DY**2 * (s_r - np.roll(s_r, 1, axis=0)) ** 2
    s_corr = s / np.sqrt(v_s_n + v_s_r + v_ast_n + v_ast_r)
    return d, p_d, s, s_corr


def lean_scipy(data, maps=True):
    """The same full-grid algorithm with scipy.fft on float32 (complex64 half-spectra), numpy arithmetic."""
    new, ref = data["new"], data["ref"]
    shape = new.shape

    def fwd(a):
        return sfft.rfft2(a, workers=1)

    def inv(a):
        return sfft.irfft2(a, s=shape, workers=1, overwrite_x=True)

    v_n = data["var_new"] if maps else np.full(shape, SN**2, np.float32)
    v_r = data["var_ref"] if maps else np.full(shape, SR**2, np.float32)
    p_n = fwd(_centred(data["p_n"], shape).astype(np.float32))
    p_r = fwd(_centred(data["p_r"], shape).astype(np.float32))
    n_hat = fwd(new)
    r_hat = fwd(ref)
    an = p_n.real**2 + p_n.imag**2
    ar = p_r.real**2 + p_r.imag**2
    den2 = np.float32(SN**2) * ar + np.float32(SR**2) * an + np.float32(EPS)
    f_d = np.float32(1.0 / np.sqrt(SN**2 + SR**2))
    d = inv((p_r * n_hat - p_n * r_hat) / np.sqrt(den2) / f_d)
    kn_hat = np.conj(p_n) * (ar / den2)
    kr_hat = np.conj(p_r) * (an / den2)
    p_d = sfft.ifftshift(inv(p_r * p_n / (f_d * np.sqrt(den2))))
    cy, cx = shape[0] // 2, shape[1] // 2
    p_d = p_d[cy - 12:cy + 13, cx - 12:cx + 13]
    v_s = inv(fwd(v_n) * fwd(inv(kn_hat.copy()) ** 2) + fwd(v_r) * fwd(inv(kr_hat.copy()) ** 2))
    s_n = inv(kn_hat * n_hat)
    s_r = inv(kr_hat * r_hat)
    s = s_n - s_r
    v = v_s
    for sk in (s_n, s_r):
        v += np.float32(DX**2) * (sk - np.roll(sk, 1, axis=1)) ** 2
        v += np.float32(DY**2) * (sk - np.roll(sk, 1, axis=0)) ** 2
    return d, p_d, s, s / np.sqrt(v)


CASES = [
    Case(
        name="subtract.zogy",
        description="ZOGY D, P_D, S, S_corr (astrometric term, per-pixel variance maps) of one quadrant, "
                    "IPAC's py_zogy.py equations, one thread",
        setup=setup,
        ours=ours,
        peers={"PyZOGY-style (numpy complex128)": pyzogy_style, "lean scipy.fft float32": lean_scipy},
    ),
    Case(
        name="subtract.zogy_scalar",
        description="the same without variance maps (sigma^2 everywhere)",
        setup=setup,
        ours=lambda data: ours(data, maps=False),
        peers={"PyZOGY-style (numpy complex128)": lambda data: pyzogy_style(data, maps=False),
               "lean scipy.fft float32": lambda data: lean_scipy(data, maps=False)},
    ),
]
