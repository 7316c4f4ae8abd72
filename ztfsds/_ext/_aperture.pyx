# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Fixed circular aperture photometry with the exact circle/pixel overlap area.

Private: call it through `ztfsds.photom.aperture`, which checks dtypes, contiguity and shapes once. The
pure numpy equivalent is `ztfsds._ext.reference_aperture`; the tests check that both agree.

Geometry. Pixel ``(i, j)`` covers ``[i - 1/2, i + 1/2] x [j - 1/2, j + 1/2]``. In coordinates
``u = x - xc, v = y - yc`` about the aperture centre, with ``h(u) = sqrt(r^2 - u^2)``, the length of
``[v0, v1]`` inside the circle at abscissa ``u`` is ``c(v1, u) - c(v0, u)`` where
``c(v, u) = clip(v, -h(u), h(u))``. The overlap area of the pixel is therefore ``Q(v1) - Q(v0)`` with
``Q(v) = integral over [a, b] of c(v, u) du`` and ``[a, b]`` the pixel's ``u`` range clipped to
``[-r, r]``. With ``H`` the primitive of ``h`` (``H(u) = (u h(u) + r^2 asin(u / r)) / 2``, odd),
``t = |v|`` and ``w = sqrt(r^2 - t^2)`` (0 when ``t >= r``):

    Q(v) = sign(v) [H(b) - H(a) - (H(hi) - H(lo)) + t (hi - lo)],  lo = max(a, -w), hi = min(b, w)

