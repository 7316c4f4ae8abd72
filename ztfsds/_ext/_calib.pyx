# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Per-exposure calibration kernels: raw counts to linear DN, sciimg/varimg/mskimg, cosmic rays.

Private: call them through `ztfsds.calib.apply`, which checks dtypes, contiguity and shapes once.
The pure numpy equivalents are in `ztfsds._ext.reference` (`linear_pass`, `finish_pass`,
`crosstalk_ghost`, `cosmic_ray_mask`); the tests check that both agree.

Every entry point works on a row range ``[y0, y1)`` and runs its loop without the GIL, so the wrapper
can split a quadrant across threads. Each writes only its own rows and reads its neighbours' rows
from inputs no other call writes, so the result does not depend on the split.

* `linear_rows`: ``x = raw - level[y] - bias``; linear DN ``x / ((a x + b) x + 1)`` (float32
  arithmetic in that order); saturation code 2 at the ceiling (``raw >= adc_max`` or
  ``x >= ceiling``), 1 near it (``x >= sat_x``), else 0.
* `ghost_rows`: adds ``coef * min(source, clip)`` of one source amplifier, read at the mirrored
  readout position (``clip`` where the source is at its ceiling), to a ghost image.
* `finish_rows`: variance, flat-fielding, the mask bits of saturation (with bleed-trail ends),
  bad pixels, crosstalk ghosts and non-finite values.
* `cosmic_ray_rows` + `cosmic_ray_grow_rows`: the cosmic-ray (pixel spike) detector, see below.

