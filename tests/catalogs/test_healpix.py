"""HEALPix helpers of the partitions: cones, index ranges and range selection against brute force."""

import numpy as np
import pytest
from astropy.coordinates import ICRS
from astropy_healpix import HEALPix

from ztfsds.catalogs.healpix import (
    INDEX_ORDER,
    PARTITION_ORDER,
    cone_pixels,
    healpix_index,
    index_ranges,
    neighbour_pixels,
    partition_of,
    partition_relpath,
    search_order,
    select_ranges,
)
from ztfsds.catalogs.query import _separation_deg


def _random_sky(rng, n, ra0, dec0, size):
    ra = ra0 + rng.uniform(-size, size, n) / np.cos(np.radians(dec0))
    dec = np.clip(dec0 + rng.uniform(-size, size, n), -90, 90)
    return ra % 360.0, dec


@pytest.mark.parametrize("ra0,dec0,radius", [(55.06, 33.35, 0.7), (0.05, -1.0, 0.3), (180.0, 89.5, 1.0),
                                             (300.0, -60.0, 3.0)])
def test_cone_and_ranges_cover_every_point_in_the_cone(ra0, dec0, radius):
    rng = np.random.default_rng(1)
    ra, dec = _random_sky(rng, 200_000, ra0, dec0, 1.5 * radius)
    inside = _separation_deg(ra0, dec0, ra, dec) <= radius
    idx = healpix_index(ra, dec)
    # partitions
    parts = cone_pixels(ra0, dec0, radius, PARTITION_ORDER)
    assert np.all(np.isin(partition_of(idx[inside]), parts))
    # index ranges at a search order, then binary search on the sorted index
    order = search_order(radius)
    starts, stops = index_ranges(cone_pixels(ra0, dec0, radius, order), order)
    srt = np.argsort(idx)
    rows = srt[select_ranges(idx[srt], starts, stops)]
    assert set(np.flatnonzero(inside)) <= set(rows)
    # and the prefilter is tight: at most a few times the cone's area
    assert len(rows) < 3 * inside.sum()


def test_partition_of_is_the_coarse_pixel():
    rng = np.random.default_rng(2)
    ra, dec = rng.uniform(0, 360, 1000), np.degrees(np.arcsin(rng.uniform(-1, 1, 1000)))
    np.testing.assert_array_equal(partition_of(healpix_index(ra, dec)), healpix_index(ra, dec, PARTITION_ORDER))


def test_select_ranges_matches_a_loop():
    rng = np.random.default_rng(3)
    idx = np.sort(rng.integers(0, 10_000, 5000))
    starts = np.array([0, 100, 5000, 9990])
    stops = np.array([50, 300, 5001, 20000])
    expect = [i for i, v in enumerate(idx) if any(a <= v < b for a, b in zip(starts, stops))]
    np.testing.assert_array_equal(select_ranges(idx, starts, stops), expect)
    assert select_ranges(idx, np.array([20000]), np.array([30000])).size == 0


def test_index_ranges_merge_adjacent_pixels():
    starts, stops = index_ranges([3, 4, 5, 9], order=INDEX_ORDER - 1)
    np.testing.assert_array_equal(starts, [12, 36])
    np.testing.assert_array_equal(stops, [24, 40])


def test_neighbours_and_paths():
    hp = HEALPix(nside=2**PARTITION_ORDER, order="nested", frame=ICRS())
    nb = neighbour_pixels([1234], PARTITION_ORDER)
    assert 1234 not in nb and len(nb) == 8
    assert np.all(hp.healpix_to_skycoord(nb).separation(hp.healpix_to_skycoord(1234)).deg < 2.0)
    assert partition_relpath(12345).as_posix() == "Norder=6/Dir=10000/Npix=12345.fits"
    assert search_order(0.5) == 10 and search_order(100.0) == PARTITION_ORDER and search_order(0.0) == INDEX_ORDER
