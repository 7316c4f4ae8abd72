"""HEALPix arithmetic of the catalog partitions (nested scheme, via astropy-healpix).

A catalog is split into files by the HEALPix pixel of order `PARTITION_ORDER` = 6 (0.84 deg^2,
~55' across) that holds each source's reference-epoch position, and every row carries its pixel of
order `INDEX_ORDER` = 14 (12.9") in a ``healpix`` column, the rows sorted by it. In the nested scheme
the order-6 pixel of a row is its order-14 index shifted right by 2 x (14 - 6) bits, and a pixel of
any order between covers one contiguous range of order-14 indices: a cone becomes a few pixels at a
suitable order (`cone_pixels`), those become index ranges (`index_ranges`), and the rows of a
partition inside them are found by binary search (`select_ranges`), without computing a distance.

Why order 6: a science quadrant (0.75 deg^2) touches 2-6 partitions and a field (47 deg^2) about
60-80; a full-sky Gaia DR3 (1.8e9 sources) makes ~37,000 rows (~5 MB) per file on average and a few
hundred thousand in the densest Galactic-plane pixels, so a quadrant query reads a few MB. Order 5
would make those plane files 4x larger for every quadrant query; order 7 would make ~4x more files
and a field build rewrite ~300 of them.

Examples
--------
>>> import numpy as np
>>> from ztfsds.catalogs.healpix import healpix_index, partition_of, cone_pixels
>>> idx = healpix_index(np.array([55.06]), np.array([33.35]))
>>> int(partition_of(idx)[0]) == int(healpix_index(np.array([55.06]), np.array([33.35]), order=6)[0])
True
>>> int(partition_of(idx)[0]) in cone_pixels(55.06, 33.35, 0.1, order=6)
True
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy import units as u
from astropy_healpix import HEALPix, level_to_nside
from astropy_healpix import neighbours as _neighbours

__all__ = [
    "PARTITION_ORDER",
    "INDEX_ORDER",
    "healpix_index",
    "partition_of",
    "cone_pixels",
    "neighbour_pixels",
    "index_ranges",
    "select_ranges",
    "search_order",
    "partition_relpath",
]

#: HEALPix order of the partition files (nside 64, 0.839 deg^2 pixels).
PARTITION_ORDER = 6
#: HEALPix order of the per-row ``healpix`` index column (nside 16384, 12.9" pixels).
INDEX_ORDER = 14
# 58.6 deg: the order-0 pixel size; resolution at order k is this / 2**k
_ORDER0_RESOLUTION = 58.6323


def _healpix(order: int) -> HEALPix:
    return HEALPix(nside=level_to_nside(order), order="nested")


def healpix_index(ra, dec, order: int = INDEX_ORDER) -> np.ndarray:
    """Nested HEALPix index of positions.

    Parameters
    ----------
    ra, dec : array-like
        ICRS positions [deg].
    order : int, optional
        HEALPix order (default `INDEX_ORDER`).

    Returns
    -------
    `numpy.ndarray` of int64
    """
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    if ra.size == 0:
        return np.zeros(ra.shape, dtype=np.int64)
    return np.asarray(_healpix(order).lonlat_to_healpix(ra * u.deg, dec * u.deg), dtype=np.int64)


def partition_of(index, index_order: int = INDEX_ORDER, order: int = PARTITION_ORDER) -> np.ndarray:
    """The order-``order`` pixels holding order-``index_order`` pixels (nested: a bit shift)."""
    return np.asarray(index, dtype=np.int64) >> (2 * (index_order - order))


def cone_pixels(ra: float, dec: float, radius: float, order: int) -> np.ndarray:
    """Sorted nested pixels of an order that overlap a cone, even partially.

    Parameters
    ----------
    ra, dec : float
        Cone centre [deg].
    radius : float
        Cone radius [deg]; at least 180 gives every pixel.
    order : int
        HEALPix order.

    Returns
    -------
    `numpy.ndarray` of int64
    """
    hp = _healpix(order)
    if radius >= 180.0:
        return np.arange(hp.npix, dtype=np.int64)
    # astropy-healpix returns the pixels overlapping the cone; a pixel-resolution pad guards its
    # corner test against round-off (the rows are cut exactly afterwards)
    pad = 1e-6 * _ORDER0_RESOLUTION / 2**order
    pix = hp.cone_search_lonlat(ra * u.deg, dec * u.deg, (radius + pad) * u.deg)
    return np.unique(np.asarray(pix, dtype=np.int64))


def neighbour_pixels(pixels, order: int) -> np.ndarray:
    """Sorted unique neighbours of pixels (the pixels themselves excluded)."""
    pixels = np.unique(np.asarray(pixels, dtype=np.int64))
    if pixels.size == 0:
        return pixels
    with np.errstate(invalid="ignore"):
        nb = np.asarray(_neighbours(pixels, level_to_nside(order), order="nested"), dtype=np.int64).ravel()
    nb = np.unique(nb[nb >= 0])
    return np.setdiff1d(nb, pixels)


def index_ranges(pixels, order: int, index_order: int = INDEX_ORDER) -> tuple[np.ndarray, np.ndarray]:
    """Order-``index_order`` index ranges ``[start, stop)`` covered by nested pixels of ``order``.

    Adjacent ranges are merged.

    Returns
    -------
    starts, stops : `numpy.ndarray` of int64
    """
    pixels = np.unique(np.asarray(pixels, dtype=np.int64))
    shift = 2 * (index_order - order)
    if shift < 0:
        raise ValueError(f"order {order} is finer than the index order {index_order}")
    if pixels.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    breaks = np.flatnonzero(np.diff(pixels) != 1)
    first = np.concatenate([[pixels[0]], pixels[breaks + 1]])
    last = np.concatenate([pixels[breaks], [pixels[-1]]])
    return first << shift, (last + 1) << shift


def select_ranges(sorted_index, starts, stops) -> np.ndarray:
    """Positions of the entries of a sorted index column that fall in ``[start, stop)`` ranges.

    Parameters
    ----------
    sorted_index : array-like of int
        The (ascending) ``healpix`` column of a partition.
    starts, stops : array-like of int
        Disjoint ranges, from `index_ranges`.

    Returns
    -------
    `numpy.ndarray` of int64
        Row numbers, ascending.
    """
    idx = np.asarray(sorted_index, dtype=np.int64)
    lo = np.searchsorted(idx, starts, side="left")
    hi = np.searchsorted(idx, stops, side="left")
    keep = hi > lo
    if not np.any(keep):
        return np.zeros(0, dtype=np.int64)
    lo, hi = lo[keep], hi[keep]
    lengths = hi - lo
    # concatenated aranges without a Python loop
    offsets = np.repeat(lo - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(int(lengths.sum()), dtype=np.int64) + offsets


def search_order(radius: float, *, coarsest: int = PARTITION_ORDER, finest: int = INDEX_ORDER) -> int:
    """HEALPix order whose pixels are ~1/8 of a cone radius (a few hundred pixels cover the cone).

    Parameters
    ----------
    radius : float
        Cone radius [deg].
    coarsest, finest : int, optional
        Bounds of the returned order.
    """
    if radius <= 0.0:
        return finest
    order = int(np.ceil(np.log2(8.0 * _ORDER0_RESOLUTION / radius)))
    return int(np.clip(order, coarsest, finest))


def partition_relpath(npix: int, order: int = PARTITION_ORDER) -> Path:
    """File of one partition relative to its catalog directory.

    Named like HATS (``Norder=6/Dir=0/Npix=1234.fits``; ``Dir`` groups 10,000 pixels) so that the
    layout is familiar to lsdb users; the files are FITS tables, not Parquet.
    """
    npix = int(npix)
    return Path(f"Norder={order}", f"Dir={npix // 10000 * 10000}", f"Npix={npix}.fits")
