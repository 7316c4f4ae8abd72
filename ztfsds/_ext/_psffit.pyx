# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""PSF-fit and forced photometry kernels.

Private: call them through `ztfsds.photom.psffit`, which checks dtypes, contiguity and shapes once.
The pure numpy equivalents are in `ztfsds._ext.reference_psffit` (same names); the tests check that both
agree. Every batch loop runs without the GIL; every scratch buffer belongs to one call.

Model of a source of flux ``F`` at ``(x, y)``: the value at pixel ``(px, py)`` is ``F * P`` with ``P`` the
Keys bicubic (a = -0.5) interpolation of the source's oversampled PSF grid ``g`` (``S x S`` nodes, centre
node ``H = S // 2``) at ``(H + (py - y) * ovs, H + (px - x) * ovs)`` (row, col); nodes outside the grid are
zero. ``grids`` holds one grid per source, or one shared by all (``shared``).

Pixel codes (``code``, uint8): bit 1 unusable (masked, non-finite), bit 2 saturated.
"""

import numpy as np

from libc.math cimport sqrt, floor, fabs, isfinite, NAN, lround, ceil
from libc.stdint cimport uint8_t, int32_t, int64_t
from libc.stdlib cimport malloc, free

# columns of the float64 ``out`` array of fit_groups / forced_fit
cpdef enum:
    O_X_ERR = 0
    O_Y_ERR
    O_FLUX_ERR
    O_CHI2
    O_SHARP
    O_NPIX
    O_NBAD
    O_NITER
    O_NOUT
    O_BADFRAC
    N_OUT

# flag bits (their public meaning is in ztfsds.photom.psffit.PSFFitFlags / ForcedPhotFlags)
cpdef enum:
    F_MASKED = 1
    F_SATURATED = 2
    F_EDGE = 4
    F_NOT_CONVERGED = 8
    F_MOVED = 16
    F_NONPOSITIVE = 32
    F_GROUP_SPLIT = 64
    F_FAILED = 128
    F_FIXED_POSITION = 256

cpdef enum:
    FF_OFF_IMAGE = 1
    FF_TOO_MANY_BAD = 2
    FF_SOME_BAD = 4
    FF_EDGE = 8
    FF_NONPOSITIVE = 16

cdef enum:
    C_BAD = 1
    C_SAT = 2

#: fewest usable pixels for a fit of the position (fewer: the flux alone is fitted)
cdef int MIN_PIX_POSITION = 5
#: largest position step of the first Gauss-Newton iteration [px] (halved at every change of sign)
cdef double MAX_STEP = 0.5

# the same, for Python (the reference implementation)
CODE_BAD = C_BAD
CODE_SATURATED = C_SAT
MIN_PIX_POSITION_FIT = MIN_PIX_POSITION
MAX_STEP_PX = MAX_STEP


# ---------------------------------------------------------------------------------------------------
# interpolation
# ---------------------------------------------------------------------------------------------------

cdef inline Py_ssize_t keys4(double t, double* w, double* dw) noexcept nogil:
    """First node of the four and the Keys weights (and their derivatives in t) at grid coordinate t."""
    cdef double f = floor(t)
    cdef double s = t - f
    cdef double d, ad
    cdef int k
    for k in range(4):
        d = s + 1.0 - k
        ad = fabs(d)
        if ad <= 1.0:
            w[k] = (1.5 * ad - 2.5) * ad * ad + 1.0
            dw[k] = (4.5 * ad - 5.0) * ad
        elif ad < 2.0:
            w[k] = ((-0.5 * ad + 2.5) * ad - 4.0) * ad + 2.0
            dw[k] = (-1.5 * ad + 5.0) * ad - 4.0
        else:
            w[k] = 0.0
            dw[k] = 0.0
        if d < 0.0:
            dw[k] = -dw[k]
    return <Py_ssize_t>f - 1


cdef inline void interp(const float* g, Py_ssize_t S, double tx, double ty, double* v, double* vx,
                        double* vy) noexcept nogil:
    """Value and derivatives (per grid unit in tx, ty) of the grid g at (row ty, col tx)."""
    cdef double wx[4]
    cdef double dwx[4]
    cdef double wy[4]
    cdef double dwy[4]
    cdef Py_ssize_t ix = keys4(tx, wx, dwx)
    cdef Py_ssize_t iy = keys4(ty, wy, dwy)
    cdef Py_ssize_t a, b, r, c
    cdef double s0, s1, gv
    cdef const float* row
    v[0] = 0.0
    vx[0] = 0.0
    vy[0] = 0.0
    for a in range(4):
        r = iy + a
        if r < 0 or r >= S:
            continue
        row = g + r * S
        s0 = 0.0
        s1 = 0.0
        for b in range(4):
            c = ix + b
            if c < 0 or c >= S:
                continue
            gv = row[c]
            s0 += wx[b] * gv
            s1 += dwx[b] * gv
        v[0] += wy[a] * s0
        vx[0] += wy[a] * s1
        vy[0] += dwy[a] * s0


# ---------------------------------------------------------------------------------------------------
# PSF grids and model stamps
# ---------------------------------------------------------------------------------------------------

def psf_grids(const double[:, :, ::1] block, const double[:, ::1] terms, Py_ssize_t lo, Py_ssize_t hi,
              float[:, :, ::1] out):
    """``out[n] = sum_k terms[n, k] * block[k]``: each source's PSF grid (float32), evaluated once.

    ``block[k]`` for ``k >= 1`` must be zero outside rows and columns ``lo .. hi - 1`` (the varying core):
    there ``out[n]`` is ``terms[n, 0] * block[0]``.
    """
    cdef Py_ssize_t n = terms.shape[0], K = terms.shape[1], S = block.shape[1]
    cdef Py_ssize_t i, k, j, r
    cdef double t
    cdef double* acc = <double*>malloc(S * S * sizeof(double))
    if acc == NULL:
        raise MemoryError("psf_grids: scratch allocation failed")
    try:
        with nogil:
            for i in range(n):
                t = terms[i, 0]
                for j in range(S * S):
                    acc[j] = t * (&block[0, 0, 0])[j]
                for k in range(1, K):
                    t = terms[i, k]
                    for r in range(lo, hi):
                        for j in range(lo, hi):
                            acc[r * S + j] += t * block[k, r, j]
                for j in range(S * S):
                    (&out[i, 0, 0])[j] = <float>acc[j]
    finally:
        free(acc)


cdef inline const float* grid_of(const float* grids, int shared, Py_ssize_t S, Py_ssize_t i) noexcept nogil:
    if shared:
        return grids
    return grids + i * S * S


cdef void render(const float* g, Py_ssize_t S, int ovs, double x, double y, double flux, Py_ssize_t bx0,
                 Py_ssize_t by0, int B, float* stamp) noexcept nogil:
    """``stamp`` (B x B from pixel (bx0, by0)) = flux * P; zeros when the flux is not finite."""
    cdef Py_ssize_t i, j
    cdef double H = <double>(S // 2)
    cdef double v, vx, vy
    for i in range(B):
        for j in range(B):
            if isfinite(flux):
                interp(g, S, H + (bx0 + j - x) * ovs, H + (by0 + i - y) * ovs, &v, &vx, &vy)
                stamp[i * B + j] = <float>(flux * v)
            else:
                stamp[i * B + j] = 0.0


cdef void apply_stamp(float* resid, Py_ssize_t ny, Py_ssize_t nx, const float* stamp, Py_ssize_t bx0,
                      Py_ssize_t by0, int B, float sign) noexcept nogil:
    cdef Py_ssize_t i, j, py, px
    for i in range(B):
        py = by0 + i
        if py < 0 or py >= ny:
            continue
        for j in range(B):
            px = bx0 + j
            if px < 0 or px >= nx:
                continue
            resid[py * nx + px] += sign * stamp[i * B + j]


def render_subtract(const float[:, :, ::1] grids, int ovs, const double[::1] x0, const double[::1] y0,
                    const double[::1] x, const double[::1] y, const double[::1] flux, int Rm,
                    float[:, ::1] stamps, float[:, ::1] resid):
    """Render every source's model stamp (box of half-width Rm round its rounded initial position) into
    ``stamps`` and subtract it from ``resid``."""
    cdef Py_ssize_t n = x.shape[0], i, bx0, by0
    cdef Py_ssize_t S = grids.shape[1], ny = resid.shape[0], nx = resid.shape[1]
    cdef int shared = grids.shape[0] == 1
    cdef int B = 2 * Rm + 1
    with nogil:
        for i in range(n):
            bx0 = lround(x0[i]) - Rm
            by0 = lround(y0[i]) - Rm
            render(grid_of(&grids[0, 0, 0], shared, S, i), S, ovs, x[i], y[i], flux[i], bx0, by0, B,
                   &stamps[i, 0])
            apply_stamp(&resid[0, 0], ny, nx, &stamps[i, 0], bx0, by0, B, -1.0)


# ---------------------------------------------------------------------------------------------------
# linear algebra (small dense symmetric positive definite systems)
# ---------------------------------------------------------------------------------------------------

cdef int cholesky(double* A, Py_ssize_t n) noexcept nogil:
    """In-place lower Cholesky factor of the n x n row-major A; 1 on failure (not positive definite)."""
    cdef Py_ssize_t i, j, k
    cdef double s
    for j in range(n):
        s = A[j * n + j]
        for k in range(j):
            s -= A[j * n + k] * A[j * n + k]
        if not (s > 0.0):
            return 1
        s = sqrt(s)
        A[j * n + j] = s
        for i in range(j + 1, n):
            A[i * n + j] = A[i * n + j]
            for k in range(j):
                A[i * n + j] -= A[i * n + k] * A[j * n + k]
            A[i * n + j] /= s
    return 0


cdef void chol_solve(const double* L, Py_ssize_t n, double* b) noexcept nogil:
    cdef Py_ssize_t i, k
    for i in range(n):
        for k in range(i):
            b[i] -= L[i * n + k] * b[k]
        b[i] /= L[i * n + i]
    for i in range(n - 1, -1, -1):
        for k in range(i + 1, n):
            b[i] -= L[k * n + i] * b[k]
        b[i] /= L[i * n + i]


# ---------------------------------------------------------------------------------------------------
# group fit
# ---------------------------------------------------------------------------------------------------

cdef struct Ctx:
    const float* data
    float* resid
    const uint8_t* code
    const float* rms2
    int rms_map
    Py_ssize_t ny
    Py_ssize_t nx
    double inv_gain
    double perr2
    const float* grids
    int shared
    Py_ssize_t S
    int ovs
    const double* x0
    const double* y0
    double* x
    double* y
    double* flux
    float* stamps
    int Rm
    double fit_radius
    double max_shift
    int niter
    int recentre
    double tol
    double* out
    int32_t* flags


cdef struct Scratch:
    Py_ssize_t* pix          # pixel index py * nx + px
    double* prv              # resid with the group added back
    double* pmo              # model of the other sources (data - resid)
    double* pv0              # background variance
    double* jac              # (npix, G, 3): P, dP/dox, dP/doy of each member (0 where not covered)
    double* N
    double* L
    double* b
    double* step
    int* free_
    Py_ssize_t* fidx
    double* sums             # per member: chi2, S_rt, S_tt, S_tp, S_pp, S_rp
    double* clamp            # per member and axis: largest position step [px]
    double* prev             # per member and axis: the previous position step [px]
    Py_ssize_t* ix0
    Py_ssize_t* iy0
    int* active
    int* npix_own


cdef Py_ssize_t collect_pixels(Ctx* c, const int64_t* mem, Py_ssize_t G, Scratch* s) noexcept nogil:
    """The group's fit pixels (the union of the members' fit circles, usable pixels only) and each
    member's npix, nbad, edge and saturation flags."""
    cdef Py_ssize_t k, i, px, py, npx = 0, xlo, xhi, ylo, yhi
    cdef int h = <int>ceil(c.fit_radius)
    cdef double r2 = c.fit_radius * c.fit_radius, dx, dy
    cdef int inside, cd
    xlo = s.ix0[0] - h
    xhi = s.ix0[0] + h
    ylo = s.iy0[0] - h
    yhi = s.iy0[0] + h
    for k in range(G):
        xlo = min(xlo, s.ix0[k] - h)
        xhi = max(xhi, s.ix0[k] + h)
        ylo = min(ylo, s.iy0[k] - h)
        yhi = max(yhi, s.iy0[k] + h)
    for py in range(ylo, yhi + 1):
        for px in range(xlo, xhi + 1):
            inside = 0
            for k in range(G):
                dx = px - c.x0[mem[k]]
                dy = py - c.y0[mem[k]]
                if dx * dx + dy * dy > r2:
                    continue
                if px < 0 or px >= c.nx or py < 0 or py >= c.ny:
                    c.flags[mem[k]] |= F_EDGE
                    continue
                cd = c.code[py * c.nx + px]
                if cd & C_SAT:
                    c.flags[mem[k]] |= F_SATURATED
                if cd & C_BAD:
                    c.out[mem[k] * N_OUT + O_NBAD] += 1.0
                    c.flags[mem[k]] |= F_MASKED
                    continue
                s.npix_own[k] += 1
                inside = 1
            if inside:
                s.pix[npx] = py * c.nx + px
                npx += 1
    return npx


