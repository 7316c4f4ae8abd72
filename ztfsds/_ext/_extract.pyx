# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Source extraction kernels: background cells, detection, labelling, deblending, measurements.

Private: call them through `ztfsds.astrom.extraction`, which checks dtypes, contiguity and shapes once.
The pure numpy equivalents are in `ztfsds._ext.reference` (`classify_pixels`, `background_cells`,
`spline_rows`, `detection_image`, `label_components`, `deblend`, `measure_sources`); the tests check that
both agree. Every loop runs without the GIL; every scratch buffer belongs to one call.

Pixel codes (`classify_rows`), one uint8 per pixel:

* ``EXCLUDED`` (1): never detected nor measured (a mask bit of the detection set, or non-finite);
* ``BKG_EXCLUDED`` (2): left out of the background statistics (a mask bit of the background set, or
  non-finite);
* ``SATURATED`` (4): a mask bit of the saturation set, or a value ``>= saturate``.

See the notes of `ztfsds.astrom.extraction` for the definitions of the background estimator, the
multi-threshold deblending and the measurements; the functions below implement exactly those.
"""

import numpy as np

from libc.math cimport sqrt, exp, log, fabs, floor, isfinite, NAN, INFINITY
from libc.stdint cimport uint8_t, int16_t, int32_t, int64_t
from libc.stdlib cimport malloc, free, realloc, qsort
from libc.string cimport memset

EXCLUDED = 1
BKG_EXCLUDED = 2
SATURATED = 4

# measure(): columns of the float64 output array, and flag bits (their public meaning is in
# ztfsds.astrom.extraction.SourceFlags)
cpdef enum:
    M_X_ISO = 0
    M_Y_ISO
    M_X2
    M_Y2
    M_XY
    M_FLUX_ISO
    M_VAR_ISO
    M_PEAK
    M_NPIX
    M_X_WIN
    M_Y_WIN
    M_ERRX2
    M_ERRY2
    M_ERRXY
    M_FWHM
    M_FLUX_APER
    M_VAR_APER
    M_FLUX_RADIUS
    M_SIGMA_WIN
    M_NITER
    M_X_PEAK
    M_Y_PEAK
    N_MEASURE

cpdef enum:
    F_NEIGHBOURS = 1
    F_BLENDED = 2
    F_SATURATED = 4
    F_TRUNCATED = 8
    F_INCOMPLETE = 16
    F_WIN_FALLBACK = 256

cdef enum:
    C_EXCLUDED = 1
    C_BKG_EXCLUDED = 2
    C_SATURATED = 4

# SExtractor's background histogram: at most this many bins over mean +- 5 sigma
cdef int MAX_LEVELS = 4096


# ---------------------------------------------------------------------------------------------------
# Pixel classification, background, detection image
# ---------------------------------------------------------------------------------------------------

def classify_rows(const float[:, ::1] sci, const int16_t[:, ::1] mask, bint use_mask, int det_bits,
                  int bkg_bits, int sat_bits, double saturate, Py_ssize_t y0, Py_ssize_t y1,
                  uint8_t[:, ::1] code):
    """Rows y0:y1 of the pixel codes (module notes); ``mask`` is read only when ``use_mask``."""
    cdef Py_ssize_t nx = sci.shape[1], y, x
    # no level (inf): NaN, which no value reaches
    cdef float v, sat = <float>saturate if saturate < 3.4e38 else NAN
    cdef int m
    cdef const float* s
    cdef const int16_t* mk
    cdef uint8_t* c
    with nogil:
        for y in range(y0, y1):
            s = &sci[y, 0]
            c = &code[y, 0]
            for x in range(nx):
                v = s[x]
                # v - v is 0 for finite values, NaN otherwise
                c[x] = (<uint8_t>(not (v - v == 0)) * (C_EXCLUDED | C_BKG_EXCLUDED)
                        | <uint8_t>(v >= sat) * C_SATURATED)
            if use_mask:
                mk = &mask[y, 0]
                for x in range(nx):
                    m = mk[x]
                    c[x] = c[x] | (<uint8_t>((m & det_bits) != 0) * C_EXCLUDED
                                   | <uint8_t>((m & bkg_bits) != 0) * C_BKG_EXCLUDED
                                   | <uint8_t>((m & sat_bits) != 0) * C_SATURATED)


cdef void _cell_mode(const float* buf, Py_ssize_t n, double s1, double s2, int64_t* hist, double* prefix,
                     double* level, double* sigma) noexcept nogil:
    """SExtractor-like background of one cell's n >= 1 good values (see extract notes); s1 and s2 are
    the sums of ``buf - buf[0]`` and of its square, in order."""
    cdef Py_ssize_t i, cnt = 0
    cdef double shift = buf[0], mean, std, lo, hi, dv, m0, s0
    cdef int nlev, lcut, hcut, it, b, lo_b, hi_b, mid
    cdef double qzero, qscale, inv_q, total, mea, med, sig, sig_prev, half, cum, h, c, t
    cdef double* P0
    cdef double* P1
    cdef double* P2
    mean = s1 / n
    t = s2 / n - mean * mean
    std = sqrt(t) if t > 0.0 else 0.0
    mean += shift
    # first clipping at mean +- 2 std (SExtractor's backstat)
    lo = mean - 2.0 * std
    hi = mean + 2.0 * std
    s1 = 0.0
    s2 = 0.0
    for i in range(n):
        if buf[i] >= lo and buf[i] <= hi:
            dv = buf[i] - shift
            s1 += dv
            s2 += dv * dv
            cnt += 1
    if cnt == 0:
        level[0] = mean
        sigma[0] = std
        return
    m0 = s1 / cnt
    t = s2 / cnt - m0 * m0
    s0 = sqrt(t) if t > 0.0 else 0.0
    m0 += shift
    if not (s0 > 0.0):
        level[0] = m0
        sigma[0] = 0.0
        return
    # histogram of mean +- 5 sigma
    nlev = <int>(n + 1) if n + 1 < MAX_LEVELS else MAX_LEVELS
    qscale = 10.0 * s0 / nlev
    qzero = m0 - 5.0 * s0
    for b in range(nlev):
        hist[b] = 0
    inv_q = 1.0 / qscale
    for i in range(n):
        t = (buf[i] - qzero) * inv_q
        if t >= 0.0 and t < nlev:
            hist[<int>t] += 1
    # prefix sums of the counts and of their first and second moments about the bin centres: every
    # term is a multiple of 1/4 below 2**53, so these sums, and their differences, are exact
    P0 = prefix
    P1 = prefix + (nlev + 1)
    P2 = prefix + 2 * (nlev + 1)
    P0[0] = P1[0] = P2[0] = 0.0
    for b in range(nlev):
        h = <double>hist[b]
        c = b + 0.5
        P0[b + 1] = P0[b] + h
        P1[b + 1] = P1[b] + h * c
        P2[b + 1] = P2[b] + h * c * c
    # iterative 3-sigma clipping about the median, on the histogram (SExtractor's backguess)
    lcut = 0
    hcut = nlev - 1
    sig = 10.0 * nlev
    sig_prev = 1.0
    mea = 0.5 * nlev
    med = mea
    for it in range(100):
        if not (sig >= 0.1 and fabs(sig / sig_prev - 1.0) > 1e-4):
            break
        sig_prev = sig
        total = P0[hcut + 1] - P0[lcut]
        if total <= 0.0:
            break
        mea = (P1[hcut + 1] - P1[lcut]) / total
        t = (P2[hcut + 1] - P2[lcut]) / total - mea * mea
        sig = sqrt(t) if t > 0.0 else 0.0
        # median: the first bin where the cumulative count reaches half, interpolated in it
        half = 0.5 * total
        lo_b = lcut
        hi_b = hcut
        while lo_b < hi_b:
            mid = (lo_b + hi_b) // 2
            if P0[mid + 1] - P0[lcut] >= half:
                hi_b = mid
            else:
                lo_b = mid + 1
        b = lo_b
        cum = P0[b] - P0[lcut]
        med = b + (half - cum) / hist[b]
        t = floor(med - 3.0 * sig + 0.5)
        lcut = <int>t if t > 0.0 else 0
        t = floor(med + 3.0 * sig + 0.5)
        hcut = <int>t if t < nlev - 1 else nlev - 1
    if sig > 0.0 and fabs(mea - med) < 0.3 * sig:
        level[0] = qzero + (2.5 * med - 1.5 * mea) * qscale
    else:
        level[0] = qzero + med * qscale
    sigma[0] = sig * qscale


def cell_stats(const float[:, ::1] sci, const uint8_t[:, ::1] code, Py_ssize_t mesh, double min_good_frac,
               double[:, ::1] level, double[:, ::1] rms, int32_t[:, ::1] ngood):
    """Background level and rms of each cell (NaN where fewer than ``min_good_frac`` of the cell's pixels
    are good), and its number of good pixels. Cells are mesh x mesh pixels from (0, 0); the last row and
    column of cells (``level.shape`` gives their number) extend to the image edge."""
    cdef Py_ssize_t ny = sci.shape[0], nx = sci.shape[1], nby = level.shape[0], nbx = level.shape[1]
    cdef Py_ssize_t by, bx, y, x, ys, ye, xs, xe, n
    cdef double lev, sig
    cdef Py_ssize_t hmax = max(mesh, ny - (nby - 1) * mesh), wmax = max(mesh, nx - (nbx - 1) * mesh)
    cdef float* buf = <float*>malloc(hmax * wmax * sizeof(float))
    cdef int64_t* hist = <int64_t*>malloc(MAX_LEVELS * sizeof(int64_t))
    cdef double* prefix = <double*>malloc(3 * (MAX_LEVELS + 1) * sizeof(double))
    cdef double s1, s2, dv, shift = 0.0
    cdef float v
    if buf == NULL or hist == NULL or prefix == NULL:
        free(buf)
        free(hist)
        free(prefix)
        raise MemoryError()
    with nogil:
        for by in range(nby):
            ys = by * mesh
            ye = ny if by == nby - 1 else ys + mesh
            for bx in range(nbx):
                xs = bx * mesh
                xe = nx if bx == nbx - 1 else xs + mesh
                # gather the good values, with their sums about the first one
                n = 0
                s1 = 0.0
                s2 = 0.0
                for y in range(ys, ye):
                    for x in range(xs, xe):
                        if not (code[y, x] & C_BKG_EXCLUDED):
                            v = sci[y, x]
                            if n == 0:
                                shift = v
                            buf[n] = v
                            dv = v - shift
                            s1 += dv
                            s2 += dv * dv
                            n += 1
                ngood[by, bx] = <int32_t>n
                if n == 0 or n < min_good_frac * (ye - ys) * (xe - xs):
                    level[by, bx] = NAN
                    rms[by, bx] = NAN
                    continue
                _cell_mode(buf, n, s1, s2, hist, prefix, &lev, &sig)
                level[by, bx] = lev
                rms[by, bx] = sig
    free(buf)
    free(hist)
    free(prefix)


def spline_rows(const double[:, ::1] val, const double[:, ::1] d2, const Py_ssize_t[::1] seg,
                const double[:, ::1] w, Py_ssize_t y0, Py_ssize_t y1, float[:, ::1] out):
    """Rows y0:y1 of ``out[y, x] = w[0, x] val[y, k] + w[1, x] val[y, k + 1] + w[2, x] d2[y, k]
    + w[3, x] d2[y, k + 1]`` with ``k = seg[x]`` (non-decreasing): a cubic spline along x through each
    row's nodes. ``w`` is (4, nx)."""
    cdef Py_ssize_t nx = out.shape[1], y, x, xs, xe, k
    cdef double a, b, c, d
    cdef float* o
    cdef const double* w0 = &w[0, 0]
    cdef const double* w1 = &w[1, 0]
    cdef const double* w2 = &w[2, 0]
    cdef const double* w3 = &w[3, 0]
    with nogil:
        for y in range(y0, y1):
            o = &out[y, 0]
            xs = 0
            while xs < nx:
                k = seg[xs]
                xe = xs
                while xe < nx and seg[xe] == k:
                    xe += 1
                a = val[y, k]
                b = val[y, k + 1]
                c = d2[y, k]
                d = d2[y, k + 1]
                for x in range(xs, xe):
                    o[x] = <float>(w0[x] * a + w1[x] * b + w2[x] * c + w3[x] * d)
                xs = xe


