"""Product runners of the calibration stage: raw CCD file -> sciimg, mskimg, varimg per quadrant.

`run_calib` reads a raw CCD file from the data root, looks up the night's calibration library
(`~ztfsds.calib.library.load_calibration`), calibrates the four quadrants
(`~ztfsds.calib.apply.calibrate_raw_file`) and writes each quadrant's products atomically. A quadrant
that cannot be calibrated (truncated HDU, wrong shape, ...) gets a failed `~ztfsds.products.ProductStatus`
naming the file and the problem; the others go on. Running it again rewrites the same products.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..config import Config
from ..errors import ZTFSDSError
from ..products import InfoBits, MaskBits, ProductKey, ProductStatus, ProductStore, read_header
from .apply import calibrate_raw_file
from .library import load_calibration

__all__ = ["run_calib", "quality_infobits", "RAW_HEADER_CARDS"]

log = logging.getLogger(__name__)

#: Raw primary-header cards copied into every quadrant product (when present).
RAW_HEADER_CARDS = (
    "ORIGIN", "TELESCOP", "INSTRUME", "IMGTYPE", "EXPTIME", "EXPOSURE", "OBSJD", "OBSMJD", "DATE-OBS",
    "FIELDID", "FILTER", "FILTERID", "FILTPOS", "CCD_ID", "CCDNAME", "EXPID", "TELRA", "TELDEC", "RAD", "DECD",
    "OBJRA", "OBJDEC", "AIRMASS", "MOONRA", "MOONDEC", "MOONALT", "MOONILLF", "MOONPHAS", "PROGRMID",
)

#: Quality limits of the calibration stage (INFOBITS 0-2, as IPAC's).
_MAX_BACKGROUND = 4000.0
_MAX_NOISE = 100.0
_MAX_SATURATED_FRACTION = 0.5


def quality_infobits(sciimg: np.ndarray, mskimg: np.ndarray) -> tuple[int, dict]:
    """INFOBITS 0-2 of a calibrated quadrant and the statistics behind them.

    Parameters
    ----------
    sciimg : numpy.ndarray
        Calibrated image [DN].
    mskimg : numpy.ndarray
        Its mask (`~ztfsds.products.MaskBits`).

    Returns
    -------
    infobits : int
        HIGH_BACKGROUND (median > 4000 DN), HIGH_NOISE (robust sigma > 100 DN), MANY_SATURATED
        (> 50 % of the pixels saturated).
    stats : dict
        ``median`` [DN], ``sigma`` (1.4826 MAD [DN]) and ``saturated`` (fraction) of the unmasked pixels.

    Examples
    --------
    >>> import numpy as np
    >>> bits, stats = quality_infobits(np.full((10, 10), 5000.0, np.float32), np.zeros((10, 10), np.int16))
    >>> bits == int(InfoBits.HIGH_BACKGROUND), stats["median"]
    (True, 5000.0)
    """
    sat = (mskimg & int(MaskBits.SATURATED)) != 0
    good = (mskimg == 0) & np.isfinite(sciimg)
    values = sciimg[good][:: max(1, good.sum() // 1_000_000)]
    if values.size:
        med = float(np.median(values))
        sigma = float(1.4826 * np.median(np.abs(values - med)))
    else:
        med = sigma = float("nan")
    frac = float(sat.mean()) if sat.size else 0.0
    bits = 0
    if not values.size or med > _MAX_BACKGROUND:
        bits |= int(InfoBits.HIGH_BACKGROUND)
    if not values.size or sigma > _MAX_NOISE:
        bits |= int(InfoBits.HIGH_NOISE)
    if frac > _MAX_SATURATED_FRACTION:
        bits |= int(InfoBits.MANY_SATURATED)
    return bits, {"median": med, "sigma": sigma, "saturated": frac}


def _raw_key_and_path(raw, store: ProductStore) -> tuple[ProductKey, Path]:
    if isinstance(raw, ProductKey):
        return raw, store.path(raw)
    path = Path(raw)
    key = ProductKey.parse(path.name)
    if not path.exists() and not path.is_absolute():
        path = store.path(key)
    return key, path


def run_calib(raw, store: ProductStore, config: Config | None = None) -> list[ProductStatus]:
    """Calibrate one raw CCD file into its quadrant products (sciimg, mskimg, varimg).

    Parameters
    ----------
    raw : `~ztfsds.products.ProductKey`, str or path-like
        The raw science file: its key, its name (found under ``store``) or a path.
    store : `~ztfsds.products.ProductStore`
        Data root: the calibration library is looked up and the products written there.
    config : `~ztfsds.config.Config`, optional
        Parameters (the ``calib`` set is used and recorded in the headers).

    Returns
    -------
    list of `~ztfsds.products.ProductStatus`
        One per quadrant (qid 1-4), or a single failed status when the file or its calibration
        cannot be used at all. INFOBITS 0-2 (background, noise, saturation) are set here.
    """
    config = config or Config()
    start = time.perf_counter()
    try:
        key, path = _raw_key_and_path(raw, store)
        if key.kind != "raw" or key.imgtype != "o":
            raise ZTFSDSError(f"{key.filename}: not a raw science exposure")
        primary = read_header(path, 0)
        ccdcal = load_calibration(store, key.night, key.ccdid, key.filtercode)
        results = calibrate_raw_file(path, ccdcal, config.calib)
    except ZTFSDSError as exc:
        name = getattr(raw, "filename", None) or os.fspath(raw)
        log.error("calib %s: %s", name, exc)
        return [ProductStatus("calib", Path(name).name, ok=False, message=str(exc),
                              elapsed=time.perf_counter() - start)]

    statuses = []
    for qid, result in sorted(results.items()):
        qkey = key.quadrant(qid, "sciimg")
        t0 = time.perf_counter()
        if isinstance(result, ZTFSDSError):
            log.error("calib %s: %s", qkey.filename, result)
            statuses.append(ProductStatus("calib", qkey.filename, ok=False, message=str(result)))
            continue
        header = fits.Header()
        for card in RAW_HEADER_CARDS:
            if card in primary:
                header[card] = (primary[card], primary.comments[card])
        if "OBSMJD" in primary:  # the FITS WCS time keyword (else astropy's datfix derives it, with a warning)
            header["MJD-OBS"] = (float(primary["OBSMJD"]), "start of exposure [MJD, UTC]")
        header["FILENAME"] = (qkey.filename, "this product")
        header["ORIGNAME"] = (key.filename, "raw CCD file")
        header["CCDID"] = (key.ccdid, "CCD id")
        header["QID"] = (qid, "readout quadrant id")
        header["RCID"] = (qkey.rcid, "readout channel id")
        header["EXPID"] = (qkey.expid, "exposure id")
        header["DBPID"] = (qkey.pid(), "processed-image id")
        # a sub-array's place in the full quadrant (IRAF LTV: full-quadrant x = x - LTV1)
        qhdr = read_header(path, qid)
        for card in ("LTV1", "LTV2"):
            header[card] = (float(qhdr.get(card, 0.0)), "full-quadrant pixel = pixel - LTV")
        header.extend(result.header, update=True)
        infobits, stats = quality_infobits(result.sciimg, result.mskimg)
        header["INFOBITS"] = (infobits, "image quality bits (BITnn legend)")
        header["MEDSKY"] = (round(stats["median"], 3), "median of unmasked pixels [DN]")
        header["SKYSIG"] = (round(stats["sigma"], 3), "robust sigma of unmasked pixels [DN]")
        for card in InfoBits.legend_cards():
            header.append(card)
        config.to_header(header, stages=("calib",))
        header["BUNIT"] = ("DN", "Data Value")
        outputs = [
            store.write_fits(qkey, fits.PrimaryHDU(result.sciimg.astype(np.float32), header)),
            store.write_fits(qkey.with_suffix("mskimg"), fits.PrimaryHDU(result.mskimg.astype(np.int16),
                                                                           _mask_header(header))),
            store.write_fits(qkey.with_suffix("varimg"), fits.PrimaryHDU(result.varimg.astype(np.float32),
                                                                           _variance_header(header))),
        ]
        statuses.append(ProductStatus("calib", qkey.filename, ok=True, infobits=infobits,
                                      message=f"median {stats['median']:.1f} DN, sigma {stats['sigma']:.2f} DN",
                                      outputs=outputs, elapsed=time.perf_counter() - t0))
    return statuses


def _mask_header(header: fits.Header) -> fits.Header:
    h = header.copy()
    h["BUNIT"] = ("", "MaskBits")
    for card in MaskBits.legend_cards():
        h[card.keyword] = (card.value, card.comment)
    return h


def _variance_header(header: fits.Header) -> fits.Header:
    h = header.copy()
    h["BUNIT"] = ("DN**2", "variance of the sciimg pixels")
    return h