(the bracketed correction only when ``hi > lo``). ``H`` is needed only at the column edges and at
``+-w`` of the row edges, so each aperture of each source costs one ``asin`` per column and per row
edge of its bounding box (tabulated once) and every pixel is arithmetic. Pixels whose farthest corner
is inside the circle have area 1; pixels whose nearest point is outside have area 0.
"""

from libc.math cimport sqrt, asin, floor, fabs, isfinite, NAN
from libc.stdint cimport int16_t, int32_t, uint16_t
from libc.stdlib cimport malloc, free

# flag bits of one aperture (public meaning: ztfsds.photom.aperture.ApertureFlags)
cpdef enum:
    F_MASKED = 1
    F_TRUNCATED = 2
    F_SATURATED = 4
    F_CORRECTED = 8
    F_EMPTY = 16

# noise modes
cpdef enum:
    NOISE_NONE = 0
    NOISE_RMS_SCALAR = 1
    NOISE_RMS_MAP = 2
    NOISE_VAR_MAP = 3


cdef inline double _primitive(double u, double r2, double r) noexcept nogil:
    """H(u) = integral of sqrt(r^2 - s^2) ds from 0 to u, for |u| <= r."""
    cdef double q = u / r
    if q >= 1.0:
        q = 1.0
    elif q <= -1.0:
        q = -1.0
    cdef double h2 = r2 - u * u
    return 0.5 * (u * sqrt(h2 if h2 > 0.0 else 0.0) + r2 * asin(q))


cdef inline void _tables(double xc, double yc, double r, Py_ssize_t i0, Py_ssize_t ncol, Py_ssize_t j0,
                         Py_ssize_t nrow, double* ue, double* hu, double* ve, double* w, double* hw) noexcept nogil:
    """Column edges u (clipped to [-r, r]) and H there; row edges v, w(v) and H(w) (ncol + 1, nrow + 1)."""
    cdef Py_ssize_t k
    cdef double u, v, r2 = r * r, t, quarter = 0.7853981633974483 * r2
    for k in range(ncol + 1):
        u = (i0 + k) - 0.5 - xc
        # H(+-r) = +-pi r^2 / 4: the edges of the larger apertures' boxes cost no asin
        if u >= r:
            ue[k] = r
            hu[k] = quarter
        elif u <= -r:
            ue[k] = -r
            hu[k] = -quarter
        else:
            ue[k] = u
            hu[k] = _primitive(u, r2, r)
    for k in range(nrow + 1):
        v = (j0 + k) - 0.5 - yc
        ve[k] = v
        t = fabs(v)
        if t < r:
            w[k] = sqrt(r2 - t * t)
            hw[k] = _primitive(w[k], r2, r)
        else:
            w[k] = 0.0
            hw[k] = 0.0


cdef inline double _qv(double v, double r, double a, double b, double ha, double hb, double w,
                       double hw) noexcept nogil:
    """Q(v) for the clipped column range [a, b] (H(a) = ha, H(b) = hb) and the row edge v (w, H(w) = hw)."""
    cdef double t = fabs(v), lo, hi, hlo, hhi, q
    if v == 0.0 or b <= a:
        return 0.0
    q = hb - ha
    if t < r:
        if a > -w:
            lo = a
            hlo = ha
        else:
            lo = -w
            hlo = -hw
        if b < w:
            hi = b
            hhi = hb
        else:
            hi = w
            hhi = hw
        if hi > lo:
            q = q - (hhi - hlo) + t * (hi - lo)
    return q if v > 0.0 else -q


cdef inline double _pixel_area(Py_ssize_t ci, Py_ssize_t rj, double r, const double* ue, const double* hu,
                               const double* ve, const double* w, const double* hw) noexcept nogil:
    """Exact overlap of the circle with the pixel of table column ci and table row rj."""
    cdef double a = ue[ci], b = ue[ci + 1], ha = hu[ci], hb = hu[ci + 1]
    return (_qv(ve[rj + 1], r, a, b, ha, hb, w[rj + 1], hw[rj + 1])
            - _qv(ve[rj], r, a, b, ha, hb, w[rj], hw[rj]))


def overlap_map(double xc, double yc, double r, Py_ssize_t nx, Py_ssize_t ny, double[:, ::1] out):
    """Exact overlap area [px] of the circle (xc, yc, r) with every pixel of an (ny, nx) grid, into out."""
    cdef Py_ssize_t i, j, n = (nx if nx > ny else ny) + 1
    cdef double* ue = <double*>malloc(5 * n * sizeof(double))
    if ue == NULL:
        raise MemoryError()
    cdef double* hu = ue + n
    cdef double* ve = ue + 2 * n
    cdef double* w = ue + 3 * n
    cdef double* hw = ue + 4 * n
    with nogil:
        if r > 0.0:
            _tables(xc, yc, r, 0, nx, 0, ny, ue, hu, ve, w, hw)
        for j in range(ny):
            for i in range(nx):
                out[j, i] = _pixel_area(i, j, r, ue, hu, ve, w, hw) if r > 0.0 else 0.0
    free(ue)


def aperture_sums(const float[:, ::1] sci, const int16_t[:, ::1] msk, bint use_msk, int bad_bits, int sat_bits,
                  const float[:, ::1] bkg, bint bkg_map, double bkg_scalar,
                  const float[:, ::1] noise, int noise_mode, double rms_scalar, double inv_gain,
                  double saturate,
                  const double[::1] x, const double[::1] y, const double[::1] radii, bint ring_fill,
                  double[:, ::1] flux, double[:, ::1] var, double[:, ::1] area, double[:, ::1] masked_area,
                  int32_t[:, ::1] nmasked, uint16_t[:, ::1] flags):
    """Aperture sums of every source (x, y) [px] in every aperture (radii [px], ascending).

    Per source and aperture: ``flux = sum a (sci - bkg)`` and ``var = sum a^2 sigma^2`` over the usable
    pixels (with an rms noise, plus ``max(sum a^2 (sci - bkg), 0) * inv_gain``: the sources' shot noise,
    clipped at zero only after the sum, so that it is unbiased), ``area = sum a`` over them, ``masked_area = sum a`` and ``nmasked`` (count of a > 0) over the
    unusable ones (``msk & bad_bits``, non-finite sci or noise, ``sci >= saturate``), and the flags. With
    ``ring_fill`` the masked area of each 1 px ring (by pixel-centre distance) adds the mean of the usable
    pixels of that ring in the bounding box of the largest aperture (flag F_CORRECTED when any was
    filled; the variance then scales by the filled-to-usable area ratio). A source with no usable pixel
    in an aperture gets NaN flux and variance and F_EMPTY. ``saturate <= 0`` disables the threshold.
    """
    cdef Py_ssize_t ny = sci.shape[0], nx = sci.shape[1]
    cdef Py_ssize_t n = x.shape[0], na = radii.shape[0]
    cdef double rmax = radii[na - 1] if na > 0 else 0.0
    cdef Py_ssize_t nedge = <Py_ssize_t>(2.0 * rmax) + 4
    cdef Py_ssize_t nbin = <Py_ssize_t>(rmax * 1.5) + 3
    # per aperture tables (na x nedge each), ring sums (nbin), per aperture per ring masked area
    cdef double* buf = <double*>malloc((5 * na * nedge + 2 * nbin + na * nbin + 5 * na) * sizeof(double))
    if buf == NULL:
        raise MemoryError()
    cdef double* ue = buf
    cdef double* hu = ue + na * nedge
    cdef double* ve = hu + na * nedge
    cdef double* w = ve + na * nedge
    cdef double* hw = w + na * nedge
    cdef double* ring_sum = hw + na * nedge
    cdef double* ring_n = ring_sum + nbin
    cdef double* ring_masked = ring_n + nbin
    cdef double* acc = ring_masked + na * nbin      # flux, var, area, masked area, shot of the current source
    cdef Py_ssize_t s, k, i, j, i0, i1, j0, j1, ncol, nrow, ci, rj, b
    cdef double xc, yc, r, r2, a, dx0, dx1, dy0, dy1, dxn, dyn, near2, far2, val, sig2, d2, fill
    cdef double filled_area
    cdef int m
    cdef bint bad, sat, any_sat
    cdef uint16_t f

    with nogil:
        for s in range(n):
            xc = x[s]
            yc = y[s]
            for k in range(na):
                acc[4 * k] = 0.0
                acc[4 * k + 1] = 0.0
                acc[4 * k + 2] = 0.0
                acc[4 * k + 3] = 0.0
                acc[4 * na + k] = 0.0
                nmasked[s, k] = 0
                flags[s, k] = 0
            if not (isfinite(xc) and isfinite(yc)) or na == 0:
                for k in range(na):
                    flux[s, k] = NAN
                    var[s, k] = NAN
                    area[s, k] = 0.0
                    masked_area[s, k] = 0.0
                    flags[s, k] = F_EMPTY | F_TRUNCATED
                continue
            # bounding box of the largest aperture: every pixel it touches
            i0 = <Py_ssize_t>floor(xc - rmax + 0.5)
            i1 = <Py_ssize_t>floor(xc + rmax + 0.5)
            j0 = <Py_ssize_t>floor(yc - rmax + 0.5)
            j1 = <Py_ssize_t>floor(yc + rmax + 0.5)
            ncol = i1 - i0 + 1
            nrow = j1 - j0 + 1
            for k in range(na):
                r = radii[k]
                if r > 0.0:
                    _tables(xc, yc, r, i0, ncol, j0, nrow, ue + k * nedge, hu + k * nedge, ve + k * nedge,
                            w + k * nedge, hw + k * nedge)
                # the circle leaves the image iff its bounding box does
                if xc - r < -0.5 or xc + r > nx - 0.5 or yc - r < -0.5 or yc + r > ny - 0.5:
                    flags[s, k] = F_TRUNCATED
            if ring_fill:
                for b in range(nbin):
                    ring_sum[b] = 0.0
                    ring_n[b] = 0.0
                for b in range(na * nbin):
                    ring_masked[b] = 0.0
            any_sat = False
            for j in range(j0 if j0 > 0 else 0, (j1 if j1 < ny - 1 else ny - 1) + 1):
                rj = j - j0
                dy0 = j - 0.5 - yc
                dy1 = dy0 + 1.0
                dyn = 0.0 if (dy0 <= 0.0 and dy1 >= 0.0) else (dy0 if dy0 > 0.0 else -dy1)
                for i in range(i0 if i0 > 0 else 0, (i1 if i1 < nx - 1 else nx - 1) + 1):
                    ci = i - i0
                    dx0 = i - 0.5 - xc
                    dx1 = dx0 + 1.0
                    dxn = 0.0 if (dx0 <= 0.0 and dx1 >= 0.0) else (dx0 if dx0 > 0.0 else -dx1)
                    near2 = dxn * dxn + dyn * dyn
                    if near2 >= rmax * rmax and not ring_fill:
                        continue
                    far2 = (dx0 * dx0 if dx0 * dx0 > dx1 * dx1 else dx1 * dx1) + \
                           (dy0 * dy0 if dy0 * dy0 > dy1 * dy1 else dy1 * dy1)
                    # pixel state: usable value and variance, or masked
                    m = msk[j, i] if use_msk else 0
                    val = sci[j, i]
                    sat = (m & sat_bits) != 0 or (saturate > 0.0 and val >= saturate)
                    bad = (m & bad_bits) != 0 or sat or not isfinite(val)
                    sig2 = 0.0
                    if not bad:
                        val = val - (bkg[j, i] if bkg_map else bkg_scalar)
                        if noise_mode == NOISE_RMS_SCALAR:
                            sig2 = rms_scalar * rms_scalar
                        elif noise_mode == NOISE_RMS_MAP:
                            sig2 = noise[j, i]
                            sig2 = sig2 * sig2
                        elif noise_mode == NOISE_VAR_MAP:
                            sig2 = noise[j, i]
                        bad = not (isfinite(val) and isfinite(sig2))
                    if ring_fill:
                        d2 = (i - xc) * (i - xc) + (j - yc) * (j - yc)
                        b = <Py_ssize_t>sqrt(d2)
                        if b >= nbin:
                            b = nbin - 1
                        if not bad:
                            ring_sum[b] += val
                            ring_n[b] += 1.0
                    # largest aperture first: once a pixel misses one, it misses the smaller ones
                    k = na - 1
                    while k >= 0:
                        r = radii[k]
                        r2 = r * r
                        if near2 >= r2:
                            break
                        if far2 <= r2:
                            a = 1.0
                        else:
                            a = _pixel_area(ci, rj, r, ue + k * nedge, hu + k * nedge, ve + k * nedge,
                                            w + k * nedge, hw + k * nedge)
                        if a > 0.0:
                            if bad:
                                acc[4 * k + 3] += a
                                nmasked[s, k] += 1
                                if sat:
                                    flags[s, k] |= F_SATURATED
                                if ring_fill:
                                    ring_masked[k * nbin + b] += a
                            else:
                                acc[4 * k] += a * val
                                acc[4 * k + 1] += a * a * sig2
                                acc[4 * k + 2] += a
                                acc[4 * na + k] += a * a * val
                        k -= 1
            for k in range(na):
                f = flags[s, k]
                if nmasked[s, k] > 0:
                    f |= F_MASKED
                filled_area = 0.0
                if ring_fill and nmasked[s, k] > 0:
                    fill = 0.0
                    for b in range(nbin):
                        if ring_masked[k * nbin + b] > 0.0 and ring_n[b] > 0.0:
                            fill += ring_masked[k * nbin + b] * ring_sum[b] / ring_n[b]
                            filled_area += ring_masked[k * nbin + b]
                    if filled_area > 0.0:
                        f |= F_CORRECTED
                        acc[4 * k] += fill
                if noise_mode == NOISE_RMS_SCALAR or noise_mode == NOISE_RMS_MAP:
                    if acc[4 * na + k] > 0.0:
                        acc[4 * k + 1] += acc[4 * na + k] * inv_gain
                if acc[4 * k + 2] > 0.0:
                    flux[s, k] = acc[4 * k]
                    var[s, k] = acc[4 * k + 1] * (1.0 + filled_area / acc[4 * k + 2])
                else:
                    flux[s, k] = NAN
                    var[s, k] = NAN
                    f |= F_EMPTY
                area[s, k] = acc[4 * k + 2]
                masked_area[s, k] = acc[4 * k + 3]
                flags[s, k] = f
    free(buf)
