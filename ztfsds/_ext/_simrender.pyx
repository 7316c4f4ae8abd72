# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Simulator rendering kernel: pixel-integrated elliptical Moffat (beta = 3) point sources.

Private: called by `ztfsds.sim.optics.render_sources`, which validates the inputs. The numpy
equivalent (`ztfsds.sim.optics._moffat_stamps` + `_accumulate`) is the reference the tests compare
with. Each pixel of a star's ``size x size`` stamp is integrated with a k x k Gauss-Legendre rule
(``k = 2`` outside the central ``(2 core_half + 1)**2`` block, ``k_core`` inside) and added into the
image; pixels off the image are skipped. The loop runs without the GIL; stars are added one after the
other (in input order) so the result is deterministic.
"""

from libc.math cimport floor


def add_moffat_points(float[:, ::1] img, const double[::1] x, const double[::1] y,
                      const double[::1] flux, const double[::1] A, const double[::1] B,
                      const double[::1] C, const double[::1] norm, const long[::1] size,
                      int core_half, const double[::1] t_out, const double[::1] w_out,
                      const double[::1] t_core, const double[::1] w_core):
    """Add unit-flux Moffat(beta=3) stamps times ``flux`` into ``img`` (in place).

    ``x, y`` are 0-based pixel positions; ``A, B, C`` the quadratic-form coefficients
    (``1 + A X**2 + B X Y + C Y**2``) and ``norm`` the normalisation of each star; ``t_*, w_*`` the
    Gauss-Legendre nodes and weights on [-1/2, 1/2] (weights summing to 1).
    """
    cdef Py_ssize_t n = x.shape[0], ny = img.shape[0], nx = img.shape[1]
    cdef Py_ssize_t i, jx, jy, a, b, px, py, k, h, core, ko = t_out.shape[0], kc = t_core.shape[0]
    cdef long ix, iy
    cdef double dx, dy, X, Y, q, s, amp, ai, bi, ci, wy
    cdef const double* t
    cdef const double* w
    with nogil:
        for i in range(n):
            if flux[i] <= 0.0:
                continue
            ix = <long>floor(x[i] + 0.5)
            iy = <long>floor(y[i] + 0.5)
            dx = x[i] - ix
            dy = y[i] - iy
            h = size[i] // 2
            core = core_half if core_half < h else h
            ai = A[i]
            bi = B[i]
            ci = C[i]
            amp = flux[i] * norm[i]
            for jy in range(-h, h + 1):
                py = iy + jy
                if py < 0 or py >= ny:
                    continue
                for jx in range(-h, h + 1):
                    px = ix + jx
                    if px < 0 or px >= nx:
                        continue
                    if -core <= jx <= core and -core <= jy <= core:
                        k = kc
                        t = &t_core[0]
                        w = &w_core[0]
                    else:
                        k = ko
                        t = &t_out[0]
                        w = &w_out[0]
                    s = 0.0
                    for a in range(k):
                        Y = jy + t[a] - dy
                        wy = w[a]
                        for b in range(k):
                            X = jx + t[b] - dx
                            q = 1.0 + ai * X * X + bi * X * Y + ci * Y * Y
                            s += wy * w[b] / (q * q * q)
                    img[py, px] += <float>(amp * s)
