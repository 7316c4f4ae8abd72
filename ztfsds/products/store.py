"""`ProductStore`: the data root, laid out like the ZTF archive.

::

    <root>/raw/YYYY/MMDD/dddddd/ztf_..._c08_o.fits[.fz]          raw CCD files
    <root>/cal/YYYY/MMDD/<family>/<fc>/c08/q3/ztf_YYYYMMDD_...    calibration products (bias, hifreqflat)
    <root>/sci/YYYY/MMDD/dddddd/ztf_..._c08_o_q3_sciimg.fits     per-exposure quadrant products
    <root>/ref/<field>/<fc>/c08/q3/ztf_000600_zr_c08_q3_refimg.fits
    <root>/alerts/YYYYMMDD/   <root>/match/   <root>/reports/   <root>/ztfsds.sqlite
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from astropy.io import fits

from ..errors import ProductNameError, ProductNotFoundError
from .fitsio import TEMP_MARKER, read_header, read_image, write_fits
from .naming import ProductKey

__all__ = ["ProductStore"]

log = logging.getLogger(__name__)


class ProductStore:
    """Products under one data root.

    Parameters
    ----------
    root : path-like
        The data root; created on first write.

    Examples
    --------
    >>> import tempfile
    >>> from ztfsds.products import ProductKey, ProductStore
    >>> store = ProductStore(tempfile.mkdtemp())
    >>> key = ProductKey.parse("ztf_20180317184502_000600_zr_c08_o_q3_sciimg.fits")
    >>> store.relpath(key).as_posix()
    'sci/2018/0317/184502/ztf_20180317184502_000600_zr_c08_o_q3_sciimg.fits'
    >>> store.relpath(key.reference()).as_posix()
    'ref/000600/zr/c08/q3/ztf_000600_zr_c08_q3_refimg.fits'
    """

    DATABASE_NAME = "ztfsds.sqlite"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ProductStore({str(self.root)!r})"

    # -- layout ---------------------------------------------------------------------------------
    @staticmethod
    def relpath(key: ProductKey) -> Path:
        """Path of a product relative to the data root."""
        if key.kind in ("sci", "raw"):
            f = key.filefracday
            return Path(key.kind, f[:4], f[4:8], f[8:], key.filename)
        if key.kind == "ref":
            return Path("ref", f"{key.field:06d}", key.filtercode, f"c{key.ccdid:02d}", f"q{key.qid}",
                        key.filename)
        family = key.suffix[:-3] if key.suffix.endswith(("unc", "log")) else key.suffix
        return Path("cal", key.night[:4], key.night[4:], family, key.filtercode, f"c{key.ccdid:02d}",
                    f"q{key.qid}", key.filename)

    def path(self, key: ProductKey | str) -> Path:
        """Absolute path of a product (a key or a file name)."""
        if isinstance(key, str):
            key = ProductKey.parse(key)
        return self.root / self.relpath(key)

    def alerts_dir(self, night: str) -> Path:
        """Directory of a night's alert tar files (``night`` as YYYYMMDD)."""
        return self.root / "alerts" / night

    @property
    def match_dir(self) -> Path:
        """Directory of matchfiles and HEALPix-partitioned lightcurves."""
        return self.root / "match"

    @property
    def reports_dir(self) -> Path:
        """Directory of nightly reports."""
        return self.root / "reports"

    @property
    def database_path(self) -> Path:
        """The embedded (SQLite) database file."""
        return self.root / self.DATABASE_NAME

    # -- access ---------------------------------------------------------------------------------
    def exists(self, key: ProductKey | str) -> bool:
        """True if the (complete) product file exists."""
        return self.path(key).is_file()

    def _existing(self, key) -> Path:
        path = self.path(key)
        if not path.is_file():
            raise ProductNotFoundError(f"{path}: product not found under data root {self.root}")
        return path

    def read_image(self, key: ProductKey | str, hdu: int | str = 0, **checks) -> tuple[np.ndarray, fits.Header]:
        """Read an image product (see `ztfsds.products.read_image` for ``checks``)."""
        return read_image(self._existing(key), hdu, **checks)

    def read_header(self, key: ProductKey | str, hdu: int | str = 0, **checks) -> fits.Header:
        """Read a product header (see `ztfsds.products.read_header`)."""
        return read_header(self._existing(key), hdu, **checks)

    def write_fits(self, key: ProductKey | str, hdus, header: fits.Header | None = None, *,
                   overwrite: bool = True) -> Path:
        """Write a FITS product atomically (see `ztfsds.products.write_fits`)."""
        return write_fits(self.path(key), hdus, header, overwrite=overwrite)

    def keys(self, kind: str = "sci", *, night: str | None = None, suffix: str | None = None
             ) -> Iterator[ProductKey]:
        """Iterate over the products present, in name order.

        Parameters
        ----------
        kind : {'sci', 'raw', 'ref', 'cal'}
            Product family.
        night : str, optional
            Only this night (YYYYMMDD).
        suffix : str, optional
            Only this suffix ('sciimg', ...).
        """
        if kind not in ProductKey.KINDS:
            raise ValueError(f"kind must be one of {ProductKey.KINDS}, got {kind!r}")
        base = self.root / kind
        if night is not None and kind in ("sci", "raw", "cal"):
            base = base / night[:4] / night[4:]
        if not base.is_dir():
            return
        for path in sorted(base.rglob("ztf_*")):
            if TEMP_MARKER in path.name or not path.is_file():
                continue
            try:
                key = ProductKey.parse(path.name)
            except ProductNameError:
                log.debug("ignoring %s: not a product name", path)
                continue
            if key.kind != kind or (suffix is not None and key.suffix != suffix):
                continue
            if night is not None and key.night != night:
                continue
            yield key

    def remove_stale_temporaries(self, older_than: float = 3600.0) -> list[Path]:
        """Delete temporary files left by writers that were killed.

        Parameters
        ----------
        older_than : float, optional
            Only files not modified for this many seconds (so a write in progress is never touched).

        Returns
        -------
        list of pathlib.Path
            The files removed.
        """
        removed = []
        if not self.root.is_dir():
            return removed
        now = time.time()
        for path in self.root.rglob(f".*{TEMP_MARKER}*"):
            try:
                if now - path.stat().st_mtime >= older_than:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue
        if removed:
            log.info("removed %d stale temporary files under %s", len(removed), self.root)
        return removed
