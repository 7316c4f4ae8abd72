# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Streak-search kernels: normalise-clip-bin in one pass, and the Hough accumulator.

Private: call them through `ztfsds.subtract.streaks`, which checks dtypes, contiguity and shapes once.
The pure numpy equivalents are in `ztfsds._ext.reference_streaks` (same names and outputs); the tests
check that both agree.
"""

from libc.math cimport floor, sqrt


def bin_clipped(const float[:, ::1] s_img, const unsigned char[:, ::1] good, int b, float clip,
                float[:, ::1] tot, int[:, ::1] ngood):
    """Sum the good pixels of ``clip(s_img, -clip, clip)`` in ``b x b`` blocks (in place into ``tot``
    and ``ngood``, which must be zero and of shape ``(ceil(ny / b), ceil(nx / b))``)."""
    cdef Py_ssize_t ny = s_img.shape[0], nx = s_img.shape[1], i, j, bi
    cdef float v
    with nogil:
        for i in range(ny):
            bi = i // b
            for j in range(nx):
                if good[i, j]:
                    v = s_img[i, j]
                    if v > clip:
                        v = clip
                    elif v < -clip:
                        v = -clip
                    tot[bi, j // b] += v
                    ngood[bi, j // b] += 1


def hough(const double[::1] px, const double[::1] py, const double[::1] cos_t, const double[::1] sin_t,
          double rmax, int[:, ::1] acc):
    """One vote per point and angle into ``acc[rho bin, theta]`` (in place), rho bin =
    ``round(px cos + py sin + rmax) + 1``."""
    cdef Py_ssize_t n = px.shape[0], nt = cos_t.shape[0], nr = acc.shape[0], k, t, r
    cdef double x, y
    with nogil:
        for k in range(n):
            x = px[k]
            y = py[k]
            for t in range(nt):
                r = <Py_ssize_t>floor(x * cos_t[t] + y * sin_t[t] + rmax + 0.5) + 1
                if 0 <= r < nr:
                    acc[r, t] += 1
