"""Pure numpy reference implementations of the kernels of `ztfsds._ext._psffit`.

Slow (Python loops over groups and iterations, numpy over pixels) and written for clarity: the tests
check that the compiled kernels give the same results on random input. Same names, arguments and
in-place outputs as the kernels; the flag bits and ``out`` columns are the kernel's.
"""

from __future__ import annotations

import numpy as np

from ._psffit import (
    CODE_BAD,
    CODE_SATURATED,
    F_EDGE,
    F_FAILED,
    F_FIXED_POSITION,
    F_MASKED,
    F_MOVED,
    F_NONPOSITIVE,
    F_NOT_CONVERGED,
    F_SATURATED,
    FF_EDGE,
    FF_NONPOSITIVE,
    FF_OFF_IMAGE,
    FF_SOME_BAD,
    FF_TOO_MANY_BAD,
    MAX_STEP_PX,
    MIN_PIX_POSITION_FIT,
    O_BADFRAC,
    O_CHI2,
    O_FLUX_ERR,
    O_NBAD,
    O_NITER,
    O_NPIX,
    O_SHARP,
    O_X_ERR,
    O_Y_ERR,
)

__all__ = ["fit_groups", "forced_fit", "interp", "keys4", "psf_grids", "render_subtract"]


def keys4(t):
    """First node (int64) and the Keys (a = -0.5) weights and their derivatives, ``(n, 4)``, at ``t``."""
    t = np.asarray(t, dtype=float)
    f = np.floor(t)
    d = (t - f)[:, None] + 1.0 - np.arange(4)[None, :]
    ad = np.abs(d)
    w = np.where(ad <= 1.0, (1.5 * ad - 2.5) * ad * ad + 1.0,
                 np.where(ad < 2.0, ((-0.5 * ad + 2.5) * ad - 4.0) * ad + 2.0, 0.0))
    dw = np.where(ad <= 1.0, (4.5 * ad - 5.0) * ad, np.where(ad < 2.0, (-1.5 * ad + 5.0) * ad - 4.0, 0.0))
    dw = np.where(d < 0.0, -dw, dw)
    return f.astype(np.int64) - 1, w, dw


def interp(g, tx, ty):
    """Value and derivatives (per grid unit) of the square grid ``g`` at ``(row ty, col tx)`` (arrays);
    nodes outside the grid are zero."""
    S = g.shape[0]
    ix, wx, dwx = keys4(np.atleast_1d(tx))
    iy, wy, dwy = keys4(np.atleast_1d(ty))
    cols = ix[:, None] + np.arange(4)
    rows = iy[:, None] + np.arange(4)
    okc = (cols >= 0) & (cols < S)
    okr = (rows >= 0) & (rows < S)
    vals = g[np.clip(rows, 0, S - 1)[:, :, None], np.clip(cols, 0, S - 1)[:, None, :]].astype(float)
    vals = vals * (okr[:, :, None] & okc[:, None, :])
    s0 = np.einsum("nab,nb->na", vals, wx)
    s1 = np.einsum("nab,nb->na", vals, dwx)
    return np.einsum("na,na->n", s0, wy), np.einsum("na,na->n", s1, wy), np.einsum("na,na->n", s0, dwy)


def psf_grids(block, terms, lo, hi, out):
    """``out[n] = sum_k terms[n, k] * block[k]`` (float32)."""
    out[...] = np.tensordot(terms, block, axes=1).astype(np.float32)


def _grid(grids, i):
    return grids[0] if grids.shape[0] == 1 else grids[i]


def _render(g, ovs, x, y, flux, bx0, by0, B):
    H = g.shape[0] // 2
    if not np.isfinite(flux):
        return np.zeros(B * B, np.float32)
    jj, ii = np.meshgrid(np.arange(B), np.arange(B))
    v, _, _ = interp(g, H + (bx0 + jj.ravel() - x) * ovs, H + (by0 + ii.ravel() - y) * ovs)
    return (flux * v).astype(np.float32)


def _apply(resid, stamp, bx0, by0, B, sign):
    ny, nx = resid.shape
    st = stamp.reshape(B, B)
    ys, xs = slice(max(by0, 0), min(by0 + B, ny)), slice(max(bx0, 0), min(bx0 + B, nx))
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return
    part = st[ys.start - by0:ys.stop - by0, xs.start - bx0:xs.stop - bx0]
    resid[ys, xs] += np.float32(sign) * part


