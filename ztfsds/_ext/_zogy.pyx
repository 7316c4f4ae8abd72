# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""ZOGY element-wise kernels: the Fourier-space arithmetic and the S_corr denominator, fused.

Private: call them through `ztfsds.subtract.zogy`, which checks dtypes, contiguity and shapes once.
The pure numpy equivalents are in `ztfsds._ext.reference_zogy` (same names and in-place outputs); the
tests check that both agree. Each kernel is one pass over its arrays without the GIL: numpy would need
about twenty passes (and as many temporaries of 40-80 MB at full size) for the same arithmetic.
"""

from libc.math cimport sqrt, NAN
from libc.stdint cimport uint8_t


def spectra(float complex[:, ::1] p_new, float complex[:, ::1] p_ref,
            float complex[:, ::1] n_hat, float complex[:, ::1] r_hat,
            double sn2, double sr2, double eps, double inv_fd):
    """ZOGY eqs. 13, 17, 28-29 at every frequency of the half-spectrum (in place).

    With ``a_N = |P_N|^2``, ``a_R = |P_R|^2`` and ``den2 = sn2 a_R + sr2 a_N + eps``:
    ``p_new <- (P_R N - P_N R) / sqrt(den2) * inv_fd`` (the transform of D in flux units),
    ``n_hat <- conj(P_N) a_R N / den2`` (of S_N) and ``r_hat <- conj(P_R) a_N R / den2`` (of S_R).
    ``p_ref`` is left as it is.
    """
    cdef Py_ssize_t ny = p_new.shape[0], nx = p_new.shape[1], i, j
    cdef float pnr, pni, prr, pri, nr, ni, rr, ri, an, ar, den2, idn, isq, numr, numi, fd = inv_fd
    cdef float fsn2 = sn2, fsr2 = sr2, feps = eps
    with nogil:
        for i in range(ny):
            for j in range(nx):
                pnr = p_new[i, j].real
                pni = p_new[i, j].imag
                prr = p_ref[i, j].real
                pri = p_ref[i, j].imag
                nr = n_hat[i, j].real
                ni = n_hat[i, j].imag
                rr = r_hat[i, j].real
                ri = r_hat[i, j].imag
                an = pnr * pnr + pni * pni
                ar = prr * prr + pri * pri
                den2 = fsn2 * ar + fsr2 * an + feps
                idn = 1.0 / den2
                isq = sqrt(idn) * fd
                numr = (prr * nr - pri * ni) - (pnr * rr - pni * ri)
                numi = (prr * ni + pri * nr) - (pnr * ri + pni * rr)
                p_new[i, j].real = numr * isq
                p_new[i, j].imag = numi * isq
                # conj(P_N) * N
                n_hat[i, j].real = (pnr * nr + pni * ni) * ar * idn
                n_hat[i, j].imag = (pnr * ni - pni * nr) * ar * idn
                # conj(P_R) * R
                r_hat[i, j].real = (prr * rr + pri * ri) * an * idn
                r_hat[i, j].imag = (prr * ri - pri * rr) * an * idn


def variance_spectrum(float complex[:, ::1] v_new, float complex[:, ::1] k_new,
                      float complex[:, ::1] v_ref, float complex[:, ::1] k_ref):
    """ZOGY eqs. 26-27 summed in Fourier space (in place): ``v_new <- v_new k_new + v_ref k_ref``."""
    cdef Py_ssize_t ny = v_new.shape[0], nx = v_new.shape[1], i, j
    cdef float ar, ai, br, bi, cr, ci, dr, di
    with nogil:
        for i in range(ny):
            for j in range(nx):
                ar = v_new[i, j].real
                ai = v_new[i, j].imag
                br = k_new[i, j].real
                bi = k_new[i, j].imag
                cr = v_ref[i, j].real
                ci = v_ref[i, j].imag
                dr = k_ref[i, j].real
                di = k_ref[i, j].imag
                v_new[i, j].real = ar * br - ai * bi + cr * dr - ci * di
                v_new[i, j].imag = ar * bi + ai * br + cr * di + ci * dr


def scorr(float[:, ::1] s_new, float[:, ::1] s_ref, float[:, ::1] v_s, double v_s_const,
          double dx2, double dy2, float[:, ::1] s_out, float[:, ::1] scorr_out,
          uint8_t[:, ::1] mask, bint use_mask):
    """ZOGY eqs. 30-33 and S_corr in one pass.

    ``s_out = s_new - s_ref``; the gradients are periodic backward differences
    (``g_x[y, x] = s[y, x] - s[y, x - 1]``, ``x - 1`` wrapped, as ``s - np.roll(s, 1, axis=1)``);
    ``V = v_s + v_s_const + dx2 (g_x,N^2 + g_x,R^2) + dy2 (g_y,N^2 + g_y,R^2)`` and
    ``scorr_out = s_out / sqrt(V)`` (NaN where ``V <= 0``). ``v_s`` may be a 1 x 1 dummy when
    ``v_s.shape[0] == 1`` and the image is larger (then only ``v_s_const`` counts). With ``use_mask``,
    pixels where ``mask`` is non-zero get NaN in both outputs. ``s_out`` may be the ``v_s`` buffer.
    """
    cdef Py_ssize_t ny = s_new.shape[0], nx = s_new.shape[1], i, j, im, jm
    cdef bint has_map = v_s.shape[0] == ny and v_s.shape[1] == nx and ny > 1
    cdef float vc = v_s_const, fdx2 = dx2, fdy2 = dy2, gxn, gyn, gxr, gyr, sn, sr, v, s
    with nogil:
        for i in range(ny):
            im = i - 1 if i > 0 else ny - 1
            for j in range(nx):
                jm = j - 1 if j > 0 else nx - 1
                sn = s_new[i, j]
                sr = s_ref[i, j]
                gxn = sn - s_new[i, jm]
                gyn = sn - s_new[im, j]
                gxr = sr - s_ref[i, jm]
                gyr = sr - s_ref[im, j]
                v = vc + fdx2 * (gxn * gxn + gxr * gxr) + fdy2 * (gyn * gyn + gyr * gyr)
                if has_map:
                    v = v + v_s[i, j]
                s = sn - sr
                if use_mask and mask[i, j]:
                    s_out[i, j] = NAN
                    scorr_out[i, j] = NAN
                elif v > 0:
                    s_out[i, j] = s
                    scorr_out[i, j] = s / sqrt(v)
                else:
                    s_out[i, j] = s
                    scorr_out[i, j] = NAN