cdef void accumulate(Ctx* c, const int64_t* mem, Py_ssize_t G, Py_ssize_t npx, Scratch* s,
                     int stats) noexcept nogil:
    """Normal matrix N and right-hand side b of the group at the current parameters; with ``stats``, each
    member's chi2 and sharpness sums over its own fit pixels."""
    cdef Py_ssize_t p, k, q, i, j, P3 = 3 * G, px, py, idx
    cdef double H = <double>(c.S // 2), v, vx, vy, m, r, w, dx, dy, t, mt, ovs = c.ovs
    cdef double r2 = c.fit_radius * c.fit_radius
    cdef double* J
    cdef double* sm
    cdef double jrow[3]
    for i in range(P3 * P3):
        s.N[i] = 0.0
    for i in range(P3):
        s.b[i] = 0.0
    if stats:
        for i in range(6 * G):
            s.sums[i] = 0.0
    for p in range(npx):
        idx = s.pix[p]
        py = idx // c.nx
        px = idx - py * c.nx
        J = s.jac + p * P3
        m = 0.0
        for k in range(G):
            i = mem[k]
            if (not s.active[k] or px - s.ix0[k] > c.Rm or s.ix0[k] - px > c.Rm or py - s.iy0[k] > c.Rm
                    or s.iy0[k] - py > c.Rm):
                J[3 * k] = 0.0
                J[3 * k + 1] = 0.0
                J[3 * k + 2] = 0.0
                continue
            interp(grid_of(c.grids, c.shared, c.S, i), c.S, H + (px - c.x[i]) * ovs, H + (py - c.y[i]) * ovs,
                   &v, &vx, &vy)
            J[3 * k] = v
            J[3 * k + 1] = vx * ovs
            J[3 * k + 2] = vy * ovs
            m += c.flux[i] * v
        r = s.prv[p] - m
        mt = s.pmo[p] + m if s.pmo[p] + m > 0.0 else 0.0
        w = 1.0 / (s.pv0[p] + mt * c.inv_gain + c.perr2 * mt * mt)
        # Jacobian of the model: (P, -F dP/dox, -F dP/doy); N = J^T W J, b = J^T W r
        for k in range(G):
            if J[3 * k] == 0.0 and J[3 * k + 1] == 0.0 and J[3 * k + 2] == 0.0:
                continue
            i = mem[k]
            jrow[0] = J[3 * k]
            jrow[1] = -c.flux[i] * J[3 * k + 1]
            jrow[2] = -c.flux[i] * J[3 * k + 2]
            for j in range(3):
                s.b[3 * k + j] += w * jrow[j] * r
            for q in range(G):
                if J[3 * q] == 0.0 and J[3 * q + 1] == 0.0 and J[3 * q + 2] == 0.0:
                    continue
                for j in range(3):
                    s.N[(3 * k + j) * P3 + 3 * q] += w * jrow[j] * J[3 * q]
                    s.N[(3 * k + j) * P3 + 3 * q + 1] -= w * jrow[j] * c.flux[mem[q]] * J[3 * q + 1]
                    s.N[(3 * k + j) * P3 + 3 * q + 2] -= w * jrow[j] * c.flux[mem[q]] * J[3 * q + 2]
            if stats:
                dx = px - c.x[i]
                dy = py - c.y[i]
                if (px - c.x0[i]) * (px - c.x0[i]) + (py - c.y0[i]) * (py - c.y0[i]) <= r2:
                    # sharpness template: the change of the PSF when it narrows (width * (1 - e))
                    t = 2.0 * J[3 * k] + dx * J[3 * k + 1] + dy * J[3 * k + 2]
                    sm = s.sums + 6 * k
                    sm[0] += w * r * r
                    sm[1] += w * r * t
                    sm[2] += w * t * t
                    sm[3] += w * t * J[3 * k]
                    sm[4] += w * J[3 * k] * J[3 * k]
                    sm[5] += w * r * J[3 * k]


cdef int solve_free(Ctx* c, Py_ssize_t G, Scratch* s, int inverse_diag) noexcept nogil:
    """Solve the free block of N step = b (frozen parameters: step 0); with ``inverse_diag`` put the
    diagonal of the free block's inverse in ``step`` instead. 1 if the block is singular."""
    cdef Py_ssize_t P3 = 3 * G, nf = 0, i, j
    for i in range(P3):
        if s.free_[i]:
            s.fidx[nf] = i
            nf += 1
    if nf == 0:
        for i in range(P3):
            s.step[i] = 0.0
        return 0
    for i in range(nf):
        for j in range(nf):
            s.L[i * nf + j] = s.N[s.fidx[i] * P3 + s.fidx[j]]
    if cholesky(s.L, nf):
        # a tiny ridge for a nearly degenerate blend; a second failure is reported
        for i in range(nf):
            for j in range(nf):
                s.L[i * nf + j] = s.N[s.fidx[i] * P3 + s.fidx[j]]
            s.L[i * nf + i] *= 1.0 + 1e-9
        if cholesky(s.L, nf):
            return 1
    for i in range(P3):
        s.step[i] = NAN if inverse_diag else 0.0
    cdef double* e = s.b + P3     # second half of b is scratch
    if inverse_diag:
        for i in range(nf):
            for j in range(nf):
                e[j] = 1.0 if i == j else 0.0
            chol_solve(s.L, nf, e)
            s.step[s.fidx[i]] = e[i]
    else:
        for i in range(nf):
            e[i] = s.b[s.fidx[i]]
        chol_solve(s.L, nf, e)
        for i in range(nf):
            s.step[s.fidx[i]] = e[i]
    return 0


cdef void fit_group(Ctx* c, const int64_t* mem, Py_ssize_t G, Scratch* s) noexcept nogil:
    cdef Py_ssize_t k, i, p, npx, P3 = 3 * G, idx
    cdef int B = 2 * c.Rm + 1, it = 0, conv = 0, reset, fail
    cdef double H = <double>(c.S // 2), v, vx, vy, num, den, dmax, d, nfree, a, dt, ovs = c.ovs
    cdef double* sm
    for k in range(G):
        i = mem[k]
        s.ix0[k] = lround(c.x0[i])
        s.iy0[k] = lround(c.y0[i])
        s.npix_own[k] = 0
        c.flags[i] &= ~(F_NOT_CONVERGED | F_FAILED | F_MASKED | F_SATURATED | F_EDGE | F_NONPOSITIVE)
        c.out[i * N_OUT + O_NBAD] = 0.0
        apply_stamp(c.resid, c.ny, c.nx, c.stamps + i * B * B, s.ix0[k] - c.Rm, s.iy0[k] - c.Rm, B, 1.0)
    npx = collect_pixels(c, mem, G, s)
    for p in range(npx):
        idx = s.pix[p]
        s.prv[p] = c.resid[idx]
        s.pmo[p] = c.data[idx] - c.resid[idx]
        s.pv0[p] = c.rms2[idx] if c.rms_map else c.rms2[0]
    for k in range(G):
        i = mem[k]
        s.active[k] = s.npix_own[k] > 0
        if s.npix_own[k] < MIN_PIX_POSITION and c.recentre and not (c.flags[i] & F_MOVED):
            c.flags[i] |= F_FIXED_POSITION
        if s.active[k] and not isfinite(c.flux[i]):
            # a first flux: unweighted linear fit at the initial position over the member's own pixels
            num = 0.0
            den = 0.0
            for p in range(npx):
                idx = s.pix[p]
                if (idx % c.nx - c.x0[i]) ** 2 + (idx // c.nx - c.y0[i]) ** 2 > c.fit_radius * c.fit_radius:
                    continue
                interp(grid_of(c.grids, c.shared, c.S, i), c.S, H + (idx % c.nx - c.x[i]) * ovs,
                       H + (idx // c.nx - c.y[i]) * ovs, &v, &vx, &vy)
                num += v * s.prv[p]
                den += v * v
            c.flux[i] = num / den if den > 0.0 else 0.0
        s.free_[3 * k] = s.active[k]
        s.free_[3 * k + 1] = s.active[k] and c.recentre and not (c.flags[i] & (F_MOVED | F_FIXED_POSITION))
        s.free_[3 * k + 2] = s.free_[3 * k + 1]
        s.clamp[2 * k] = MAX_STEP
        s.clamp[2 * k + 1] = MAX_STEP
        s.prev[2 * k] = 0.0
        s.prev[2 * k + 1] = 0.0
    while True:
        accumulate(c, mem, G, npx, s, conv or it >= c.niter)
        if conv or it >= c.niter:
            break
        fail = solve_free(c, G, s, 0)
        if fail:
            break
        it += 1
        dmax = 0.0
        reset = 0
        for k in range(G):
            i = mem[k]
            # DAOPHOT's clamp: a position step is at most clamp, halved whenever the step changes sign
            for p in range(2):
                if s.free_[3 * k + 1 + p]:
                    dt = s.step[3 * k + 1 + p]
                    if dt * s.prev[2 * k + p] < 0.0:
                        s.clamp[2 * k + p] *= 0.5
                    s.prev[2 * k + p] = dt
                    s.step[3 * k + 1 + p] = (s.clamp[2 * k + p] if dt > s.clamp[2 * k + p] else (
                        -s.clamp[2 * k + p] if dt < -s.clamp[2 * k + p] else dt))
            for p in range(3):
                if s.free_[3 * k + p]:
                    d = fabs(s.step[3 * k + p]) * sqrt(s.N[(3 * k + p) * P3 + 3 * k + p])
                    dmax = d if d > dmax else dmax
            if not s.active[k]:
                continue
            c.flux[i] += s.step[3 * k]
            if s.free_[3 * k + 1]:
                c.x[i] += s.step[3 * k + 1]
                c.y[i] += s.step[3 * k + 2]
                if fabs(c.x[i] - c.x0[i]) > c.max_shift or fabs(c.y[i] - c.y0[i]) > c.max_shift:
                    c.flags[i] |= F_MOVED
                elif c.flux[i] <= 0.0:
                    c.flags[i] |= F_FIXED_POSITION
                if c.flags[i] & (F_MOVED | F_FIXED_POSITION):
                    # back to the given position and the flux alone
                    c.x[i] = c.x0[i]
                    c.y[i] = c.y0[i]
                    s.free_[3 * k + 1] = 0
                    s.free_[3 * k + 2] = 0
                    reset = 1
        conv = dmax < c.tol and not reset
    if not fail:
        fail = solve_free(c, G, s, 1)
    for k in range(G):
        i = mem[k]
        c.out[i * N_OUT + O_NPIX] = s.npix_own[k]
        c.out[i * N_OUT + O_NITER] += it
        if not s.active[k] or fail:
            c.flags[i] |= F_FAILED
            c.flux[i] = NAN
            for p in range(3):
                c.out[i * N_OUT + p] = NAN
            c.out[i * N_OUT + O_CHI2] = NAN
            c.out[i * N_OUT + O_SHARP] = NAN
            continue
        if not conv:
            c.flags[i] |= F_NOT_CONVERGED
        if c.flux[i] <= 0.0:
            c.flags[i] |= F_NONPOSITIVE
        c.out[i * N_OUT + O_FLUX_ERR] = sqrt(s.step[3 * k])
        c.out[i * N_OUT + O_X_ERR] = sqrt(s.step[3 * k + 1]) if s.free_[3 * k + 1] else NAN
        c.out[i * N_OUT + O_Y_ERR] = sqrt(s.step[3 * k + 2]) if s.free_[3 * k + 2] else NAN
        sm = s.sums + 6 * k
        nfree = s.free_[3 * k] + s.free_[3 * k + 1] + s.free_[3 * k + 2]
        c.out[i * N_OUT + O_CHI2] = sm[0] / (s.npix_own[k] - nfree) if s.npix_own[k] > nfree else NAN
        # sharpness: the weighted least-squares coefficient of the narrowing template, orthogonalised
        # to the PSF, per unit flux
        a = sm[2] - sm[3] * sm[3] / sm[4] if sm[4] > 0.0 else 0.0
        c.out[i * N_OUT + O_SHARP] = (sm[1] - sm[3] / sm[4] * sm[5]) / (c.flux[i] * a) if (
            a > 0.0 and c.flux[i] != 0.0) else NAN
    for k in range(G):
        i = mem[k]
        render(grid_of(c.grids, c.shared, c.S, i), c.S, c.ovs, c.x[i], c.y[i], c.flux[i],
               s.ix0[k] - c.Rm, s.iy0[k] - c.Rm, B, c.stamps + i * B * B)
        apply_stamp(c.resid, c.ny, c.nx, c.stamps + i * B * B, s.ix0[k] - c.Rm, s.iy0[k] - c.Rm, B, -1.0)


def fit_groups(const float[:, ::1] data, float[:, ::1] resid, const uint8_t[:, ::1] code,
               const float[:, ::1] rms2, double inv_gain, double psf_error, const float[:, :, ::1] grids,
               int ovs, const double[::1] x0, const double[::1] y0, double[::1] x, double[::1] y, double[::1] flux,
               float[:, ::1] stamps, int Rm, const int64_t[::1] group_start, const int64_t[::1] members,
               double fit_radius, double max_shift, int niter, bint recentre, double tol,
               double[:, ::1] out, int32_t[::1] flags):
    """One pass of the group fits over all groups (see `fit_group`); updates x, y, flux, stamps, resid,
    out and flags in place. ``out`` columns O_NBAD and O_NITER accumulate (NITER over the passes)."""
    cdef Ctx c
    cdef Scratch s
    cdef Py_ssize_t ng = group_start.shape[0] - 1, g, G, Gmax = 1, h = <Py_ssize_t>ceil(fit_radius)
    for g in range(ng):
        Gmax = max(Gmax, group_start[g + 1] - group_start[g])
    cdef Py_ssize_t maxpix = Gmax * (2 * h + 1) * (2 * h + 1)
    c.data = &data[0, 0]
    c.resid = &resid[0, 0]
    c.code = &code[0, 0]
    c.rms2 = &rms2[0, 0]
    c.rms_map = rms2.shape[0] > 1 or rms2.shape[1] > 1
    c.ny = data.shape[0]
    c.nx = data.shape[1]
    c.inv_gain = inv_gain
    c.perr2 = psf_error * psf_error
    c.grids = &grids[0, 0, 0]
    c.shared = grids.shape[0] == 1
    c.S = grids.shape[1]
    c.ovs = ovs
    c.x0 = &x0[0]
    c.y0 = &y0[0]
    c.x = &x[0]
    c.y = &y[0]
    c.flux = &flux[0]
    c.stamps = &stamps[0, 0]
    c.Rm = Rm
    c.fit_radius = fit_radius
    c.max_shift = max_shift
    c.niter = niter
    c.recentre = recentre
    c.tol = tol
    c.out = &out[0, 0]
    c.flags = &flags[0]
    s.pix = <Py_ssize_t*>malloc(maxpix * sizeof(Py_ssize_t))
    s.prv = <double*>malloc(maxpix * sizeof(double))
    s.pmo = <double*>malloc(maxpix * sizeof(double))
    s.pv0 = <double*>malloc(maxpix * sizeof(double))
    s.jac = <double*>malloc(maxpix * 3 * Gmax * sizeof(double))
    s.N = <double*>malloc(9 * Gmax * Gmax * sizeof(double))
    s.L = <double*>malloc(9 * Gmax * Gmax * sizeof(double))
    s.b = <double*>malloc(6 * Gmax * sizeof(double))
    s.step = <double*>malloc(3 * Gmax * sizeof(double))
    s.free_ = <int*>malloc(3 * Gmax * sizeof(int))
    s.fidx = <Py_ssize_t*>malloc(3 * Gmax * sizeof(Py_ssize_t))
    s.sums = <double*>malloc(6 * Gmax * sizeof(double))
    s.clamp = <double*>malloc(2 * Gmax * sizeof(double))
    s.prev = <double*>malloc(2 * Gmax * sizeof(double))
    s.ix0 = <Py_ssize_t*>malloc(Gmax * sizeof(Py_ssize_t))
    s.iy0 = <Py_ssize_t*>malloc(Gmax * sizeof(Py_ssize_t))
    s.active = <int*>malloc(Gmax * sizeof(int))
    s.npix_own = <int*>malloc(Gmax * sizeof(int))
    try:
        if (s.pix == NULL or s.prv == NULL or s.pmo == NULL or s.pv0 == NULL or s.jac == NULL or s.N == NULL
                or s.L == NULL or s.b == NULL or s.step == NULL or s.free_ == NULL or s.fidx == NULL
                or s.sums == NULL or s.clamp == NULL or s.prev == NULL or s.ix0 == NULL or s.iy0 == NULL or s.active == NULL
                or s.npix_own == NULL):
            raise MemoryError("fit_groups: scratch allocation failed")
        with nogil:
            for g in range(ng):
                G = group_start[g + 1] - group_start[g]
                if G > 0:
                    fit_group(&c, &members[group_start[g]], G, &s)
    finally:
        free(s.pix)
        free(s.prv)
        free(s.pmo)
        free(s.pv0)
        free(s.jac)
        free(s.N)
        free(s.L)
        free(s.b)
        free(s.step)
        free(s.free_)
        free(s.fidx)
        free(s.sums)
        free(s.clamp)
        free(s.prev)
        free(s.ix0)
        free(s.iy0)
        free(s.active)
        free(s.npix_own)


# ---------------------------------------------------------------------------------------------------
# forced photometry
# ---------------------------------------------------------------------------------------------------

def forced_fit(const float[:, ::1] data, const uint8_t[:, ::1] code, const float[:, ::1] var0,
               bint var_is_total, double inv_gain, const float[:, :, ::1] grids, int ovs,
               const double[::1] x, const double[::1] y, double fit_radius, double max_bad_frac,
               double[::1] flux, double[:, ::1] out, int32_t[::1] flags):
    """Weighted linear least-squares PSF amplitude at fixed positions.

    Variance per pixel: ``var0`` (a map, or 1 x 1 for a scalar); unless ``var_is_total`` (a varimg),
    plus ``max(F P, 0) * inv_gain`` (iterated three times from the background-only weights).
    """
    cdef Py_ssize_t n = x.shape[0], i, px, py, ny = data.shape[0], nx = data.shape[1]
    cdef Py_ssize_t S = grids.shape[1]
    cdef int shared = grids.shape[0] == 1, h = <int>ceil(fit_radius), it, nit
    cdef int var_map = var0.shape[0] > 1 or var0.shape[1] > 1
    cdef double Hc = <double>(S // 2), r2 = fit_radius * fit_radius, dx, dy, v, vx, vy, w, d, F
    cdef double spp, spd, chi, ntot, nbad, ngood, vv, mm
    cdef const float* g
    cdef Py_ssize_t ixc, iyc
    with nogil:
        for i in range(n):
            flags[i] = 0
            flux[i] = NAN
            out[i, O_FLUX_ERR] = NAN
            out[i, O_CHI2] = NAN
            out[i, O_NPIX] = 0.0
            out[i, O_NBAD] = 0.0
            out[i, O_BADFRAC] = 1.0
            if not (isfinite(x[i]) and isfinite(y[i])) or x[i] < -0.5 or x[i] > nx - 0.5 or (
                    y[i] < -0.5 or y[i] > ny - 0.5):
                flags[i] = FF_OFF_IMAGE
                continue
            g = grid_of(&grids[0, 0, 0], shared, S, i)
            ixc = lround(x[i])
            iyc = lround(y[i])
            ntot = 0.0
            nbad = 0.0
            ngood = 0.0
            for py in range(iyc - h, iyc + h + 1):
                for px in range(ixc - h, ixc + h + 1):
                    dx = px - x[i]
                    dy = py - y[i]
                    if dx * dx + dy * dy > r2:
                        continue
                    ntot += 1.0
                    if px < 0 or px >= nx or py < 0 or py >= ny:
                        flags[i] |= FF_EDGE
                        nbad += 1.0
                    elif code[py, px] & C_BAD:
                        flags[i] |= FF_SOME_BAD
                        nbad += 1.0
                    else:
                        ngood += 1.0
            out[i, O_NPIX] = ngood
            out[i, O_NBAD] = nbad
            out[i, O_BADFRAC] = nbad / ntot if ntot > 0 else 1.0
            if ngood == 0 or out[i, O_BADFRAC] > max_bad_frac:
                flags[i] |= FF_TOO_MANY_BAD
                continue
            F = 0.0
            nit = 1 if (var_is_total or inv_gain == 0.0) else 3
            for it in range(nit + 1):
                spp = 0.0
                spd = 0.0
                chi = 0.0
                for py in range(max(iyc - h, 0), min(iyc + h + 1, ny)):
                    for px in range(max(ixc - h, 0), min(ixc + h + 1, nx)):
                        dx = px - x[i]
                        dy = py - y[i]
                        if dx * dx + dy * dy > r2 or code[py, px] & C_BAD:
                            continue
                        interp(g, S, Hc + dx * ovs, Hc + dy * ovs, &v, &vx, &vy)
                        vv = var0[py, px] if var_map else var0[0, 0]
                        if not var_is_total:
                            mm = F * v
                            vv = vv + (mm if mm > 0.0 else 0.0) * inv_gain
                        w = 1.0 / vv
                        d = data[py, px]
                        if it == nit:
                            chi += w * (d - F * v) * (d - F * v)
                        spp += w * v * v
                        spd += w * v * d
                if it < nit:
                    F = spd / spp if spp > 0.0 else NAN
            flux[i] = F
            out[i, O_FLUX_ERR] = 1.0 / sqrt(spp) if spp > 0.0 else NAN
            out[i, O_CHI2] = chi / (ngood - 1.0) if ngood > 1.0 else NAN
            if not (F > 0.0):
                flags[i] |= FF_NONPOSITIVE