def subtract_rows(const float[:, ::1] sci, const float[:, ::1] level, const uint8_t[:, ::1] code,
                  Py_ssize_t y0, Py_ssize_t y1, float[:, ::1] sub):
    """Rows y0:y1 of ``sub = sci - level``, 0 on EXCLUDED pixels."""
    cdef Py_ssize_t nx = sci.shape[1], y, x
    with nogil:
        for y in range(y0, y1):
            for x in range(nx):
                sub[y, x] = 0.0 if code[y, x] & C_EXCLUDED else sci[y, x] - level[y, x]


cdef inline void _snr_row(float* f, const float* r, const uint8_t* c, Py_ssize_t nx,
                          float inv_norm) noexcept nogil:
    cdef Py_ssize_t x
    for x in range(nx):
        f[x] = 0.0 if ((c[x] & C_EXCLUDED) or not (r[x] > 0)) else f[x] * (inv_norm / r[x])


def detection_rows(const float[:, ::1] sub, const float[:, ::1] kernel, bint separable,
                   const float[:, ::1] rms, const uint8_t[:, ::1] code, double inv_norm, Py_ssize_t y0,
                   Py_ssize_t y1, float[:, ::1] out):
    """Rows y0:y1 of the detection image: ``sub`` correlated with ``kernel`` (zero outside the image)
    times ``inv_norm / rms``, 0 on EXCLUDED pixels and where ``rms <= 0``.

    ``kernel`` is (ky, kx), both odd. When ``separable`` it is (2, k): the correlation with
    ``outer(kernel[0], kernel[1])``, done as a vertical then a horizontal pass.
    """
    cdef Py_ssize_t ny = sub.shape[0], nx = sub.shape[1], kx = kernel.shape[1], rx = kx // 2
    cdef Py_ssize_t ky = kernel.shape[1] if separable else kernel.shape[0], ry = ky // 2
    cdef Py_ssize_t y, yy, i, j, x
    cdef float g
    cdef float* pad = <float*>malloc((nx + 2 * rx) * sizeof(float))
    cdef float* t
    cdef float* o
    cdef const float* row
    if pad == NULL:
        raise MemoryError()
    with nogil:
        for x in range(nx + 2 * rx):
            pad[x] = 0.0
        t = pad + rx
        for y in range(y0, y1):
            o = &out[y, 0]
            for x in range(nx):
                o[x] = 0.0
            if separable:
                # vertical pass into the padded row, then horizontal pass
                for x in range(nx):
                    t[x] = 0.0
                for i in range(ky):
                    yy = y + i - ry
                    if yy < 0 or yy >= ny:
                        continue
                    g = kernel[0, i]
                    row = &sub[yy, 0]
                    for x in range(nx):
                        t[x] += g * row[x]
                for j in range(kx):
                    g = kernel[1, j]
                    for x in range(nx):
                        o[x] += g * pad[x + j]
            else:
                for i in range(ky):
                    yy = y + i - ry
                    if yy < 0 or yy >= ny:
                        continue
                    row = &sub[yy, 0]
                    for x in range(nx):
                        t[x] = row[x]
                    for j in range(kx):
                        g = kernel[i, j]
                        for x in range(nx):
                            o[x] += g * pad[x + j]
            _snr_row(o, &rms[y, 0], &code[y, 0], nx, <float>inv_norm)
    free(pad)


