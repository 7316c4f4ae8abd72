# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Lanczos3 resampling of an image (and its variance and mask) through a spline pixel mapping.

Private: call it through `ztfsds.refimg.resample`, which checks dtypes, contiguity and shapes once and
builds the inputs described below. The pure numpy equivalent is `ztfsds._ext.reference_resample`; the
tests check that both agree.

Mapping. The output-to-input pixel mapping is a bicubic tensor-product B-spline per input axis, with
coefficients ``cx, cy`` of shape ``(ncy, ncx)``. Because the output pixels form a grid, the four
non-zero B-splines of each output column (``ix[x]`` the first coefficient column, ``bx[x, :]`` their
values and ``dbx[x, :]`` their derivatives) and of each output row (``iy, by, dby``) are given once;
every output row first contracts the coefficients over its four rows, then each pixel costs 24
multiply-adds for the input position ``(X, Y)`` and the four partial derivatives (the Jacobian).

Interpolation. Input position ``X = x0 + t`` (``x0 = floor(X)``, ``0 <= t < 1``) takes the six columns
``x0 - 2 .. x0 + 3`` with the weights of the row ``t`` of the table ``wtab`` (``ntab + 1`` rows of six
normalised Lanczos3 weights, linearly interpolated between rows with ``dwtab`` the row differences), and
the same in ``y``. ``busy[y0, x0]`` (see `busy_map`) says whether the 6 x 6 window at ``(x0, y0)`` is inside the image,
finite and unmasked: those pixels (most of them) take the plain separable sums (``BUSY_MASK`` alone:
plus the OR of the mask bits). The others check every tap: off-image taps and taps with ``mask & bad_bits`` or a non-finite value (or variance) are left out
and the weights renormalised over the good ones (NaN and the ``nodata_bit`` when the good ones carry less
than ``min_weight``); the output mask is the OR of the bits of the taps with ``|w| > mask_weight`` (plus
``nodata_bit`` for non-finite ones).
"""

from libc.math cimport fabs, isfinite, NAN
from libc.stdint cimport int16_t, int32_t, uint8_t
from libc.stdlib cimport malloc, free

cdef enum:
    NTAP = 6
    HALF = 2   # taps x0 - HALF .. x0 + NTAP - 1 - HALF

# busy_map flags
cpdef enum:
    BUSY_MASK = 1
    BUSY_TAPS = 2


def busy_map(const float[:, ::1] image, const float[:, ::1] variance, const int16_t[:, ::1] mask,
             bint has_var, bint has_mask, int bad_bits, uint8_t[:, ::1] scratch, uint8_t[:, ::1] busy):
    """Mark the pixels whose 6 x 6 Lanczos window (rows and columns -2 .. +3) needs more than plain sums.

    ``busy[y, x]`` has ``BUSY_TAPS`` when the window at ``(x, y)`` leaves the image or holds a pixel with
    ``mask & bad_bits``, a non-finite image value or (``has_var``) a non-finite variance (the weights must
    be renormalised), and ``BUSY_MASK`` when it holds any non-zero mask (the output mask must be ORed).
    ``scratch`` (same shape) holds the horizontal pass.
    """
    cdef Py_ssize_t ny = image.shape[0], nx = image.shape[1]
    cdef Py_ssize_t x, y, k, i
    cdef uint8_t a
    cdef uint8_t* att = <uint8_t*>malloc(nx * sizeof(uint8_t))
    if att == NULL:
        raise MemoryError()
    with nogil:
        for y in range(ny):
            for x in range(nx):
                a = 0 if isfinite(image[y, x]) else BUSY_TAPS
                if has_var and not isfinite(variance[y, x]):
                    a = BUSY_TAPS
                if has_mask and mask[y, x] != 0:
                    a = a | BUSY_MASK
                    if mask[y, x] & bad_bits:
                        a = a | BUSY_TAPS
                att[x] = a
            for x in range(nx):
                a = 0
                for k in range(NTAP):
                    i = x - HALF + k
                    if i < 0 or i >= nx:
                        a = a | BUSY_TAPS
                    else:
                        a = a | att[i]
                scratch[y, x] = a
        for y in range(ny):
            for x in range(nx):
                a = 0
                for k in range(NTAP):
                    i = y - HALF + k
                    if i < 0 or i >= ny:
                        a = a | BUSY_TAPS
                    else:
                        a = a | scratch[i, x]
                busy[y, x] = a
    free(att)


cdef inline void _weights(double t, const double* wtab, const double* dwtab, int ntab,
                          double* w) noexcept nogil:
    """The six normalised weights for the fractional offset t (0 <= t <= 1)."""
    cdef double s = t * ntab
    cdef int q = <int>s
    cdef int k
    if q >= ntab:
        q = ntab - 1
    s = s - q
    for k in range(NTAP):
        w[k] = wtab[q * NTAP + k] + s * dwtab[q * NTAP + k]


def resample_rows(const float[:, ::1] image, const float[:, ::1] variance, const int16_t[:, ::1] mask,
                  const uint8_t[:, ::1] busy, bint has_var, bint has_mask,
                  const double[:, ::1] cx, const double[:, ::1] cy,
                  const int32_t[::1] iy, const double[:, ::1] by, const double[:, ::1] dby,
                  const int32_t[::1] ix, const double[:, ::1] bx, const double[:, ::1] dbx,
                  const double[:, ::1] wtab, const double[:, ::1] dwtab,
                  float[:, ::1] out_image, float[:, ::1] out_var, int16_t[:, ::1] out_mask,
                  uint8_t[:, ::1] footprint, Py_ssize_t row0, Py_ssize_t row1, bint conserve_flux,
                  int bad_bits, int nodata_bit, double mask_weight, double min_weight):
    """Resample output rows ``row0 .. row1 - 1`` (see the module docstring for the inputs).

    Output pixels whose input position lies outside ``[-0.5, n - 0.5]`` on either axis (or is not
    finite) get NaN, ``nodata_bit`` and ``footprint = 0``. With ``conserve_flux`` the value is multiplied
    by the Jacobian determinant ``|J|`` of the mapping and the variance by ``J^2``. ``out_var`` and
    ``out_mask`` are written only when ``has_var`` / ``has_mask``.
    """
    cdef Py_ssize_t nyi = image.shape[0], nxi = image.shape[1]
    cdef Py_ssize_t nxo = out_image.shape[1], ncx = cx.shape[1]
    cdef int ntab = wtab.shape[0] - 1
    cdef Py_ssize_t x, y, k, j, i, b, xx, yy, x0, y0
    cdef double X, Y, dXdx, dXdy, dYdx, dYdy, jac, s, sv, acc, accv, wsum, w, fx0, fy0
    cdef double wx[NTAP]
    cdef double wy[NTAP]
    cdef float fx[NTAP]
    cdef float fx2[NTAP]
    cdef float fs, fsv
    cdef double v, vv
    cdef int m, mo
    cdef uint8_t bz
    cdef double thr
    cdef const int16_t* pm
    cdef bint good
    cdef const float* img = &image[0, 0]
    cdef const float* var = &variance[0, 0]
    cdef const int16_t* msk = &mask[0, 0]
    cdef const float* p
    cdef const float* pv
    cdef const double* wt = &wtab[0, 0]
    cdef const double* dwt = &dwtab[0, 0]
    cdef double xmax = nxi - 0.5, ymax = nyi - 0.5
    # per-row contractions of the spline coefficients: X, dX/dy, Y, dY/dy at every coefficient column
    cdef double* rows = <double*>malloc(4 * ncx * sizeof(double))
    if rows == NULL:
        raise MemoryError()
    cdef double* rX = rows
    cdef double* rXy = rows + ncx
    cdef double* rY = rows + 2 * ncx
    cdef double* rYy = rows + 3 * ncx
    with nogil:
        for y in range(row0, row1):
            for k in range(ncx):
                rX[k] = 0.0
                rXy[k] = 0.0
                rY[k] = 0.0
                rYy[k] = 0.0
            for j in range(4):
                for k in range(ncx):
                    rX[k] += cx[iy[y] + j, k] * by[y, j]
                    rXy[k] += cx[iy[y] + j, k] * dby[y, j]
                    rY[k] += cy[iy[y] + j, k] * by[y, j]
                    rYy[k] += cy[iy[y] + j, k] * dby[y, j]
            for x in range(nxo):
                b = ix[x]
                X = 0.0
                Y = 0.0
                dXdx = 0.0
                dXdy = 0.0
                dYdx = 0.0
                dYdy = 0.0
                for k in range(4):
                    X += rX[b + k] * bx[x, k]
                    dXdx += rX[b + k] * dbx[x, k]
                    dXdy += rXy[b + k] * bx[x, k]
                    Y += rY[b + k] * bx[x, k]
                    dYdx += rY[b + k] * dbx[x, k]
                    dYdy += rYy[b + k] * bx[x, k]
                # the comparisons are False for NaN: off
                if not (X >= -0.5 and X <= xmax and Y >= -0.5 and Y <= ymax):
                    out_image[y, x] = NAN
                    if has_var:
                        out_var[y, x] = NAN
                    if has_mask:
                        out_mask[y, x] = nodata_bit
                    footprint[y, x] = 0
                    continue
                footprint[y, x] = 1
                jac = fabs(dXdx * dYdy - dXdy * dYdx) if conserve_flux else 1.0
                # X, Y >= -0.5 here: truncating X + 1 is floor(X) + 1 (libm's floor is a call without SSE4.1)
                x0 = <Py_ssize_t>(X + 1.0) - 1
                y0 = <Py_ssize_t>(Y + 1.0) - 1
                fx0 = <double>x0
                fy0 = <double>y0
                _weights(X - fx0, wt, dwt, ntab, wx)
                _weights(Y - fy0, wt, dwt, ntab, wy)
                bz = busy[y0, x0] if (x0 >= 0 and y0 >= 0 and x0 < nxi and y0 < nyi) else BUSY_TAPS
                if not (bz & BUSY_TAPS):
                    for k in range(NTAP):
                        fx[k] = <float>wx[k]
                    acc = 0.0
                    p = img + (y0 - HALF) * nxi + (x0 - HALF)
                    if has_var:
                        for k in range(NTAP):
                            fx2[k] = fx[k] * fx[k]
                        accv = 0.0
                        pv = var + (y0 - HALF) * nxi + (x0 - HALF)
                        for j in range(NTAP):
                            fs = ((fx[0] * p[0] + fx[1] * p[1]) + (fx[2] * p[2] + fx[3] * p[3])
                                  + (fx[4] * p[4] + fx[5] * p[5]))
                            fsv = ((fx2[0] * pv[0] + fx2[1] * pv[1]) + (fx2[2] * pv[2] + fx2[3] * pv[3])
                                   + (fx2[4] * pv[4] + fx2[5] * pv[5]))
                            acc += wy[j] * fs
                            accv += wy[j] * wy[j] * fsv
                            p += nxi
                            pv += nxi
                        out_var[y, x] = <float>(accv * jac * jac)
                    else:
                        for j in range(NTAP):
                            fs = ((fx[0] * p[0] + fx[1] * p[1]) + (fx[2] * p[2] + fx[3] * p[3])
                                  + (fx[4] * p[4] + fx[5] * p[5]))
                            acc += wy[j] * fs
                            p += nxi
                    out_image[y, x] = <float>(acc * jac)
                    if has_mask:
                        # OR the bits of the taps with |wx wy| > mask_weight
                        mo = 0
                        if bz & BUSY_MASK:
                            pm = msk + (y0 - HALF) * nxi + (x0 - HALF)
                            for j in range(NTAP):
                                if fabs(wy[j]) > mask_weight:
                                    thr = mask_weight / fabs(wy[j])
                                    for i in range(NTAP):
                                        if fabs(wx[i]) > thr:
                                            mo = mo | pm[i]
                                pm += nxi
                        out_mask[y, x] = <int16_t>mo
                    continue
                # window at the edge or holding masked / non-finite pixels: tap by tap
                acc = 0.0
                accv = 0.0
                wsum = 0.0
                mo = 0
                for j in range(NTAP):
                    yy = y0 - HALF + j
                    if yy < 0 or yy >= nyi:
                        continue
                    for i in range(NTAP):
                        xx = x0 - HALF + i
                        if xx < 0 or xx >= nxi:
                            continue
                        w = wx[i] * wy[j]
                        v = img[yy * nxi + xx]
                        good = isfinite(v)
                        vv = 0.0
                        m = 0 if good else nodata_bit
                        if has_var:
                            vv = var[yy * nxi + xx]
                            if not isfinite(vv):
                                good = False
                                m = nodata_bit
                        if has_mask:
                            m = m | msk[yy * nxi + xx]
                            if msk[yy * nxi + xx] & bad_bits:
                                good = False
                        if fabs(w) > mask_weight:
                            mo = mo | m
                        if good:
                            acc += w * v
                            wsum += w
                            if has_var:
                                accv += w * w * vv
                if wsum < min_weight:
                    out_image[y, x] = NAN
                    if has_var:
                        out_var[y, x] = NAN
                    mo = mo | nodata_bit
                else:
                    out_image[y, x] = <float>(acc / wsum * jac)
                    if has_var:
                        out_var[y, x] = <float>(accv / (wsum * wsum) * jac * jac)
                if has_mask:
                    out_mask[y, x] = <int16_t>mo
    free(rows)
