"""FITS reading with clear errors, and atomic writing of any product.

A product is written to a temporary file in its own directory, flushed to disk and then renamed over
the target (`os.replace`, atomic on POSIX): a reader, or a re-run after the process was killed, sees
either the previous complete file or the new complete file, never a partial one. Temporary files
left behind by a killed writer are named ``.<name>.tmp-<pid>-<random>`` and are never mistaken for
products (`ztfsds.products.ProductStore.remove_stale_temporaries` cleans them up).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from astropy.io import fits

from ..errors import (
    FITSFormatError,
    MissingExtensionError,
    MissingKeywordError,
    NonFiniteError,
    ShapeError,
    TruncatedFileError,
)

__all__ = ["atomic_write", "write_fits", "read_image", "read_header", "open_fits", "table_hdulist", "TEMP_MARKER"]

log = logging.getLogger(__name__)

#: Substring that marks a temporary (possibly partial) file written by `atomic_write`.
TEMP_MARKER = ".tmp-"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, overwrite: bool = True, fsync: bool = True) -> Iterator[Path]:
    """Context manager giving a temporary path that replaces ``path`` only if the block succeeds.

    Parameters
    ----------
    path : path-like
        Final location of the file. Its directory is created if needed.
    overwrite : bool, optional
        If False and ``path`` exists, raise `FileExistsError` before writing anything.
    fsync : bool, optional
        Flush the file and its directory to disk before and after the rename (default True), so that a
        power cut cannot leave a renamed but empty file.

    Yields
    ------
    pathlib.Path
        Where to write. It lives in the same directory as ``path`` (so the rename is atomic).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from ztfsds.products import atomic_write
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> with atomic_write(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path}: exists and overwrite=False")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARKER}{os.getpid()}-", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_fits(path: str | os.PathLike, hdus, header: fits.Header | None = None, *,
               overwrite: bool = True, checksum: bool = True) -> Path:
    """Write a FITS product atomically.

    Parameters
    ----------
    path : path-like
        Destination file.
    hdus : `~astropy.io.fits.HDUList`, HDU, list of HDUs, or `numpy.ndarray`
        What to write. A bare array becomes a primary HDU with ``header``.
    header : `~astropy.io.fits.Header`, optional
        Header of the primary HDU when ``hdus`` is an array.
    overwrite : bool, optional
        Replace an existing file (default True: re-running a stage is safe).
    checksum : bool, optional
        Write ``CHECKSUM``/``DATASUM`` cards so later corruption is detectable.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    if isinstance(hdus, np.ndarray):
        hdul = fits.HDUList([fits.PrimaryHDU(hdus, header=header)])
    elif isinstance(hdus, fits.HDUList):
        hdul = hdus
    elif isinstance(hdus, (fits.PrimaryHDU, fits.ImageHDU, fits.BinTableHDU, fits.CompImageHDU)):
        hdul = fits.HDUList([hdus] if isinstance(hdus, fits.PrimaryHDU) else [fits.PrimaryHDU(), hdus])
    else:
        hdul = fits.HDUList(list(hdus))
    path = Path(path)
    with atomic_write(path, overwrite=overwrite) as tmp:
        # astropy refuses to write over the (empty) temporary file unless told to
        hdul.writeto(tmp, overwrite=True, checksum=checksum)
    log.debug("wrote %s", path)
    return path


def open_fits(path: str | os.PathLike) -> fits.HDUList:
    """Open a FITS file fully into memory, turning astropy's failures into errors that name the file.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ztfsds.errors.TruncatedFileError
        The file is shorter than its headers declare.
    ztfsds.errors.FITSFormatError
        The file is not FITS (no SIMPLE card, a corrupt header).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hdul = None
        try:
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
            for hdu in hdul:
                _ = hdu.data  # force reading now, inside the error handling
        except (OSError, ValueError, TypeError, IndexError) as exc:
            if hdul is not None:
                hdul.close()
            if any("truncated" in str(w.message) for w in caught) or "truncated" in str(exc):
                raise TruncatedFileError(path, "FITS file is truncated (shorter than its headers say)") from exc
            if path.stat().st_size == 0:
                raise TruncatedFileError(path, "file is empty") from exc
            raise FITSFormatError(path, f"not a readable FITS file ({exc})") from exc
    for w in caught:
        if "truncated" in str(w.message):
            hdul.close()
            raise TruncatedFileError(path, f"FITS file is truncated: {w.message}")
    return hdul