Cosmic rays
-----------
A pixel ``I`` is a cosmic-ray hit when, with ``m`` the median of its 8 neighbours and ``b`` the median
of the 16 pixels at Chebyshev distance 2 (a local background; beyond the edges the image is mirrored
about its first and last rows and columns, numpy's 'reflect'):

1. ``I - m > sigma * sqrt(var)``: it stands above its neighbours by more than the noise,
2. at most one neighbour is brighter (a pixel of a track has at most one brighter track neighbour
   next to it; a pixel on the slope of a bright star, whose neighbours' median can fall below it by
   many sigma too, has three), and
3. ``I - m > contrast * (m - b + margin * sqrt(var))``: it is sharper than any PSF. A star's core
   pixel exceeds its neighbours by a fixed multiple of how much they exceed the background (about 4
   for a Moffat of FWHM 1.5 px, 2.4 for 2 px), where a cosmic ray sits on neighbours at the
   background level. ``m - b`` is taken at its upper noise bound (its own noise is about half the
   pixel noise: ``margin = 1`` is two standard deviations), so that faint stars are not flagged
   when noise flattens their neighbours.

A pixel carrying a ``skip_self`` bit (bad pixels: they are flagged already), or whose 3 x 3 block
carries a ``skip_near`` bit (SATURATED, NAN), or with a non-finite value in its 5 x 5 window, is never
a hit. The hits then grow by one pixel: an 8-neighbour ``q`` of a hit, itself free of ``skip_self``
bits, is flagged too when it passes tests 1 and 3 with ``grow_sigma`` for ``sigma`` (the fainter
pixels of a track).

Most pixels are rejected by a cheap necessary condition, ``I - min(3 x 3) > sigma * sqrt(var)``
(with 1 % slack for float32 rounding), computed with vectorised loops over whole rows; the medians (a
sorting network on 8 values, an insertion sort on 16) are evaluated only for the few pixels that pass
it. The tests are evaluated in float64 from the float32 values, as the reference does.
"""

from libc.math cimport isfinite, sqrt, NAN
from libc.stdint cimport uint8_t, int16_t
from libc.stdlib cimport malloc, free

ctypedef fused rawpix:
    unsigned short
    float


# ---------------------------------------------------------------------------------------------------
# Linear signal
# ---------------------------------------------------------------------------------------------------

def linear_rows(const rawpix[:, ::1] raw, const float[::1] level, const float[:, ::1] bias,
                float a, float b, float sat_x, float ceiling, float adc_max, Py_ssize_t y0, Py_ssize_t y1,
                float[:, ::1] lin, uint8_t[:, ::1] sat):
    """Rows y0:y1: ``lin = x / ((a x + b) x + 1)`` with ``x = raw - level[y] - bias`` [DN]; ``sat``
    is 2 where ``raw >= adc_max`` or ``x >= ceiling``, else 1 where ``x >= sat_x``, else 0."""
    cdef Py_ssize_t nx = raw.shape[1], y, i
    cdef float r, xv, den, lev
    cdef const rawpix* rrow
    cdef const float* brow
    cdef float* lrow
    cdef uint8_t* srow
    with nogil:
        for y in range(y0, y1):
            rrow = &raw[y, 0]
            brow = &bias[y, 0]
            lrow = &lin[y, 0]
            srow = &sat[y, 0]
            lev = level[y]
            for i in range(nx):
                r = <float>rrow[i]
                xv = (r - lev) - brow[i]
                srow[i] = 2 if (r >= adc_max) | (xv >= ceiling) else <uint8_t>(xv >= sat_x)
                den = (a * xv + b) * xv + <float>1.0
                lrow[i] = xv / den


# ---------------------------------------------------------------------------------------------------
# Crosstalk
# ---------------------------------------------------------------------------------------------------

def ghost_rows(const float[:, ::1] source, const uint8_t[:, ::1] source_sat, bint use_sat, float coef,
               float clip, bint flip_y, bint flip_x, Py_ssize_t y0, Py_ssize_t y1,
               float[:, ::1] ghost):
    """Rows y0:y1 of ``ghost += coef * min(source', clip)``, ``source'`` the source read at the mirrored
    position (rows reversed if ``flip_y``, columns if ``flip_x``) and set to ``clip`` where
    ``use_sat`` and ``source_sat`` is 2 (the source is at its ceiling)."""
    cdef Py_ssize_t ny = source.shape[0], nx = source.shape[1], y, i, sy
    cdef float v
    cdef const float* srow
    cdef const uint8_t* mrow
    cdef float* grow
    with nogil:
        for y in range(y0, y1):
            sy = ny - 1 - y if flip_y else y
            srow = &source[sy, 0]
            mrow = &source_sat[sy if use_sat else 0, 0]
            grow = &ghost[y, 0]
            if flip_x:
                for i in range(nx):
                    v = srow[nx - 1 - i]
                    v = v if v < clip else clip
                    if use_sat and mrow[nx - 1 - i] == 2:
                        v = clip
                    grow[i] += coef * v
            else:
                for i in range(nx):
                    v = srow[i]
                    v = v if v < clip else clip
                    if use_sat and mrow[i] == 2:
                        v = clip
                    grow[i] += coef * v


# ---------------------------------------------------------------------------------------------------
# sciimg, varimg, mskimg
# ---------------------------------------------------------------------------------------------------

def finish_rows(const float[:, ::1] lin, const uint8_t[:, ::1] sat, const float[:, ::1] flat,
                const int16_t[:, ::1] bpm, const float[:, ::1] ghost, bint use_ghost,
                float inv_gain, float rn2, float ghost_k2, float bleed_lin, int16_t sat_bit,
                int16_t ghost_bit, int16_t nan_bit, Py_ssize_t y0, Py_ssize_t y1,
                float[:, ::1] sci, float[:, ::1] var, int16_t[:, ::1] mask):
    """Rows y0:y1 of the calibrated image, its variance and mask.

    With ``l = lin - ghost`` (``lin`` when not ``use_ghost``): ``v = max(l, 0) * inv_gain + rn2``
    [DN^2]; ``sci = l / flat``; ``var = v / (flat * flat)``; ``mask = bpm | sat_bit (saturated, or
    next to a saturated pixel of its column with l >= bleed_lin: the end of a bleed trail) |
    ghost_bit (ghost > 0 and ghost**2 > ghost_k2 * v) | nan_bit (flat <= 0 or a non-finite result,
    where sci and var are set to NaN)``.

    Returns the largest flat value of the rows' good pixels (bpm == 0, flat finite; 0 if none).
    """
    cdef Py_ssize_t ny = lin.shape[0], nx = lin.shape[1], y, i
    cdef float l, v, f, s, vv, g = 0, fmax = 0
    cdef int16_t m
    cdef const float* lrow
    cdef const uint8_t* srow
    cdef const uint8_t* sup
    cdef const uint8_t* sdn
    cdef const float* frow
    cdef const int16_t* brow
    cdef const float* grow
    cdef float* orow
    cdef float* vrow
    cdef int16_t* mrow
    with nogil:
        for y in range(y0, y1):
            lrow = &lin[y, 0]
            srow = &sat[y, 0]
            sup = &sat[y - 1 if y > 0 else y, 0]
            sdn = &sat[y + 1 if y + 1 < ny else y, 0]
            frow = &flat[y, 0]
            brow = &bpm[y, 0]
            grow = &ghost[y if use_ghost else 0, 0]
            orow = &sci[y, 0]
            vrow = &var[y, 0]
            mrow = &mask[y, 0]
            for i in range(nx):
                l = lrow[i]
                if use_ghost:
                    g = grow[i]
                    l = l - g
                v = (l if l > 0 else <float>0.0) * inv_gain + rn2
                f = frow[i]
                s = l / f
                vv = v / (f * f)
                m = brow[i]
                if m == 0 and f > fmax:     # false for NaN
                    fmax = f
                if srow[i] or ((sup[i] | sdn[i]) and l >= bleed_lin):
                    m = m | sat_bit
                if use_ghost and g > 0 and g * g > ghost_k2 * v:
                    m = m | ghost_bit
                if not (f > 0 and isfinite(s) and isfinite(vv)):
                    s = NAN
                    vv = NAN
                    m = m | nan_bit
                orow[i] = s
                vrow[i] = vv
                mrow[i] = m
    return fmax


# ---------------------------------------------------------------------------------------------------
# Cosmic rays
# ---------------------------------------------------------------------------------------------------

cdef inline void _cs(double* a, double* b) noexcept nogil:
    cdef double u = a[0], v = b[0]
    a[0] = u if u < v else v
    b[0] = v if u < v else u


cdef inline double _median8(double* v) noexcept nogil:
    """Median of 8 finite values (mean of the 4th and 5th smallest); reorders v (sorting network)."""
    # Batcher's odd-even merge sort for 8 inputs (19 comparators)
    _cs(&v[0], &v[1]); _cs(&v[2], &v[3]); _cs(&v[4], &v[5]); _cs(&v[6], &v[7])
    _cs(&v[0], &v[2]); _cs(&v[1], &v[3]); _cs(&v[4], &v[6]); _cs(&v[5], &v[7])
    _cs(&v[1], &v[2]); _cs(&v[5], &v[6])
    _cs(&v[0], &v[4]); _cs(&v[1], &v[5]); _cs(&v[2], &v[6]); _cs(&v[3], &v[7])
    _cs(&v[2], &v[4]); _cs(&v[3], &v[5])
    _cs(&v[1], &v[2]); _cs(&v[3], &v[4]); _cs(&v[5], &v[6])
    return 0.5 * (v[3] + v[4])


cdef inline double _median16(double* v) noexcept nogil:
    """Median of 16 finite values (mean of the 8th and 9th smallest); reorders v (insertion sort)."""
    cdef Py_ssize_t i, j
    cdef double t
    for i in range(1, 16):
        t = v[i]
        j = i - 1
        while j >= 0 and v[j] > t:
            v[j + 1] = v[j]
            j -= 1
        v[j + 1] = t
    return 0.5 * (v[7] + v[8])


cdef inline Py_ssize_t _reflect(Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """Index i mirrored into 0..n-1 about the first and last elements (numpy's 'reflect', n >= 3)."""
    if i < 0:
        i = -i
    elif i >= n:
        i = 2 * (n - 1) - i
    return 0 if i < 0 else (n - 1 if i >= n else i)


cdef struct Window:
    double m        # median of the 8 neighbours
    double second   # second largest of the 8 neighbours
    double b        # median of the 16-pixel ring at distance 2
    bint ok         # every value of the 5 x 5 window finite, no skip_near bit in the 3 x 3 block


cdef inline void _window(const float[:, ::1] sci, const int16_t[:, ::1] mask, int16_t skip,
                         Py_ssize_t y, Py_ssize_t x, bint need_skip, Window* w) noexcept nogil:
    """Medians of the neighbours and of the ring of pixel (y, x), indices reflected at the edges."""
    cdef Py_ssize_t ny = sci.shape[0], nx = sci.shape[1], dy, dx, yy, xx, n8 = 0, n16 = 0, d
    cdef double nb[8]
    cdef double ring[16]
    cdef double val
    w.ok = False
    for dy in range(-2, 3):
        yy = _reflect(y + dy, ny)
        for dx in range(-2, 3):
            xx = _reflect(x + dx, nx)
            val = sci[yy, xx]
            if not isfinite(val):
                return
            d = dy if dy > 0 else -dy
            if (dx if dx > 0 else -dx) > d:
                d = dx if dx > 0 else -dx
            if d == 2:
                ring[n16] = val
                n16 += 1
            else:
                if need_skip and (mask[yy, xx] & skip):
                    return
                if d == 1:
                    nb[n8] = val
                    n8 += 1
    w.m = _median8(nb)
    w.second = nb[6]
    w.b = _median16(ring)
    w.ok = True


cdef inline bint _sharp(double d, double v, const Window* w, double k2, double contrast,
                        double margin) noexcept nogil:
    """Tests 1 and 3 for the excess d = I - m of a pixel of variance v."""
    return d > 0.0 and d * d > k2 * v and d > contrast * (w.m - w.b + margin * sqrt(v))


cdef inline bint _is_hit(const float[:, ::1] sci, const float[:, ::1] var, const int16_t[:, ::1] mask,
                         int16_t skip_self, int16_t skip_near, double k2, double contrast, double margin,
                         Py_ssize_t y, Py_ssize_t x) noexcept nogil:
    cdef Window w
    if mask[y, x] & skip_self:
        return False
    _window(sci, mask, skip_near, y, x, True, &w)
    if not w.ok or <double>sci[y, x] < w.second:
        return False
    return _sharp(<double>sci[y, x] - w.m, <double>var[y, x], &w, k2, contrast, margin)


def cosmic_ray_rows(const float[:, ::1] sci, const float[:, ::1] var, const int16_t[:, ::1] mask,
                    int skip_self, int skip_near, double sigma, double contrast, double margin,
                    Py_ssize_t y0, Py_ssize_t y1,
                    uint8_t[:, ::1] hits, Py_ssize_t[::1] row_hits):
    """Rows y0:y1 of ``hits``: 1 where the pixel is a cosmic-ray hit (module notes), else 0; and
    ``row_hits[y]``, the number of hits in row y.

    Returns the number of hits in the rows.
    """
    cdef Py_ssize_t ny = sci.shape[0], nx = sci.shape[1], y, i, nhit = 0, nrow
    cdef double k2 = sigma * sigma
    cdef float k2f = <float>(0.99 * sigma * sigma), c, d, mn
    cdef int16_t sself = <int16_t>skip_self, snear = <int16_t>skip_near
    cdef float* colmin
    cdef uint8_t* cand
    cdef const float* up
    cdef const float* mid
    cdef const float* dn
    cdef const float* vrow
    cdef uint8_t* hrow
    if nx == 0 or y1 <= y0:
        return 0
    colmin = <float*>malloc(nx * sizeof(float))
    cand = <uint8_t*>malloc(nx * sizeof(uint8_t))
    if colmin == NULL or cand == NULL:
        free(colmin)
        free(cand)
        raise MemoryError()
    try:
        with nogil:
            for y in range(y0, y1):
                hrow = &hits[y, 0]
                nrow = 0
                for i in range(nx):
                    hrow[i] = 0
                if y == 0 or y == ny - 1 or nx < 3:
                    # edge rows: the full test on every pixel
                    for i in range(nx):
                        if _is_hit(sci, var, mask, sself, snear, k2, contrast, margin, y, i):
                            hrow[i] = 1
                            nrow += 1
                    row_hits[y] = nrow
                    nhit += nrow
                    continue
                up = &sci[y - 1, 0]
                mid = &sci[y, 0]
                dn = &sci[y + 1, 0]
                vrow = &var[y, 0]
                for i in range(nx):
                    c = up[i] if up[i] < mid[i] else mid[i]
                    colmin[i] = c if c < dn[i] else dn[i]
                # necessary condition: I - min(3 x 3) > sigma sqrt(var) (min(3 x 3) <= median of 8)
                for i in range(1, nx - 1):
                    mn = colmin[i - 1] if colmin[i - 1] < colmin[i] else colmin[i]
                    mn = mn if mn < colmin[i + 1] else colmin[i + 1]
                    d = mid[i] - mn
                    cand[i] = (d > 0) & (d * d > k2f * vrow[i])
                cand[0] = 1
                cand[nx - 1] = 1
                for i in range(nx):
                    if cand[i] and _is_hit(sci, var, mask, sself, snear, k2, contrast, margin, y, i):
                        hrow[i] = 1
                        nrow += 1
                row_hits[y] = nrow
                nhit += nrow
    finally:
        free(colmin)
        free(cand)
    return nhit


def cosmic_ray_grow_rows(const float[:, ::1] sci, const float[:, ::1] var, const int16_t[:, ::1] mask,
                         const uint8_t[:, ::1] hits, const Py_ssize_t[::1] row_hits, int skip_self,
                         double grow_sigma, double contrast, double margin, int16_t spike_bit,
                         Py_ssize_t y0, Py_ssize_t y1, int16_t[:, ::1] out):
    """Rows y0:y1 of ``out |= spike_bit`` on the hits and on the pixels they grow into (module notes).

    ``row_hits[y]`` is the number of hits in row y (rows with none nearby are skipped). ``mask`` is the
    mask the hits were found with; ``out`` may be the same array. Returns the pixels flagged.
    """
    cdef Py_ssize_t ny = sci.shape[0], nx = sci.shape[1], y, i, dy, dx, yy, xx, nflag = 0
    cdef double g2 = grow_sigma * grow_sigma
    cdef int16_t sself = <int16_t>skip_self
    cdef Window w
    cdef bint near
    with nogil:
        for y in range(y0, y1):
            if row_hits[y] == 0 and (y == 0 or row_hits[y - 1] == 0) and (y + 1 >= ny or row_hits[y + 1] == 0):
                continue
            for i in range(nx):
                if hits[y, i]:
                    out[y, i] = out[y, i] | spike_bit
                    nflag += 1
                    continue
                if mask[y, i] & sself:
                    continue
                near = False
                for dy in range(-1, 2):
                    yy = y + dy
                    if yy < 0 or yy >= ny:
                        continue
                    for dx in range(-1, 2):
                        xx = i + dx
                        if xx >= 0 and xx < nx and hits[yy, xx]:
                            near = True
                if not near:
                    continue
                _window(sci, mask, 0, y, i, False, &w)
                if not w.ok:
                    continue
                if _sharp(<double>sci[y, i] - w.m, <double>var[y, i], &w, g2, contrast, margin):
                    out[y, i] = out[y, i] | spike_bit
                    nflag += 1
    return nflag
