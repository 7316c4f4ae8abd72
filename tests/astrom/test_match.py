"""Asterism (triangle) matching against a shifted, rotated, rescaled and incomplete reference list."""

import numpy as np
import pytest

from ztfsds.astrom.match import fit_similarity, match_asterisms, pair_points, triangles


def _rotation(deg):
    t = np.radians(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _scene(seed, *, n=50, size=256, shift=(100.0, -60.0), rot=0.4, scale=1.003, miss=0.3, spurious=0.3,
           margin=160, noise=0.1):
    """Reference stars over the image plus a search margin; detections of a subset, plus spurious ones."""
    rng = np.random.default_rng(seed)
    area = ((size + 2 * margin) / size) ** 2
    ref = rng.uniform(-margin, size + margin, (int(n * area / (1 - miss)), 2))
    a = _rotation(rot) * scale
    centre = np.array([size / 2, size / 2])
    t = centre + np.asarray(shift) - a @ centre
    det_all = ref @ a.T + t
    on = np.all((det_all > 0) & (det_all < size), axis=1)
    keep = np.flatnonzero(on & (rng.random(len(ref)) > miss))
    det = det_all[keep] + rng.normal(0, noise, (len(keep), 2))
    nsp = int(spurious * len(det) / (1 - spurious))
    det = np.vstack([det, rng.uniform(0, size, (nsp, 2))])
    order = rng.permutation(len(det))
    truth = np.full(len(det), -1)
    truth[: len(keep)] = keep
    return det[order], ref, truth[order], a, t, centre


def test_triangle_invariants_are_similarity_invariant():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (30, 2))
    tri, inv = triangles(xy, 20.0, 200.0)
    tri2, inv2 = triangles(xy @ (2.0 * _rotation(33.0)).T + 7.0, 40.0, 400.0)
    assert len(tri) > 20
    o1, o2 = np.lexsort(tri.T), np.lexsort(tri2.T)
    np.testing.assert_array_equal(tri[o1], tri2[o2])
    np.testing.assert_allclose(inv[o1], inv2[o2], atol=1e-12)
    assert np.all((inv > 0) & (inv <= 1)) and np.all(inv[:, 0] <= inv[:, 1])


def test_fit_similarity_exact():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(10, 2))
    a = 1.3 * _rotation(-20.0)
    m, t = fit_similarity(src, src @ a.T + [3.0, -4.0])
    np.testing.assert_allclose(m, a, atol=1e-12)
    np.testing.assert_allclose(t, [3.0, -4.0], atol=1e-12)


def test_pair_points_is_one_to_one():
    det = np.array([[0.0, 0.0], [10.0, 0.0]])
    model = np.array([[0.5, 0.0], [0.2, 0.0], [10.0, 1.0], [50.0, 50.0]])
    di, mi, _ = pair_points(det, model, 2.0)
    assert sorted(zip(di.tolist(), mi.tolist())) == [(0, 1), (1, 2)]


@pytest.mark.parametrize("seed", range(8))
def test_match_small_array_with_missing_and_spurious(seed):
    det, ref, truth, a, _, centre = _scene(seed)
    m = match_asterisms(det, ref, center=centre, max_shift=148.0, max_rotation=0.6)
    assert m.ok, m.message
    # pairs are right, but for the odd spurious detection that falls on a reference star by chance
    assert np.sum(truth[m.det_index] != m.ref_index) <= max(1, 2 * m.expected_chance)
    assert len(m.det_index) >= 0.8 * np.sum(truth >= 0)
    np.testing.assert_allclose(m.matrix, a, atol=2e-3)
    assert abs(m.rotation_deg - 0.4) < 0.1 and abs(m.scale - 1.003) < 2e-3


def test_match_rejects_shift_beyond_the_search():
    det, ref, truth, _, _, centre = _scene(2, size=1024, n=300, shift=(500.0, 300.0), margin=700)
    m = match_asterisms(det, ref, center=centre, max_shift=148.0, max_rotation=0.6)
    assert not m.ok and len(m.det_index) == 0
    assert "prior" in m.message
    wide = match_asterisms(det, ref, center=centre, max_shift=700.0, max_rotation=0.6)
    assert wide.ok and np.sum(truth[wide.det_index] != wide.ref_index) <= 2 * wide.expected_chance


def test_match_unrelated_lists_fail():
    rng = np.random.default_rng(5)
    det = rng.uniform(0, 512, (60, 2))
    ref = rng.uniform(-150, 662, (300, 2))
    m = match_asterisms(det, ref, center=(256, 256), max_shift=148.0, max_rotation=0.6)
    assert not m.ok


def test_match_too_few_points():
    m = match_asterisms(np.zeros((2, 2)), np.zeros((5, 2)), center=(0, 0), max_shift=10.0, max_rotation=1.0)
    assert not m.ok and "too few" in m.message
