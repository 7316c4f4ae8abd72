"""Asterism matching: which detections are which reference stars, starting from a rough prior.

The pointing prior of a quadrant can be off by minutes of arc and tenths of a degree in rotation, so
nearest-neighbour matching cannot start the astrometry. `match_asterisms` finds the similarity
transform (scale, rotation, shift) that maps the reference stars, projected onto the pixel grid with
the prior, onto the detections, from the shapes of the triangles the stars form (the idea of
astroalign and of Lang et al. 2010's astrometry.net, restricted to what a pointing prior allows):

1. **Triangles.** Each list (the brightest detections; the brightest reference stars, in equal
   density) gives every triangle whose sides are between ``l_min`` and ``l_max``. The scale is set by
   the density of the detections (about 8 neighbours within ``l_max``), the same physical scale for
   both lists, so a triangle of three stars present in both lists is formed in both, whatever the
   other stars are (nearest-neighbour triangles would change with every missing or extra star).
2. **Invariants.** Sorted sides ``s0 <= s1 <= s2`` give the shape ``(s0 / s2, s1 / s2)``, unchanged by
   a similarity; the vertices are labelled by the side they face, which fixes the correspondence.
   Triangles whose shape is within ``tolerance`` are paired with a k-d tree.
3. **Hypotheses.** Each pair of triangles gives a similarity transform (three point pairs, least
   squares). Pairs with a mirrored or badly fitting transform, or one outside what the prior allows
   (scale within ``max_scale_error``, rotation within ``max_rotation``, shift of the image centre
   within ``max_shift``, each with a margin for the noise of small triangles), are dropped.
4. **Votes.** Each surviving hypothesis votes for its three point correspondences; hypotheses are
   ranked by the votes of their correspondences (true ones are shared by many triangles).
5. **Verification.** The best-ranked hypotheses are refined on every star (transform the reference
   list, pair within ``radius``, refit, twice) and the one with most pairs wins. It is accepted only
   if the pairs are far more than chance allows (``n >= max(min_pairs, lambda + 5 sqrt(lambda) + 3)``,
   ``lambda`` the expected number of chance pairs) and its final transform is inside the prior's bounds.

It costs a few milliseconds for 60 detections and a few hundred reference stars.

Examples
--------
>>> import numpy as np
>>> from ztfsds.astrom.match import match_asterisms
>>> rng = np.random.default_rng(1)
>>> ref = rng.uniform(0, 1000, (60, 2))
>>> t = np.radians(0.3)
>>> rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
>>> det = ref @ rot.T * 1.002 + [40.0, -25.0] + rng.normal(0, 0.1, (60, 2))
>>> m = match_asterisms(det[:45], ref[10:], center=(500, 500), max_shift=100, max_rotation=0.6)
>>> m.ok, len(m.det_index)
(True, 35)
>>> print(f"{m.rotation_deg:.2f} {m.scale:.4f}")
0.30 1.0020
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["AsterismMatch", "triangles", "match_asterisms", "fit_similarity", "pair_points"]


@dataclasses.dataclass(frozen=True)
class AsterismMatch:
    """Result of `match_asterisms`.

    Attributes
    ----------
    ok : bool
        A significant, allowed transform was found.
    matrix : numpy.ndarray
        2 x 2 linear part ``A`` of ``det = A ref + shift`` (scale times rotation); identity if not ok.
    shift : numpy.ndarray
        Translation [pix].
    det_index, ref_index : numpy.ndarray
        Indices of the paired points in the detection and reference lists given.
    rms : float
        RMS distance of the pairs after the transform [pix].
    expected_chance : float
        Number of pairs expected by chance (``lambda``).
    n_hypotheses : int
        Triangle pairs that passed the prior's bounds.
    message : str
        Why the match failed, or a summary.
    """

    ok: bool
    matrix: np.ndarray
    shift: np.ndarray
    det_index: np.ndarray
    ref_index: np.ndarray
    rms: float
    expected_chance: float
    n_hypotheses: int
    message: str

    @property
    def scale(self) -> float:
        """Scale factor of the transform (detection pixels per prior pixel)."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix))))

    @property
    def rotation_deg(self) -> float:
        """Rotation of the transform [deg], counter-clockwise in pixel coordinates."""
        return float(np.degrees(np.arctan2(self.matrix[1, 0] - self.matrix[0, 1],
                                           self.matrix[0, 0] + self.matrix[1, 1])))

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """Transform reference-list points ``(n, 2)`` into detection pixels."""
        return np.asarray(xy, float) @ self.matrix.T + self.shift


