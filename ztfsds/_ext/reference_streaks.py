"""Pure numpy reference implementations of `ztfsds._ext._streaks` (same names, arguments and in-place
outputs); the tests check that the compiled kernels agree with them on random input."""

from __future__ import annotations

import numpy as np


def bin_clipped(s_img, good, b, clip, tot, ngood):
    """Numpy version of `ztfsds._ext._streaks.bin_clipped`."""
    ny, nx = s_img.shape
    my, mx = tot.shape
    v = np.where(good.astype(bool), np.clip(s_img, -clip, clip), 0.0)
    pad = ((0, my * b - ny), (0, mx * b - nx))
    v = np.pad(v, pad)
    g = np.pad(good.astype(np.int32), pad)
    tot += v.reshape(my, b, mx, b).sum(axis=(1, 3)).astype(np.float32)
    ngood += g.reshape(my, b, mx, b).sum(axis=(1, 3)).astype(np.int32)


def hough(px, py, cos_t, sin_t, rmax, acc):
    """Numpy version of `ztfsds._ext._streaks.hough`."""
    nr, nt = acc.shape
    r = np.floor(px[:, None] * cos_t[None, :] + py[:, None] * sin_t[None, :] + rmax + 0.5).astype(np.int64) + 1
    t = np.broadcast_to(np.arange(nt), r.shape)
    ok = (r >= 0) & (r < nr)
    np.add.at(acc, (r[ok], t[ok]), 1)