def _select_hdu(hdul: fits.HDUList, hdu: int | str, path: Path):
    try:
        return hdul[hdu]
    except (KeyError, IndexError):
        raise MissingExtensionError(path, f"no HDU {hdu!r} (file has {len(hdul)} HDUs)") from None


def read_header(path: str | os.PathLike, hdu: int | str = 0, *, required: Iterable[str] = ()) -> fits.Header:
    """Read one header, checking that the ``required`` keywords are present.

    Raises
    ------
    ztfsds.errors.MissingKeywordError
        A required keyword is absent (the error names the file, keyword and HDU).
    """
    path = Path(path)
    with open_fits(path) as hdul:
        header = _select_hdu(hdul, hdu, path).header.copy()
    for key in required:
        if key not in header:
            raise MissingKeywordError(path, key, hdu)
    return header


def read_image(path: str | os.PathLike, hdu: int | str = 0, *, shape: tuple[int, int] | None = None,
               required: Iterable[str] = (), dtype=None, allow_nonfinite: bool = True
               ) -> tuple[np.ndarray, fits.Header]:
    """Read an image HDU with the checks every stage needs.

    Parameters
    ----------
    path : path-like
        FITS file.
    hdu : int or str, optional
        HDU index or EXTNAME.
    shape : tuple of int, optional
        Expected ``(ny, nx)``; a different shape raises `~ztfsds.errors.ShapeError`.
    required : iterable of str, optional
        Header keywords that must be present.
    dtype : numpy dtype, optional
        Convert the data to this type.
    allow_nonfinite : bool, optional
        If False, any NaN/inf pixel raises `~ztfsds.errors.NonFiniteError`.

    Returns
    -------
    data : `numpy.ndarray`
    header : `~astropy.io.fits.Header`
    """
    path = Path(path)
    with open_fits(path) as hdul:
        h = _select_hdu(hdul, hdu, path)
        data, header = h.data, h.header.copy()
    if data is None:
        raise ShapeError(path, (), shape or ("any",), hdu)
    if shape is not None and tuple(data.shape) != tuple(shape):
        raise ShapeError(path, data.shape, shape, hdu)
    for key in required:
        if key not in header:
            raise MissingKeywordError(path, key, hdu)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    elif not data.dtype.isnative:
        # FITS is big-endian; compiled kernels and numpy reductions want native byte order
        data = data.astype(data.dtype.newbyteorder("="))
    if not allow_nonfinite and data.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise NonFiniteError(path, f"HDU {hdu!r} has {bad} NaN/inf pixels")
    return data, header


#: Cards of an image header that do not belong in the primary header of a table product.
_STRUCTURAL = ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BUNIT", "BSCALE", "BZERO")


def table_hdulist(header: fits.Header, table, extname: str) -> fits.HDUList:
    """A catalog product: an empty primary HDU carrying ``header`` (the image's cards, without the
    image-structure ones) and ``table`` as a binary-table extension named ``extname``.

    Examples
    --------
    >>> from astropy.table import Table
    >>> h = fits.Header({"NAXIS": 2, "NAXIS1": 10, "NAXIS2": 10, "MAGZP": 26.3})
    >>> hdul = table_hdulist(h, Table({"flux": [1.0, 2.0]}), "PSFCAT")
    >>> hdul[0].header["MAGZP"], hdul[1].name, len(hdul[1].data)
    (26.3, 'PSFCAT', 2)
    """
    from astropy.table import Table

    primary = fits.PrimaryHDU(header=fits.Header([c for c in header.cards if c.keyword not in _STRUCTURAL]))
    hdu = fits.table_to_hdu(Table(table, meta={}))
    hdu.name = extname
    return fits.HDUList([primary, hdu])