# ---------------------------------------------------------------------------------------------------
# Connected components (8-connectivity): runs + union-find
# ---------------------------------------------------------------------------------------------------

cdef inline Py_ssize_t _find(Py_ssize_t* parent, Py_ssize_t i) noexcept nogil:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


cdef inline void _union_min(Py_ssize_t* parent, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Merge the sets of a and b; the root is the smaller index (the first run in raster order)."""
    a = _find(parent, a)
    b = _find(parent, b)
    if a < b:
        parent[b] = a
    elif b < a:
        parent[a] = b


def label(const float[:, ::1] snr, float thresh, Py_ssize_t min_area, int32_t[:, ::1] segm):
    """Connected components (8-connectivity) of ``snr >= thresh`` with at least ``min_area`` pixels.

    Writes ``segm`` (component number from 1, in raster order of the components' first pixels; 0
    elsewhere) and returns ``(start, pix_y, pix_x)``: the pixels of component ``c`` (from 0) are
    ``pix_y[start[c]:start[c + 1]]``, ``pix_x[...]``, in raster order.
    """
    cdef Py_ssize_t ny = snr.shape[0], nx = snr.shape[1], y, x, x0, nruns = 0, r, i, j, k
    cdef Py_ssize_t row_start, prev_start = 0, prev_end = 0, ncomp = 0, nkeep = 0, npix = 0, root
    cdef int above, prev
    cdef const float* row
    with nogil:
        for y in range(ny):
            # runs start where a pixel is above and its left neighbour is not (branch-free)
            row = &snr[y, 0]
            prev = 0
            for x in range(nx):
                above = row[x] >= thresh
                nruns += above & (1 - prev)
                prev = above
    run_y_a = np.empty(nruns, dtype=np.intp)
    run_x0_a = np.empty(nruns, dtype=np.intp)
    run_x1_a = np.empty(nruns, dtype=np.intp)
    parent_a = np.empty(nruns, dtype=np.intp)
    lab_a = np.empty(nruns, dtype=np.intp)
    cnt_a = np.zeros(nruns + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] run_y = run_y_a, run_x0 = run_x0_a, run_x1 = run_x1_a, lab = lab_a, cnt = cnt_a
    cdef Py_ssize_t[::1] parent = parent_a
    cdef Py_ssize_t* par = &parent[0] if nruns > 0 else NULL
    with nogil:
        r = 0
        for y in range(ny):
            row_start = r
            x = 0
            while x < nx:
                if snr[y, x] >= thresh:
                    x0 = x
                    while x < nx and snr[y, x] >= thresh:
                        x += 1
                    run_y[r] = y
                    run_x0[r] = x0
                    run_x1[r] = x - 1
                    parent[r] = r
                    r += 1
                else:
                    x += 1
            # runs of the previous row touching these (8-connectivity: overlap or diagonal contact)
            j = prev_start
            for i in range(row_start, r):
                while j < prev_end and run_x1[j] < run_x0[i] - 1:
                    j += 1
                k = j
                while k < prev_end and run_x0[k] <= run_x1[i] + 1:
                    _union_min(par, i, k)
                    k += 1
            if y + 1 < ny:
                prev_start = row_start
                prev_end = r
        # provisional component numbers in raster order, and their sizes
        for r in range(nruns):
            root = _find(par, r)
            if root == r:
                lab[r] = ncomp
                ncomp += 1
            else:
                lab[r] = lab[root]
            cnt[lab[r]] += run_x1[r] - run_x0[r] + 1
        # keep the components of at least min_area pixels, renumbered from 1
        for i in range(ncomp):
            if cnt[i] >= min_area:
                nkeep += 1
                npix += cnt[i]
                cnt[i] = nkeep
            else:
                cnt[i] = 0
    start_a = np.zeros(nkeep + 1, dtype=np.int64)
    pix_y_a = np.empty(npix, dtype=np.int32)
    pix_x_a = np.empty(npix, dtype=np.int32)
    cdef int64_t[::1] start = start_a
    cdef int32_t[::1] pix_y = pix_y_a, pix_x = pix_x_a
    cdef int32_t f
    cdef int64_t pos
    with nogil:
        for y in range(ny):
            memset(&segm[y, 0], 0, nx * sizeof(int32_t))
        for r in range(nruns):
            f = <int32_t>cnt[lab[r]]
            if f:
                start[f] += run_x1[r] - run_x0[r] + 1
        for i in range(nkeep):
            start[i + 1] += start[i]
        # fill: start[c] is used as a cursor and shifted back afterwards
        for r in range(nruns):
            f = <int32_t>cnt[lab[r]]
            if f:
                pos = start[f - 1]
                for x in range(run_x0[r], run_x1[r] + 1):
                    pix_y[pos] = <int32_t>run_y[r]
                    pix_x[pos] = <int32_t>x
                    segm[run_y[r], x] = f
                    pos += 1
                start[f - 1] = pos
        for i in range(nkeep, 0, -1):
            start[i] = start[i - 1]
        start[0] = 0
    return start_a, pix_y_a, pix_x_a


# ---------------------------------------------------------------------------------------------------
# Deblending: SExtractor's multi-threshold tree, built as a max-tree by union-find
# ---------------------------------------------------------------------------------------------------

cdef struct PixVal:
    float v
    int32_t i


cdef int _cmp_desc(const void* a, const void* b) noexcept nogil:
    cdef float va = (<const PixVal*>a).v, vb = (<const PixVal*>b).v
    cdef int32_t ia = (<const PixVal*>a).i, ib = (<const PixVal*>b).i
    if va > vb:
        return -1
    if va < vb:
        return 1
    return -1 if ia < ib else (1 if ia > ib else 0)


cdef struct Node:
    int32_t level
    int32_t root       # union-find root (local pixel index) when the node was recorded
    int32_t parent     # node of the level below holding this one (-1: the level-0 node)
    int32_t npix
    double sum         # sum of the deblending-image values of its pixels
    double peak        # largest of them
    int32_t nsig       # number of significant children
    int32_t ok         # no split above it
    int32_t mark       # an object
    int32_t owner      # the object node holding it (-1: none)
    int32_t obj        # object index within the component (marked nodes)


cdef struct Scratch:
    PixVal* pv
    int32_t* uf
    int32_t* size
    double* usum
    uint8_t* done
    int32_t* active
    int32_t* rootnode
    int32_t* pixnode
    int32_t* pixobj
    double* val        # deblending-image value of each local pixel
    double* umax       # largest value of each union-find set (at its root)
    Node* nodes
    Py_ssize_t cap
    int32_t* lidx      # local pixel index over the component's bounding box
    Py_ssize_t lcap


cdef inline int32_t _ufind(int32_t* uf, int32_t i) noexcept nogil:
    while uf[i] != i:
        uf[i] = uf[uf[i]]
        i = uf[i]
    return i


cdef int _grow_nodes(Scratch* s, Py_ssize_t need) noexcept nogil:
    cdef Py_ssize_t cap = s.cap
    cdef Node* p
    if need <= cap:
        return 0
    while cap < need:
        cap = 2 * cap + 64
    p = <Node*>realloc(s.nodes, cap * sizeof(Node))
    if p == NULL:
        return -1
    s.nodes = p
    s.cap = cap
    return 0


cdef inline double _deb_value(const float[:, ::1] det, const float[:, ::1] sub, const float[:, ::1] rms,
                              bint raw, Py_ssize_t y, Py_ssize_t x) noexcept nogil:
    """The deblending image: the detection image, or (``raw``) the unfiltered pixel in sigma of the
    background."""
    cdef float r
    if not raw:
        return det[y, x]
    r = rms[y, x]
    return sub[y, x] / r if r > 0 else 0.0


cdef Py_ssize_t _split(const float[:, ::1] det, const float[:, ::1] sub, const float[:, ::1] rms, bint raw,
                       const int32_t[:, ::1] segm, const int32_t* py, const int32_t* px, Py_ssize_t n,
                       int32_t comp, double thresh, int nthresh, double mincont, double minrise, double s2,
                       Scratch* s) noexcept nogil:
    """Multi-threshold split of the n pixels labelled ``comp`` in ``segm``; sets s.pixobj[i] (object
    index of local pixel i) and returns the number of objects (1 when nothing splits; -1 when out of
    memory)."""
    cdef Py_ssize_t ny = det.shape[0], nx = det.shape[1]
    cdef Py_ssize_t i, p, pstart, nact, a, nnodes = 0, lev_first, prev_first = 0, prev_count = 0
    cdef Py_ssize_t maxact = 0, nobj, m, o, nmax, bw
    cdef int32_t ymin, ymax, xmin, xmax
    cdef bint ismax
    cdef int32_t li, lj, r, q, yy, xx, L, lev, dy, dx
    cdef double peak, lnratio, tk, value0, total, v
    cdef Node* nd
    cdef int32_t* level_first
    cdef int32_t* level_count
    if n < 2 or nthresh < 2:
        return 1
    # a split needs two branches, hence two local maxima at least minrise above the threshold
    nmax = 0
    for i in range(n):
        v = _deb_value(det, sub, rms, raw, py[i], px[i])
        if v < thresh + minrise:
            continue
        ismax = True
        for dy in range(-1, 2):
            yy = py[i] + dy
            if yy < 0 or yy >= ny or not ismax:
                continue
            for dx in range(-1, 2):
                xx = px[i] + dx
                if (xx >= 0 and xx < nx and segm[yy, xx] == comp
                        and _deb_value(det, sub, rms, raw, yy, xx) > v):
                    ismax = False
                    break
        if ismax:
            nmax += 1
            if nmax > 1:
                break
    if nmax < 2:
        return 1
    # local indices over the bounding box
    ymin = ymax = py[0]
    xmin = xmax = px[0]
    for i in range(n):
        ymin = py[i] if py[i] < ymin else ymin
        ymax = py[i] if py[i] > ymax else ymax
        xmin = px[i] if px[i] < xmin else xmin
        xmax = px[i] if px[i] > xmax else xmax
    bw = xmax - xmin + 1
    if (ymax - ymin + 1) * bw > s.lcap:
        s.lcap = (ymax - ymin + 1) * bw
        free(s.lidx)
        s.lidx = <int32_t*>malloc(s.lcap * sizeof(int32_t))
        if s.lidx == NULL:
            s.lcap = 0
            return -1
    for i in range(n):
        s.pv[i].v = <float>_deb_value(det, sub, rms, raw, py[i], px[i])
        s.pv[i].i = <int32_t>i
        s.lidx[(py[i] - ymin) * bw + px[i] - xmin] = <int32_t>i
    qsort(s.pv, n, sizeof(PixVal), _cmp_desc)
    peak = s.pv[0].v
    if not (peak > thresh * (1.0 + 1e-9)):
        return 1
    lnratio = log(peak / thresh)
    level_first = <int32_t*>malloc(nthresh * sizeof(int32_t))
    level_count = <int32_t*>malloc(nthresh * sizeof(int32_t))
    if level_first == NULL or level_count == NULL:
        free(level_first)
        free(level_count)
        return -1
    for i in range(n):
        s.done[i] = 0
    nact = 0
    p = 0
    for L in range(nthresh - 1, -1, -1):
        pstart = p
        while p < n:
            v = s.pv[p].v
            lev = <int32_t>floor(nthresh * log(v / thresh) / lnratio) if v > thresh else 0
            if lev > nthresh - 1:
                lev = nthresh - 1
            if lev < L:
                break
            li = s.pv[p].i
            s.uf[li] = li
            s.size[li] = 1
            s.usum[li] = v
            s.umax[li] = v
            s.val[li] = v
            s.done[li] = 1
            s.active[nact] = li
            nact += 1
            for dy in range(-1, 2):
                yy = py[li] + dy
                if yy < 0 or yy >= ny:
                    continue
                for dx in range(-1, 2):
                    xx = px[li] + dx
                    if (dy == 0 and dx == 0) or xx < 0 or xx >= nx or segm[yy, xx] != comp:
                        continue
                    lj = s.lidx[(yy - ymin) * bw + xx - xmin]
                    if not s.done[lj]:
                        continue
                    r = _ufind(s.uf, li)
                    q = _ufind(s.uf, lj)
                    if r == q:
                        continue
                    if s.size[r] < s.size[q]:
                        r, q = q, r
                    s.uf[q] = r
                    s.size[r] += s.size[q]
                    s.usum[r] += s.usum[q]
                    if s.umax[q] > s.umax[r]:
                        s.umax[r] = s.umax[q]
            p += 1
        # the live sets are the nodes of level L
        a = 0
        for i in range(nact):
            if s.uf[s.active[i]] == s.active[i]:
                s.active[a] = s.active[i]
                a += 1
        nact = a
        if nact > maxact:
            maxact = nact
        if _grow_nodes(s, nnodes + nact) < 0:
            free(level_first)
            free(level_count)
            return -1
        lev_first = nnodes
        for i in range(nact):
            r = s.active[i]
            nd = &s.nodes[nnodes]
            nd.level = L
            nd.root = r
            nd.parent = -1
            nd.npix = s.size[r]
            nd.sum = s.usum[r]
            nd.peak = s.umax[r]
            nd.nsig = 0
            nd.ok = 1
            nd.mark = 0
            nd.owner = -1
            nd.obj = -1
            s.rootnode[r] = <int32_t>nnodes
            nnodes += 1
        for m in range(prev_first, prev_first + prev_count):
            s.nodes[m].parent = s.rootnode[_ufind(s.uf, s.nodes[m].root)]
        for i in range(pstart, p):
            li = s.pv[i].i
            s.pixnode[li] = s.rootnode[_ufind(s.uf, li)]
        level_first[L] = <int32_t>lev_first
        level_count[L] = <int32_t>nact
        prev_first = lev_first
        prev_count = nact
    if maxact < 2:
        free(level_first)
        free(level_count)
        return 1
    # SExtractor's decision, from the top down: a node splits when at least two of its children
    # carry more than mincont of the total (above their own level); its children that did not split
    # above become objects
    total = s.nodes[nnodes - 1].sum
    value0 = mincont * total
    for L in range(nthresh - 2, -1, -1):
        tk = thresh * exp(lnratio * (L + 1) / nthresh)
        for m in range(level_first[L + 1], level_first[L + 1] + level_count[L + 1]):
            nd = &s.nodes[m]
            if nd.sum - tk * nd.npix > value0 and nd.peak - tk >= minrise:
                s.nodes[nd.parent].nsig += 1
            if not nd.ok:
                s.nodes[nd.parent].ok = 0
        for m in range(level_first[L + 1], level_first[L + 1] + level_count[L + 1]):
            nd = &s.nodes[m]
            if (s.nodes[nd.parent].nsig > 1 and nd.ok and nd.sum - tk * nd.npix > value0
                    and nd.peak - tk >= minrise):
                nd.mark = 1
        for m in range(level_first[L], level_first[L] + level_count[L]):
            if s.nodes[m].nsig > 1:
                s.nodes[m].ok = 0
    free(level_first)
    free(level_count)
    if s.nodes[nnodes - 1].ok:
        return 1
    # owners, from the root up; object numbers in order of creation
    nobj = 0
    for m in range(nnodes):
        if s.nodes[m].mark:
            s.nodes[m].obj = <int32_t>nobj
            nobj += 1
    for m in range(nnodes - 1, -1, -1):
        nd = &s.nodes[m]
        if nd.mark:
            nd.owner = <int32_t>m
        elif nd.parent >= 0:
            nd.owner = s.nodes[nd.parent].owner
    for i in range(n):
        o = s.nodes[s.pixnode[i]].owner
        s.pixobj[i] = s.nodes[o].obj if o >= 0 else -1
    if _gather(py, px, n, nobj, s2, s) < 0:
        return -1
    return nobj


cdef int _gather(const int32_t* py, const int32_t* px, Py_ssize_t n, Py_ssize_t nobj, double s2,
                 Scratch* s) noexcept nogil:
    """Give each pixel of no object to the object whose Gaussian (its weighted moments plus s2 on the
    diagonal, normalised to its sum) is largest there."""
    cdef double* mom = <double*>malloc(nobj * 9 * sizeof(double))
    cdef Py_ssize_t i, o, best
    cdef double w, x, y, mx, my, cxx, cyy, cxy, det, ex, ey, val, bestval
    cdef double x0 = px[0], y0 = py[0]
    if mom == NULL:
        return -1
    for i in range(nobj * 9):
        mom[i] = 0.0
    for i in range(n):
        o = s.pixobj[i]
        if o < 0:
            continue
        w = s.val[i]
        x = px[i] - x0
        y = py[i] - y0
        mom[9 * o] += w
        mom[9 * o + 1] += w * x
        mom[9 * o + 2] += w * y
        mom[9 * o + 3] += w * x * x
        mom[9 * o + 4] += w * y * y
        mom[9 * o + 5] += w * x * y
    for o in range(nobj):
        w = mom[9 * o]
        mx = mom[9 * o + 1] / w
        my = mom[9 * o + 2] / w
        cxx = mom[9 * o + 3] / w - mx * mx + s2
        cyy = mom[9 * o + 4] / w - my * my + s2
        cxy = mom[9 * o + 5] / w - mx * my
        det = cxx * cyy - cxy * cxy
        if det < s2 * s2:
            det = s2 * s2
        mom[9 * o + 1] = mx
        mom[9 * o + 2] = my
        # inverse covariance and log amplitude
        mom[9 * o + 3] = cyy / det
        mom[9 * o + 4] = cxx / det
        mom[9 * o + 5] = -cxy / det
        mom[9 * o + 6] = log(w) - 0.5 * log(det)
    for i in range(n):
        if s.pixobj[i] >= 0:
            continue
        x = px[i] - x0
        y = py[i] - y0
        best = 0
        bestval = -INFINITY
        for o in range(nobj):
            ex = x - mom[9 * o + 1]
            ey = y - mom[9 * o + 2]
            val = mom[9 * o + 6] - 0.5 * (mom[9 * o + 3] * ex * ex + mom[9 * o + 4] * ey * ey
                                          + 2.0 * mom[9 * o + 5] * ex * ey)
            if val > bestval:
                bestval = val
                best = o
        s.pixobj[i] = <int32_t>best
    free(mom)
    return 0


cdef void _regroup(int32_t* py, int32_t* px, Py_ssize_t n, Py_ssize_t nobj, const int32_t* pixobj,
                   int64_t* ostart, int32_t* ty, int32_t* tx) noexcept nogil:
    """Reorder the n pixels by object (stable: raster order within an object); object o then owns
    pixels ostart[o]:ostart[o + 1]."""
    cdef Py_ssize_t i, o
    cdef int64_t k
    for o in range(nobj + 1):
        ostart[o] = 0
    for i in range(n):
        ostart[pixobj[i] + 1] += 1
    for o in range(nobj):
        ostart[o + 1] += ostart[o]
    for i in range(n):
        o = pixobj[i]
        k = ostart[o]
        ty[k] = py[i]
        tx[k] = px[i]
        ostart[o] = k + 1
    for i in range(n):
        py[i] = ty[i]
        px[i] = tx[i]
    for o in range(nobj, 0, -1):
        ostart[o] = ostart[o - 1]
    ostart[0] = 0


def deblend(const float[:, ::1] det, const float[:, ::1] sub, const float[:, ::1] rms, int32_t[:, ::1] segm,
            const int64_t[::1] start, int32_t[::1] pix_y, int32_t[::1] pix_x, double thresh, int nthresh,
            double mincont, double minrise, double s2, int64_t[::1] obj_start, int32_t[::1] obj_comp,
            uint8_t[::1] obj_blended):
    """Split every component of `label` into objects: SExtractor's multi-threshold deblending on the
    detection image ``det``, then the same on the unfiltered ``sub / rms`` of each part, where a branch
    must also rise ``minrise`` above its level.

    On return the pixels of each component are regrouped by object (raster order within an object),
    object ``j`` (from 0) owns ``pix_*[obj_start[j]:obj_start[j + 1]]``, came from component
    ``obj_comp[j]`` (from 0) and ``obj_blended[j]`` says whether that component was split; ``segm``
    holds object numbers from 1. ``obj_*`` need room for one object per pixel. Returns the number of
    objects.
    """
    cdef Py_ssize_t ncomp = start.shape[0] - 1, c, n, nmax = 0, i, j, o, nobj1, nobj2, base, ob, on, g = 0
    cdef Py_ssize_t gstart
    cdef int32_t label
    cdef bint blended
    cdef Scratch s
    cdef int err = 0
    cdef int64_t* ostart
    cdef int64_t* ostart2
    cdef int32_t* ty
    cdef int32_t* tx
    for c in range(ncomp):
        if start[c + 1] - start[c] > nmax:
            nmax = start[c + 1] - start[c]
    s.pv = <PixVal*>malloc((nmax + 1) * sizeof(PixVal))
    s.uf = <int32_t*>malloc((nmax + 1) * sizeof(int32_t))
    s.size = <int32_t*>malloc((nmax + 1) * sizeof(int32_t))
    s.usum = <double*>malloc((nmax + 1) * sizeof(double))
    s.done = <uint8_t*>malloc((nmax + 1) * sizeof(uint8_t))
    s.active = <int32_t*>malloc((nmax + 1) * sizeof(int32_t))
    s.rootnode = <int32_t*>malloc((nmax + 1) * sizeof(int32_t))
    s.pixnode = <int32_t*>malloc((nmax + 1) * sizeof(int32_t))
    s.pixobj = <int32_t*>malloc((nmax + 1) * sizeof(int32_t))
    s.val = <double*>malloc((nmax + 1) * sizeof(double))
    s.umax = <double*>malloc((nmax + 1) * sizeof(double))
    s.nodes = NULL
    s.cap = 0
    s.lidx = NULL
    s.lcap = 0
    ty = <int32_t*>malloc((nmax + 1) * sizeof(int32_t))
    tx = <int32_t*>malloc((nmax + 1) * sizeof(int32_t))
    ostart = <int64_t*>malloc((nmax + 2) * sizeof(int64_t))
    ostart2 = <int64_t*>malloc((nmax + 2) * sizeof(int64_t))
    try:
        if (s.pv == NULL or s.uf == NULL or s.size == NULL or s.usum == NULL or s.done == NULL
                or s.active == NULL or s.rootnode == NULL or s.pixnode == NULL or s.pixobj == NULL
                or s.val == NULL or s.umax == NULL or ty == NULL or tx == NULL or ostart == NULL
                or ostart2 == NULL):
            raise MemoryError()
        with nogil:
            for c in range(ncomp):
                base = start[c]
                n = start[c + 1] - base
                gstart = g
                # first pass: on the detection image (SExtractor)
                nobj1 = _split(det, sub, rms, False, segm, &pix_y[base], &pix_x[base], n, <int32_t>(c + 1),
                               thresh, nthresh, mincont, 0.0, s2, &s)
                if nobj1 < 0:
                    err = 1
                    break
                blended = nobj1 > 1
                if nobj1 == 1:
                    ostart[0] = 0
                    ostart[1] = n
                else:
                    _regroup(&pix_y[base], &pix_x[base], n, nobj1, s.pixobj, ostart, ty, tx)
                    for o in range(nobj1):
                        for i in range(base + ostart[o], base + ostart[o + 1]):
                            segm[pix_y[i], pix_x[i]] = <int32_t>(-(o + 1))
                # second pass: each part on the unfiltered image, for close pairs the filter merged
                for o in range(nobj1):
                    ob = base + ostart[o]
                    on = ostart[o + 1] - ostart[o]
                    label = <int32_t>(c + 1) if nobj1 == 1 else <int32_t>(-(o + 1))
                    nobj2 = _split(det, sub, rms, True, segm, &pix_y[ob], &pix_x[ob], on, label, thresh,
                                   nthresh, mincont, minrise, s2, &s)
                    if nobj2 < 0:
                        err = 1
                        break
                    if nobj2 == 1:
                        obj_start[g] = ob
                        g += 1
                        continue
                    blended = True
                    _regroup(&pix_y[ob], &pix_x[ob], on, nobj2, s.pixobj, ostart2, ty, tx)
                    for j in range(nobj2):
                        obj_start[g] = ob + ostart2[j]
                        g += 1
                if err:
                    break
                obj_start[g] = base + n
                for j in range(gstart, g):
                    obj_comp[j] = <int32_t>c
                    obj_blended[j] = blended
                    for i in range(obj_start[j], obj_start[j + 1]):
                        segm[pix_y[i], pix_x[i]] = <int32_t>(j + 1)
            obj_start[g] = start[ncomp]
        if err:
            raise MemoryError()
    finally:
        free(s.pv)
        free(s.uf)
        free(s.size)
        free(s.usum)
        free(s.done)
        free(s.active)
        free(s.rootnode)
        free(s.pixnode)
        free(s.pixobj)
        free(s.val)
        free(s.umax)
        free(s.nodes)
        free(s.lidx)
        free(ty)
        free(tx)
        free(ostart)
        free(ostart2)
    return g


# ---------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------

# _value(): what a pixel gave
cdef enum:
    V_VALID = 1        # a value was returned (the pixel's own or its mirror's)
    V_NEIGHBOUR = 2    # the pixel belongs to another object
    V_EXCLUDED = 4     # the pixel is EXCLUDED
    V_OFF = 8          # the pixel is off the image

# 5 x 5 sub-pixel samples of the aperture (as sep's default subpix=5)
cdef int SUBPIX = 5
# radius**2 bins of the growth curve (flux_radius)
cdef int NGROWTH = 256


cdef inline bint _clean(const uint8_t[:, ::1] code, const int32_t[:, ::1] segm, Py_ssize_t y, Py_ssize_t x,
                        int32_t own) noexcept nogil:
    cdef int32_t sg = segm[y, x]
    return not (code[y, x] & C_EXCLUDED) and (sg == 0 or sg == own)


cdef inline double _pixvar(const float[:, ::1] var, bint have_var, const float[:, ::1] rms,
                           double inv_gain, Py_ssize_t y, Py_ssize_t x, double v) noexcept nogil:
    """Variance [DN^2] of pixel (y, x) of background-subtracted value v: ``var`` where given and finite,
    else ``rms**2 + max(v, 0) * inv_gain``."""
    cdef double r
    if have_var and isfinite(var[y, x]):
        return var[y, x]
    r = rms[y, x]
    return r * r + (v * inv_gain if v > 0.0 else 0.0)


cdef inline int _value(const float[:, ::1] sub, const float[:, ::1] var, bint have_var,
                       const float[:, ::1] rms, double inv_gain, const uint8_t[:, ::1] code,
                       const int32_t[:, ::1] segm, int32_t own, Py_ssize_t y, Py_ssize_t x, Py_ssize_t yc2,
                       Py_ssize_t xc2, double* val, double* vv) noexcept nogil:
    """Value and variance of pixel (y, x) as object ``own`` sees it: a pixel of another object or an
    EXCLUDED one is replaced by its mirror about (xc2 / 2, yc2 / 2) when that one is clean (SExtractor's
    MASK_TYPE CORRECT), else gives nothing. Returns V_* bits."""
    cdef Py_ssize_t ny = sub.shape[0], nx = sub.shape[1]
    cdef int res = 0
    cdef double v
    if y < 0 or y >= ny or x < 0 or x >= nx:
        return V_OFF
    if not _clean(code, segm, y, x, own):
        res = V_EXCLUDED if code[y, x] & C_EXCLUDED else V_NEIGHBOUR
        y = yc2 - y
        x = xc2 - x
        if y < 0 or y >= ny or x < 0 or x >= nx or not _clean(code, segm, y, x, own):
            return res
    v = sub[y, x]
    val[0] = v
    vv[0] = _pixvar(var, have_var, rms, inv_gain, y, x, v)
    return res | V_VALID


cdef void _measure_one(const float[:, ::1] sub, const float[:, ::1] var, bint have_var,
                       const float[:, ::1] rms, double inv_gain, const uint8_t[:, ::1] code,
                       const int32_t[:, ::1] segm, int32_t own, const int32_t* py, const int32_t* px,
                       Py_ssize_t n, double fthresh, double aper_radius, double sw_default, double sw_min,
                       double sw_max, int maxiter, double minstep, double* out, int32_t* flags,
                       double* growth, double* wx) noexcept nogil:
    cdef Py_ssize_t ny = sub.shape[0], nx = sub.shape[1], i, y, x, yy, xx, ylo, yhi, xlo, xhi, xc2, yc2
    cdef int res, it, a, b, g, niter = 0
    cdef double k
    cdef int32_t f = 0
    cdef double x0 = px[0], y0 = py[0], I = 0.0, vv = 0.0, S = 0.0, Sx = 0.0, Sy = 0.0, Sxx = 0.0, Syy = 0.0
    cdef double Sxy = 0.0, V = 0.0, peak = -INFINITY, xpk = 0.0, ypk = 0.0, mx, my, x2, y2, xy
    cdef double xiso, yiso, dx, dy, d2, R2, Fa = 0.0, Va = 0.0, sub_w, ox, oy, half, cum, r50, sw
    cdef double xw, yw, rad2, w, Sw, SwX, SwY, Ex2, Ey2, Exy, ddx, ddy, inv2s2
    cdef double ex2_iso = 0.0, ey2_iso = 0.0, exy_iso = 0.0, gscale, wy, lev0, t, fwhm
    cdef double fs, fsx, fsxx, fsy, fsxy
    cdef double sx2[5]
    cdef bint ok, converged
    # isophotal quantities over the footprint
    for i in range(n):
        y = py[i]
        x = px[i]
        I = sub[y, x]
        dx = x - x0
        dy = y - y0
        S += I
        Sx += I * dx
        Sy += I * dy
        Sxx += I * dx * dx
        Syy += I * dy * dy
        Sxy += I * dx * dy
        V += _pixvar(var, have_var, rms, inv_gain, y, x, I)
        if I > peak:
            peak = I
            xpk = x
            ypk = y
        if code[y, x] & C_SATURATED:
            f = f | F_SATURATED
        if y == 0 or y == ny - 1 or x == 0 or x == nx - 1:
            f = f | F_TRUNCATED
        for yy in range(max(y - 1, 0), min(y + 2, ny)):
            for xx in range(max(x - 1, 0), min(x + 2, nx)):
                if code[yy, xx] & C_EXCLUDED:
                    f = f | F_INCOMPLETE
    ok = S > 0.0
    if ok:
        mx = Sx / S
        my = Sy / S
        x2 = Sxx / S - mx * mx
        y2 = Syy / S - my * my
        xy = Sxy / S - mx * my
        ok = x2 >= 0.0 and y2 >= 0.0
    if not ok:
        # no positive flux: the unweighted footprint
        Sx = 0.0
        Sy = 0.0
        Sxx = 0.0
        Syy = 0.0
        Sxy = 0.0
        for i in range(n):
            dx = px[i] - x0
            dy = py[i] - y0
            Sx += dx
            Sy += dy
            Sxx += dx * dx
            Syy += dy * dy
            Sxy += dx * dy
        mx = Sx / n
        my = Sy / n
        x2 = Sxx / n - mx * mx
        y2 = Syy / n - my * my
        xy = Sxy / n - mx * my
    if x2 * y2 - xy * xy < 1.0 / 144.0:
        # a line or a single pixel: SExtractor's fix of singular moments
        x2 += 1.0 / 12.0
        y2 += 1.0 / 12.0
    xiso = x0 + mx
    yiso = y0 + my
    # isophotal position errors; SExtractor's FWHM_IMAGE: a fit of log(I) = c - k r**2 weighted by
    # I**2 over the unsaturated pixels above max(peak / 5, threshold), FWHM = 2 sqrt(ln 2 / k) less
    # 1 / (4 FWHM) (SExtractor's undersampling correction), k at least 1 / (13 a b)
    lev0 = peak / 5.0
    t = fthresh * rms[<Py_ssize_t>ypk, <Py_ssize_t>xpk]
    lev0 = lev0 if lev0 > t else t
    fs = fsx = fsxx = fsy = fsxy = 0.0
    for i in range(n):
        y = py[i]
        x = px[i]
        I = sub[y, x]
        vv = _pixvar(var, have_var, rms, inv_gain, y, x, I)
        dx = x - xiso
        dy = y - yiso
        ex2_iso += vv * dx * dx
        ey2_iso += vv * dy * dy
        exy_iso += vv * dx * dy
        if I > lev0 and lev0 > 0.0 and not (code[y, x] & C_SATURATED):
            d2 = dx * dx + dy * dy
            w = I * I
            t = log(I)
            fs += w
            fsx += d2 * w
            fsxx += d2 * d2 * w
            fsy += t * w
            fsxy += t * d2 * w
    if S > 0.0:
        ex2_iso /= S * S
        ey2_iso /= S * S
        exy_iso /= S * S
    else:
        ex2_iso = NAN
        ey2_iso = NAN
        exy_iso = NAN
    fwhm = NAN
    t = fs * fsxx - fsx * fsx
    if fabs(t) > 0.0:
        k = -(fs * fsxy - fsx * fsy) / t
        w = 1.0 / (13.0 * sqrt(x2 * y2 - xy * xy))
        k = k if k > w else w
        fwhm = 1.6651092223153954 / sqrt(k)
        fwhm -= 1.0 / (4.0 * fwhm)
    out[M_FWHM] = fwhm
    out[M_X_ISO] = xiso
    out[M_Y_ISO] = yiso
    out[M_X2] = x2
    out[M_Y2] = y2
    out[M_XY] = xy
    out[M_FLUX_ISO] = S
    out[M_VAR_ISO] = V
    out[M_PEAK] = peak
    out[M_NPIX] = n
    out[M_X_PEAK] = xpk
    out[M_Y_PEAK] = ypk
    # neighbours and excluded pixels are mirrored about the pixel nearest the barycentre
    xc2 = 2 * <Py_ssize_t>floor(xiso + 0.5)
    yc2 = 2 * <Py_ssize_t>floor(yiso + 0.5)
    # circular aperture about the barycentre, 5 x 5 sub-pixels; growth curve in radius**2
    R2 = aper_radius * aper_radius
    gscale = NGROWTH / R2
    for g in range(NGROWTH):
        growth[g] = 0.0
    ylo = <Py_ssize_t>floor(yiso - aper_radius + 0.5)
    yhi = <Py_ssize_t>floor(yiso + aper_radius + 0.5)
    xlo = <Py_ssize_t>floor(xiso - aper_radius + 0.5)
    xhi = <Py_ssize_t>floor(xiso + aper_radius + 0.5)
    for y in range(ylo, yhi + 1):
        for x in range(xlo, xhi + 1):
            dx = x - xiso
            dy = y - yiso
            # the pixel's nearest point to the centre must be inside the circle
            ox = fabs(dx) - 0.5
            oy = fabs(dy) - 0.5
            ox = ox if ox > 0.0 else 0.0
            oy = oy if oy > 0.0 else 0.0
            if ox * ox + oy * oy >= R2:
                continue
            res = _value(sub, var, have_var, rms, inv_gain, code, segm, own, y, x, yc2, xc2, &I, &vv)
            if res & V_NEIGHBOUR:
                f = f | F_NEIGHBOURS
            if res & (V_EXCLUDED | V_OFF):
                f = f | F_INCOMPLETE
            if not (res & V_VALID):
                continue
            ox = fabs(dx) + 0.5
            oy = fabs(dy) + 0.5
            if ox * ox + oy * oy <= R2:
                # wholly inside: 3 x 3 samples are enough for the growth curve
                Fa += I
                Va += vv
                for a in range(3):
                    oy = dy + (a - 1) / 3.0
                    for b in range(3):
                        ox = dx + (b - 1) / 3.0
                        g = <int>((ox * ox + oy * oy) * gscale)
                        growth[g if g < NGROWTH else NGROWTH - 1] += I / 9.0
                continue
            # on the edge of the circle: the fraction of 5 x 5 sub-pixels inside; in the growth curve
            # at the pixel's centre (the edge is far outside the half-flux radius of a point source)
            g = 0
            for b in range(SUBPIX):
                ox = dx + (b - (SUBPIX - 1) * 0.5) / SUBPIX
                sx2[b] = ox * ox
            for a in range(SUBPIX):
                oy = dy + (a - (SUBPIX - 1) * 0.5) / SUBPIX
                oy = oy * oy
                for b in range(SUBPIX):
                    g += (sx2[b] + oy) < R2
            if g == 0:
                continue
            sub_w = <double>g / (SUBPIX * SUBPIX)
            Fa += sub_w * I
            Va += sub_w * vv
            d2 = dx * dx + dy * dy
            g = <int>(d2 * gscale)
            growth[g if g < NGROWTH else NGROWTH - 1] += sub_w * I
    out[M_FLUX_APER] = Fa
    out[M_VAR_APER] = Va
    # half-flux radius of the aperture's growth curve (linear in radius**2 within a bin)
    r50 = NAN
    if Fa > 0.0:
        half = 0.5 * Fa
        cum = 0.0
        for g in range(NGROWTH):
            if growth[g] > 0.0 and cum + growth[g] >= half:
                r50 = sqrt((g + (half - cum) / growth[g]) / NGROWTH * R2)
                break
            cum += growth[g]
    out[M_FLUX_RADIUS] = r50
    # windowed centroid (SExtractor XWIN_IMAGE): Gaussian window of sigma 2 r50 / 2.355
    sw = 2.0 * r50 / 2.3548200450309493 if isfinite(r50) else sw_default
    sw = sw if sw > sw_min else sw_min
    sw = sw if sw < sw_max else sw_max
    inv2s2 = 0.5 / (sw * sw)
    rad2 = 16.0 * sw * sw
    xw = xiso
    yw = yiso
    converged = False
    Sw = 0.0
    Ex2 = Ey2 = Exy = 0.0
    for it in range(maxiter):
        Sw = SwX = SwY = Ex2 = Ey2 = Exy = 0.0
        ylo = <Py_ssize_t>floor(yw - 4.0 * sw + 0.5)
        yhi = <Py_ssize_t>floor(yw + 4.0 * sw + 0.5)
        xlo = <Py_ssize_t>floor(xw - 4.0 * sw + 0.5)
        xhi = <Py_ssize_t>floor(xw + 4.0 * sw + 0.5)
        for x in range(xlo, xhi + 1):
            dx = x - xw
            wx[x - xlo] = exp(-dx * dx * inv2s2)
        for y in range(ylo, yhi + 1):
            dy = y - yw
            wy = exp(-dy * dy * inv2s2)
            for x in range(xlo, xhi + 1):
                dx = x - xw
                d2 = dx * dx + dy * dy
                if d2 >= rad2:
                    continue
                res = _value(sub, var, have_var, rms, inv_gain, code, segm, own, y, x, yc2, xc2, &I, &vv)
                if not (res & V_VALID):
                    continue
                w = wy * wx[x - xlo]
                Sw += w * I
                SwX += w * I * dx
                SwY += w * I * dy
                Ex2 += w * w * vv * dx * dx
                Ey2 += w * w * vv * dy * dy
                Exy += w * w * vv * dx * dy
        niter = it + 1
        if not (Sw > 0.0):
            break
        ddx = 2.0 * SwX / Sw
        ddy = 2.0 * SwY / Sw
        xw += ddx
        yw += ddy
        if ddx * ddx + ddy * ddy < minstep * minstep:
            converged = True
            break
    dx = xw - xiso
    dy = yw - yiso
    if not (Sw > 0.0) or not converged or dx * dx + dy * dy > 4.0 * sw * sw:
        f = f | F_WIN_FALLBACK
        out[M_X_WIN] = xiso
        out[M_Y_WIN] = yiso
        out[M_ERRX2] = ex2_iso
        out[M_ERRY2] = ey2_iso
        out[M_ERRXY] = exy_iso
    else:
        out[M_X_WIN] = xw
        out[M_Y_WIN] = yw
        out[M_ERRX2] = 4.0 * Ex2 / (Sw * Sw)
        out[M_ERRY2] = 4.0 * Ey2 / (Sw * Sw)
        out[M_ERRXY] = 4.0 * Exy / (Sw * Sw)
    out[M_SIGMA_WIN] = sw
    out[M_NITER] = niter
    flags[0] = f


def measure(const float[:, ::1] sub, const float[:, ::1] var, bint have_var, const float[:, ::1] rms,
            double inv_gain, const uint8_t[:, ::1] code, const int32_t[:, ::1] segm,
            const int64_t[::1] obj_start, const int32_t[::1] pix_y, const int32_t[::1] pix_x,
            const uint8_t[::1] obj_blended, double fthresh, double aper_radius, double sw_default,
            double sw_min, double sw_max, int maxiter, double minstep, Py_ssize_t j0, Py_ssize_t j1,
            double[:, ::1] out, int32_t[::1] flags):
    """Measure objects j0:j1 of `deblend` into ``out[j]`` (columns M_*) and ``flags[j]``.

    ``var`` is the variance image [DN^2] when ``have_var`` (any float32 image of the right shape
    otherwise); where it is not used or not finite the variance is ``rms**2 + max(value, 0) * inv_gain``.
    ``fthresh`` [sigma] times the rms at the peak is the lowest level of the FWHM fit.
    """
    cdef Py_ssize_t j, base
    cdef double* growth = <double*>malloc(NGROWTH * sizeof(double))
    cdef double* wx = <double*>malloc((<Py_ssize_t>(8.0 * sw_max) + 4) * sizeof(double))
    if growth == NULL or wx == NULL:
        free(growth)
        free(wx)
        raise MemoryError()
    with nogil:
        for j in range(j0, j1):
            base = obj_start[j]
            _measure_one(sub, var, have_var, rms, inv_gain, code, segm, <int32_t>(j + 1), &pix_y[base],
                         &pix_x[base], obj_start[j + 1] - base, fthresh, aper_radius, sw_default, sw_min, sw_max,
                         maxiter, minstep, &out[j, 0], &flags[j], growth, wx)
            if obj_blended[j]:
                flags[j] = flags[j] | F_BLENDED
    free(growth)
    free(wx)
