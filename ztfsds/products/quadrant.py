"""A calibrated science quadrant as the stage runners read and update it (sciimg, mskimg, varimg).

Examples
--------
>>> from ztfsds.products.quadrant import science_key
>>> science_key("ztf_20200924334248_000655_zr_c13_o_q3_mskimg.fits").filename
'ztf_20200924334248_000655_zr_c13_o_q3_sciimg.fits'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from ..errors import ZTFSDSError
from .fitsio import read_image
from .naming import ProductKey
from .store import ProductStore

__all__ = ["science_key", "Quadrant", "read_quadrant", "update_quadrant_headers", "QUADRANT_IMAGES"]

#: The image products of a calibrated quadrant that carry its header keywords.
QUADRANT_IMAGES = ("sciimg", "mskimg", "varimg")


def science_key(key) -> ProductKey:
    """The sciimg key of a quadrant from any of its products' keys or file names (or paths).

    Raises
    ------
    ztfsds.errors.ZTFSDSError
        For a product that is not a science quadrant's.
    """
    key = key if isinstance(key, ProductKey) else ProductKey.parse(str(key).rsplit("/", 1)[-1])
    if key.kind != "sci":
        raise ZTFSDSError(f"{key.filename}: not a science-quadrant product")
    return key.with_suffix("sciimg", ".fits")


@dataclass
class Quadrant:
    """A calibrated quadrant's images and header (``varimg`` None when the product is absent)."""

    key: ProductKey
    sciimg: np.ndarray
    header: fits.Header
    mskimg: np.ndarray
    varimg: np.ndarray | None


def read_quadrant(store: ProductStore, key) -> Quadrant:
    """Read a quadrant's sciimg (with header), mskimg and, when present, varimg.

    Raises
    ------
    ztfsds.errors.ZTFSDSError
        A missing or unreadable product (the error names the file).
    """
    key = science_key(key)
    sci, header = read_image(store.path(key))
    msk, _ = read_image(store.path(key.with_suffix("mskimg")))
    var_path = store.path(key.with_suffix("varimg"))
    var = read_image(var_path)[0] if var_path.exists() else None
    return Quadrant(key, sci, header, msk, var)


def update_quadrant_headers(store: ProductStore, key, update) -> list:
    """Rewrite each image product of the quadrant (atomically) with its header changed by
    ``update(header)``; returns the paths rewritten."""
    key = science_key(key)
    out = []
    for suffix in QUADRANT_IMAGES:
        path = store.path(key.with_suffix(suffix))
        if path.exists():
            data, header = read_image(path)
            update(header)
            out.append(store.write_fits(key.with_suffix(suffix), fits.PrimaryHDU(data, header)))
    return out