def render_subtract(grids, ovs, x0, y0, x, y, flux, Rm, stamps, resid):
    """Render every model stamp and subtract it from ``resid`` (in place)."""
    B = 2 * Rm + 1
    for i in range(len(x)):
        bx0, by0 = int(np.round(x0[i])) - Rm, int(np.round(y0[i])) - Rm
        stamps[i] = _render(_grid(grids, i), ovs, x[i], y[i], flux[i], bx0, by0, B)
        _apply(resid, stamps[i], bx0, by0, B, -1.0)


def _chol_inverse_diag(N, free):
    idx = np.nonzero(free)[0]
    out = np.full(len(free), np.nan)
    if len(idx):
        out[idx] = np.diag(np.linalg.inv(N[np.ix_(idx, idx)]))
    return out


def _solve(N, b, free):
    idx = np.nonzero(free)[0]
    step = np.zeros(len(free))
    if len(idx):
        sub = N[np.ix_(idx, idx)]
        np.linalg.cholesky(sub)        # raises when not positive definite, as the kernel fails
        step[idx] = np.linalg.solve(sub, b[idx])
    return step


def _accumulate(grids, ovs, H, Rm, mem, active, ix0, iy0, px, py, own, prv, pmo, pv0, inv_gain, psf_error, x, y, flux):
    """Normal matrix, right-hand side and per-member chi2/sharpness sums of a group (see the kernel)."""
    G = len(mem)
    J = np.zeros((len(px), 3 * G))
    Pv = np.zeros((len(px), G))
    dPx = np.zeros((len(px), G))
    dPy = np.zeros((len(px), G))
    for k, i in enumerate(mem):
        cov = active[k] & (np.abs(px - ix0[k]) <= Rm) & (np.abs(py - iy0[k]) <= Rm)
        v, vx, vy = interp(_grid(grids, i), H + (px - x[i]) * ovs, H + (py - y[i]) * ovs)
        Pv[:, k] = np.where(cov, v, 0.0)
        dPx[:, k] = np.where(cov, vx * ovs, 0.0)
        dPy[:, k] = np.where(cov, vy * ovs, 0.0)
        J[:, 3 * k] = Pv[:, k]
        J[:, 3 * k + 1] = -flux[i] * dPx[:, k]
        J[:, 3 * k + 2] = -flux[i] * dPy[:, k]
    m = Pv @ np.where(active, flux[mem], 0.0)
    r = prv - m
    mt = np.maximum(pmo + m, 0.0)
    w = 1.0 / (pv0 + mt * inv_gain + (psf_error * mt) ** 2)
    N = J.T @ (w[:, None] * J)
    b = J.T @ (w * r)
    sums = np.zeros((G, 6))
    for k, i in enumerate(mem):
        o = own[k] & ((Pv[:, k] != 0) | (dPx[:, k] != 0) | (dPy[:, k] != 0))
        t = 2.0 * Pv[:, k] + (px - x[i]) * dPx[:, k] + (py - y[i]) * dPy[:, k]
        ww, rr, tt, pp = w[o], r[o], t[o], Pv[o, k]
        sums[k] = [np.sum(ww * rr * rr), np.sum(ww * rr * tt), np.sum(ww * tt * tt), np.sum(ww * tt * pp),
                   np.sum(ww * pp * pp), np.sum(ww * rr * pp)]
    return N, b, sums