def triangles(xy: np.ndarray, l_min: float, l_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Every triangle of points whose three sides lie in ``[l_min, l_max]``.

    Parameters
    ----------
    xy : numpy.ndarray
        Points ``(n, 2)``.
    l_min, l_max : float
        Side-length bounds (same unit as ``xy``).

    Returns
    -------
    vertices : numpy.ndarray
        int ``(m, 3)``: point indices, ordered so that vertex ``k`` faces the ``k``-th shortest side.
    invariants : numpy.ndarray
        float ``(m, 2)``: ``(s0 / s2, s1 / s2)`` for sorted sides ``s0 <= s1 <= s2``.
    """
    xy = np.asarray(xy, float)
    n = len(xy)
    if n < 3:
        return np.zeros((0, 3), np.int64), np.zeros((0, 2))
    pairs = cKDTree(xy).query_pairs(l_max, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros((0, 3), np.int64), np.zeros((0, 2))
    adj = np.zeros((n, n), dtype=bool)
    adj[pairs[:, 0], pairs[:, 1]] = True
    adj[pairs[:, 1], pairs[:, 0]] = True
    i, j = pairs.min(axis=1), pairs.max(axis=1)
    later = np.arange(n)[None, :] > j[:, None]
    common = adj[i] & adj[j] & later
    rows, third = np.nonzero(common)
    tri = np.stack([i[rows], j[rows], third], axis=1)
    p = xy[tri]
    # side k faces vertex k
    sides = np.stack([np.hypot(*(p[:, 1] - p[:, 2]).T), np.hypot(*(p[:, 0] - p[:, 2]).T),
                      np.hypot(*(p[:, 0] - p[:, 1]).T)], axis=1)
    keep = (sides.min(axis=1) >= l_min) & (sides.max(axis=1) <= l_max)
    tri, sides = tri[keep], sides[keep]
    order = np.argsort(sides, axis=1)
    tri = np.take_along_axis(tri, order, axis=1)
    sides = np.take_along_axis(sides, order, axis=1)
    inv = sides[:, :2] / sides[:, 2:3]
    return tri, inv


def fit_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None):
    """Least-squares similarity ``dst = A src + t`` (``A`` = scale x rotation, no mirror).

    Parameters
    ----------
    src, dst : numpy.ndarray
        Points ``(..., n, 2)``; leading dimensions are independent problems.
    weights : numpy.ndarray, optional
        Weights ``(..., n)``.

    Returns
    -------
    matrix : numpy.ndarray
        ``(..., 2, 2)``.
    shift : numpy.ndarray
        ``(..., 2)``.
    """
    zs = src[..., 0] + 1j * src[..., 1]
    zd = dst[..., 0] + 1j * dst[..., 1]
    w = np.ones(zs.shape) if weights is None else np.asarray(weights, float)
    wsum = w.sum(axis=-1, keepdims=True)
    ms = (w * zs).sum(axis=-1, keepdims=True) / wsum
    md = (w * zd).sum(axis=-1, keepdims=True) / wsum
    a = (w * (zd - md) * np.conj(zs - ms)).sum(axis=-1) / np.maximum((w * np.abs(zs - ms) ** 2).sum(axis=-1),
                                                                   1e-300)
    t = md[..., 0] - a * ms[..., 0]
    matrix = np.stack([np.stack([a.real, -a.imag], -1), np.stack([a.imag, a.real], -1)], -2)
    return matrix, np.stack([t.real, t.imag], -1)


def _fit_affine(src: np.ndarray, dst: np.ndarray):
    design = np.column_stack([src, np.ones(len(src))])
    sol, *_ = np.linalg.lstsq(design, dst, rcond=None)
    return sol[:2].T, sol[2]


def pair_points(det_xy: np.ndarray, model_xy: np.ndarray, radius: float,
                tree: cKDTree | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one nearest pairs between detections and model positions within ``radius``.

    Each model point takes its nearest detection; a detection claimed by several model points keeps
    the closest.

    Returns
    -------
    det_index, model_index : numpy.ndarray
        Paired indices.
    distance : numpy.ndarray
        Their separations.
    """
    tree = cKDTree(det_xy) if tree is None else tree
    dist, idx = tree.query(model_xy, distance_upper_bound=radius)
    ok = np.isfinite(dist)
    model = np.flatnonzero(ok)
    det, dist = idx[ok], dist[ok]
    order = np.lexsort((dist, det))
    det, model, dist = det[order], model[order], dist[order]
    first = np.ones(len(det), dtype=bool)
    first[1:] = det[1:] != det[:-1]
    return det[first], model[first], dist[first]


def _refine(det, ref, a, t, radius, tree):
    """Pair all stars under a hypothesis and refit it on the pairs (three rounds)."""
    for _ in range(3):
        di, ri, dist = pair_points(det, ref @ a.T + t, radius, tree)
        if len(di) < 3:
            return None
        a, t = fit_similarity(ref[ri], det[di])
    di, ri, dist = pair_points(det, ref @ a.T + t, radius, tree)
    return a, t, di, ri, dist


def match_asterisms(det_xy, ref_xy, *, center, max_shift: float, max_rotation: float,
                    max_scale_error: float = 0.03, radius: float = 3.0, tolerance: float = 0.01,
                    min_pairs: int = 6, max_candidates: int = 60, affine: bool = False) -> AsterismMatch:
    """Find the transform from reference positions to detections by triangle matching.

    Parameters
    ----------
    det_xy : numpy.ndarray
        Detection pixels ``(n, 2)``, brightest first (the brightest few dozen are enough).
    ref_xy : numpy.ndarray
        Reference stars projected with the prior ``(m, 2)``, brightest first, about as deep as the
        detections (the caller picks them; extra stars outside the image are fine).
    center : sequence of float
        Pixel where the shift is measured (the image centre).
    max_shift : float
        Largest shift of ``center`` allowed [pix].
    max_rotation : float
        Largest rotation allowed [deg].
    max_scale_error : float, optional
        Largest fractional scale error allowed.
    radius : float, optional
        Pairing radius of the verification [pix].
    tolerance : float, optional
        Largest difference of triangle shapes (side ratios) paired.
    min_pairs : int, optional
        Fewest star pairs of an accepted match.
    max_candidates : int, optional
        Best-voted hypotheses verified on all stars.
    affine : bool, optional
        Refine a general affine transform on the verified pairs (default: similarity).

    Returns
    -------
    AsterismMatch
    """
    det = np.asarray(det_xy, float).reshape(-1, 2)
    ref = np.asarray(ref_xy, float).reshape(-1, 2)
    center = np.asarray(center, float)
    eye = np.eye(2)
    none = np.zeros(0, np.int64)

    def fail(msg, nh=0, lam=0.0):
        return AsterismMatch(False, eye, np.zeros(2), none, none, math.nan, lam, nh, msg)

    if len(det) < 3 or len(ref) < 3:
        return fail(f"too few stars to match: {len(det)} detections, {len(ref)} reference stars")

    # triangle scale from the detections' density: ~8 neighbours within l_max
    lo, hi = det.min(axis=0), det.max(axis=0)
    area = max(float(np.prod(np.maximum(hi - lo, 1.0))), 1.0)
    l_max = min(math.sqrt(8.0 * area / (math.pi * len(det))), float(np.hypot(*(hi - lo))))
    l_min = max(0.1 * l_max, 10.0)
    tri_d, inv_d = triangles(det, l_min, l_max)
    tri_r, inv_r = triangles(ref, l_min / (1 + max_scale_error), l_max * (1 + max_scale_error))
    if not len(tri_d) or not len(tri_r):
        return fail(f"no triangles to match ({len(tri_d)} from detections, {len(tri_r)} from reference stars)")

    pairs = cKDTree(inv_d).sparse_distance_matrix(cKDTree(inv_r), tolerance, output_type="ndarray")
    if len(pairs) == 0:
        return fail("no triangle of the detections has a counterpart among the reference stars")
    td, tr = pairs["i"], pairs["j"]
    src = ref[tri_r[tr]]  # (h, 3, 2)
    dst = det[tri_d[td]]
    mat, sh = fit_similarity(src, dst)
    scale = np.sqrt(np.abs(mat[:, 0, 0] ** 2 + mat[:, 1, 0] ** 2))
    rot = np.degrees(np.arctan2(mat[:, 1, 0], mat[:, 0, 0]))
    resid = dst - (np.einsum("hij,hkj->hki", mat, src) + sh[:, None, :])
    size = np.hypot(*(dst[:, 0] - dst[:, 1]).T) + 1e-9  # the longest side (it faces vertex 2)
    shift_c = center @ np.swapaxes(mat, 1, 2) + sh - center
    # the margins allow for the noise of a transform from three points of a small triangle
    rot_noise = np.degrees(4.0 * radius / size)
    good = ((np.abs(scale - 1.0) <= max_scale_error + 4.0 * radius / size)
            & (np.abs(rot) <= max_rotation + rot_noise)
            & (np.hypot(*shift_c.T) <= max_shift + np.radians(rot_noise) * np.hypot(*(dst.mean(1) - center).T)
               + 2.0 * radius)
            & (np.sqrt((resid ** 2).sum(axis=(1, 2)) / 3.0) <= radius))
    nh = int(good.sum())
    # chance pairs: detections within the reference list's footprint, each pairing at density rho
    rlo, rhi = ref.min(axis=0), ref.max(axis=0)
    rho = len(ref) / max(float(np.prod(np.maximum(rhi - rlo, 1.0))), 1.0)
    lam = len(det) * rho * math.pi * radius**2
    if nh == 0:
        return fail(f"no triangle match within the prior's bounds ({max_shift:.0f} px, {max_rotation:.2f} deg, "
                    f"scale {max_scale_error:.0%}): {len(pairs)} shape matches rejected", 0, lam)
    idx = np.flatnonzero(good)
    corr = np.stack([tri_d[td[idx]], tri_r[tr[idx]]], axis=-1).reshape(-1, 2)  # (3 h, 2) det/ref pairs
    key = corr[:, 0] * len(ref) + corr[:, 1]
    _, inverse, votes = np.unique(key, return_inverse=True, return_counts=True)
    score = votes[inverse].reshape(-1, 3).sum(axis=1)
    order = idx[np.argsort(-score, kind="stable")[:max_candidates]]

    tree = cKDTree(det)
    best = None
    for h in order:
        found = _refine(det, ref, mat[h], sh[h], radius, tree)
        if found is not None and (best is None or len(found[2]) > len(best[2])):
            best = found
        if best is not None and len(best[2]) >= 0.8 * min(len(det), len(ref)):
            break  # as good as it gets
    if best is None:
        return fail(f"{nh} triangle matches, none verified on the other stars", nh, lam)
    a, t, di, ri, dist = best
    need = max(min_pairs, lam + 5.0 * math.sqrt(lam) + 3.0)
    if len(di) < need:
        return fail(f"best match pairs {len(di)} stars, fewer than the {need:.0f} needed to rule out chance "
                    f"({lam:.1f} expected)", nh, lam)
    if affine and len(di) >= 6:
        a, t = _fit_affine(ref[ri], det[di])
        di, ri, dist = pair_points(det, ref @ a.T + t, radius, tree)
    result = AsterismMatch(True, a, t, di, ri, float(np.sqrt(np.mean(dist**2))), lam, nh,
                           f"{len(di)} stars paired ({lam:.1f} by chance), {nh} triangle matches")
    shift_c = float(np.hypot(*(a @ center + t - center)))
    if (abs(result.scale - 1.0) > max_scale_error or abs(result.rotation_deg) > max_rotation
            or shift_c > max_shift):
        return fail(f"the best match (scale {result.scale:.4f}, rotation {result.rotation_deg:.2f} deg, shift "
                    f"{shift_c:.0f} px) is outside the prior's bounds", nh, lam)
    return result