def fit_groups(data, resid, code, rms2, inv_gain, psf_error, grids, ovs, x0, y0, x, y, flux, stamps, Rm, group_start,
               members, fit_radius, max_shift, niter, recentre, tol, out, flags):
    """One pass of the group fits (see the kernel); updates its arguments in place."""
    ny, nx = data.shape
    B = 2 * Rm + 1
    h = int(np.ceil(fit_radius))
    r2 = fit_radius * fit_radius
    S = grids.shape[1]
    H = S // 2
    for g in range(len(group_start) - 1):
        mem = members[group_start[g]:group_start[g + 1]]
        G = len(mem)
        if G == 0:
            continue
        ix0 = np.round(x0[mem]).astype(int)
        iy0 = np.round(y0[mem]).astype(int)
        for k, i in enumerate(mem):
            flags[i] &= ~(F_NOT_CONVERGED | F_FAILED | F_MASKED | F_SATURATED | F_EDGE | F_NONPOSITIVE)
            out[i, O_NBAD] = 0.0
            _apply(resid, stamps[i], ix0[k] - Rm, iy0[k] - Rm, B, 1.0)
        # fit pixels
        yy, xx = np.mgrid[iy0.min() - h:iy0.max() + h + 1, ix0.min() - h:ix0.max() + h + 1]
        yy, xx = yy.ravel(), xx.ravel()
        inimg = (xx >= 0) & (xx < nx) & (yy >= 0) & (yy < ny)
        cd = np.where(inimg, code[np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)], 0)
        own = (xx[None, :] - x0[mem][:, None]) ** 2 + (yy[None, :] - y0[mem][:, None]) ** 2 <= r2
        npix_own = np.zeros(G, int)
        for k, i in enumerate(mem):
            if np.any(own[k] & ~inimg):
                flags[i] |= F_EDGE
            if np.any(own[k] & inimg & (cd & CODE_SATURATED != 0)):
                flags[i] |= F_SATURATED
            nb = np.count_nonzero(own[k] & inimg & (cd & CODE_BAD != 0))
            out[i, O_NBAD] += nb
            if nb:
                flags[i] |= F_MASKED
            npix_own[k] = np.count_nonzero(own[k] & inimg & (cd & CODE_BAD == 0))
        use = np.any(own, axis=0) & inimg & (cd & CODE_BAD == 0)
        px, py = xx[use], yy[use]
        own = own[:, use]
        prv = resid[py, px].astype(float)
        pmo = data[py, px].astype(float) - resid[py, px].astype(float)
        pv0 = rms2[py, px].astype(float) if rms2.size > 1 else np.full(len(px), float(rms2[0, 0]))
        active = npix_own > 0
        free = np.zeros(3 * G, bool)
        for k, i in enumerate(mem):
            if npix_own[k] < MIN_PIX_POSITION_FIT and recentre and not flags[i] & F_MOVED:
                flags[i] |= F_FIXED_POSITION
            if active[k] and not np.isfinite(flux[i]):
                v, _, _ = interp(_grid(grids, i), H + (px[own[k]] - x[i]) * ovs, H + (py[own[k]] - y[i]) * ovs)
                den = np.sum(v * v)
                flux[i] = np.sum(v * prv[own[k]]) / den if den > 0 else 0.0
            free[3 * k] = active[k]
            free[3 * k + 1] = free[3 * k + 2] = active[k] and recentre and not flags[i] & (F_MOVED | F_FIXED_POSITION)

        it, conv, fail = 0, False, False
        clamp = np.full((G, 2), MAX_STEP_PX)
        prev = np.zeros((G, 2))
        while True:
            N, b, sums = _accumulate(grids, ovs, H, Rm, mem, active, ix0, iy0, px, py, own, prv, pmo, pv0,
                                     inv_gain, psf_error, x, y, flux)
            if conv or it >= niter:
                break
            try:
                step = _solve(N, b, free)
            except np.linalg.LinAlgError:
                fail = True
                break
            it += 1
            dmax, reset = 0.0, False
            for k, i in enumerate(mem):
                for p in range(2):
                    if free[3 * k + 1 + p]:
                        dt = step[3 * k + 1 + p]
                        if dt * prev[k, p] < 0.0:
                            clamp[k, p] *= 0.5
                        prev[k, p] = dt
                        step[3 * k + 1 + p] = np.clip(dt, -clamp[k, p], clamp[k, p])
                for p in range(3):
                    if free[3 * k + p]:
                        dmax = max(dmax, abs(step[3 * k + p]) * np.sqrt(N[3 * k + p, 3 * k + p]))
                if not active[k]:
                    continue
                flux[i] += step[3 * k]
                if free[3 * k + 1]:
                    x[i] += step[3 * k + 1]
                    y[i] += step[3 * k + 2]
                    if abs(x[i] - x0[i]) > max_shift or abs(y[i] - y0[i]) > max_shift:
                        flags[i] |= F_MOVED
                    elif flux[i] <= 0.0:
                        flags[i] |= F_FIXED_POSITION
                    if flags[i] & (F_MOVED | F_FIXED_POSITION):
                        x[i], y[i] = x0[i], y0[i]
                        free[3 * k + 1] = free[3 * k + 2] = False
                        reset = True
            conv = dmax < tol and not reset
        if not fail:
            try:
                np.linalg.cholesky(N[np.ix_(free, free)]) if free.any() else None
                var = _chol_inverse_diag(N, free)
            except np.linalg.LinAlgError:
                fail = True
        for k, i in enumerate(mem):
            out[i, O_NPIX] = npix_own[k]
            out[i, O_NITER] += it
            if not active[k] or fail:
                flags[i] |= F_FAILED
                flux[i] = np.nan
                out[i, [O_X_ERR, O_Y_ERR, O_FLUX_ERR, O_CHI2, O_SHARP]] = np.nan
                continue
            if not conv:
                flags[i] |= F_NOT_CONVERGED
            if flux[i] <= 0.0:
                flags[i] |= F_NONPOSITIVE
            out[i, O_FLUX_ERR] = np.sqrt(var[3 * k])
            out[i, O_X_ERR] = np.sqrt(var[3 * k + 1]) if free[3 * k + 1] else np.nan
            out[i, O_Y_ERR] = np.sqrt(var[3 * k + 2]) if free[3 * k + 2] else np.nan
            sm = sums[k]
            nfree = int(free[3 * k]) + int(free[3 * k + 1]) + int(free[3 * k + 2])
            out[i, O_CHI2] = sm[0] / (npix_own[k] - nfree) if npix_own[k] > nfree else np.nan
            a = sm[2] - sm[3] ** 2 / sm[4] if sm[4] > 0 else 0.0
            out[i, O_SHARP] = (sm[1] - sm[3] / sm[4] * sm[5]) / (flux[i] * a) if a > 0 and flux[i] != 0 else np.nan
        for k, i in enumerate(mem):
            stamps[i] = _render(_grid(grids, i), ovs, x[i], y[i], flux[i], ix0[k] - Rm, iy0[k] - Rm, B)
            _apply(resid, stamps[i], ix0[k] - Rm, iy0[k] - Rm, B, -1.0)


def forced_fit(data, code, var0, var_is_total, inv_gain, grids, ovs, x, y, fit_radius, max_bad_frac, flux, out,
               flags):
    """Weighted linear least-squares PSF amplitude at fixed positions (see the kernel)."""
    ny, nx = data.shape
    S = grids.shape[1]
    H = S // 2
    h = int(np.ceil(fit_radius))
    for i in range(len(x)):
        flags[i] = 0
        flux[i] = np.nan
        out[i, [O_FLUX_ERR, O_CHI2]] = np.nan
        out[i, [O_NPIX, O_NBAD]] = 0.0
        out[i, O_BADFRAC] = 1.0
        if not (np.isfinite(x[i]) and np.isfinite(y[i])) or not (-0.5 <= x[i] <= nx - 0.5) or not (
                -0.5 <= y[i] <= ny - 0.5):
            flags[i] = FF_OFF_IMAGE
            continue
        ixc, iyc = int(np.round(x[i])), int(np.round(y[i]))
        yy, xx = np.mgrid[iyc - h:iyc + h + 1, ixc - h:ixc + h + 1]
        yy, xx = yy.ravel(), xx.ravel()
        circ = (xx - x[i]) ** 2 + (yy - y[i]) ** 2 <= fit_radius**2
        xx, yy = xx[circ], yy[circ]
        inimg = (xx >= 0) & (xx < nx) & (yy >= 0) & (yy < ny)
        cd = np.where(inimg, code[np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)], 0)
        good = inimg & (cd & CODE_BAD == 0)
        if np.any(~inimg):
            flags[i] |= FF_EDGE
        if np.any(inimg & (cd & CODE_BAD != 0)):
            flags[i] |= FF_SOME_BAD
        ntot, ngood = len(xx), np.count_nonzero(good)
        out[i, O_NPIX] = ngood
        out[i, O_NBAD] = ntot - ngood
        out[i, O_BADFRAC] = (ntot - ngood) / ntot if ntot else 1.0
        if ngood == 0 or out[i, O_BADFRAC] > max_bad_frac:
            flags[i] |= FF_TOO_MANY_BAD
            continue
        px, py = xx[good], yy[good]
        v, _, _ = interp(_grid(grids, i), H + (px - x[i]) * ovs, H + (py - y[i]) * ovs)
        d = data[py, px].astype(float)
        v0 = var0[py, px].astype(float) if var0.size > 1 else np.full(len(px), float(var0[0, 0]))
        F = 0.0
        nit = 1 if (var_is_total or inv_gain == 0.0) else 3
        for it in range(nit + 1):
            vv = v0 if var_is_total else v0 + np.maximum(F * v, 0.0) * inv_gain
            w = 1.0 / vv
            spp, spd = np.sum(w * v * v), np.sum(w * v * d)
            if it == nit:
                chi = np.sum(w * (d - F * v) ** 2)
            else:
                F = spd / spp if spp > 0 else np.nan
        flux[i] = F
        out[i, O_FLUX_ERR] = 1.0 / np.sqrt(spp) if spp > 0 else np.nan
        out[i, O_CHI2] = chi / (ngood - 1.0) if ngood > 1 else np.nan
        if not F > 0:
            flags[i] |= FF_NONPOSITIVE
