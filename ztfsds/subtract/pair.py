"""Subtraction of any pair of calibrated images: ``ztfsds subtract --pair SCIIMG REFIMG``.

`subtract_pair` needs only what every calibrated ZTF image has -- a WCS and MAGZP in its header (IRSA's
science and reference images qualify, as do ours) -- and uses whatever else it finds beside each file:
``*_mskimg.fits`` / ``*_refmsk.fits`` (masks), ``*_varimg.fits`` / ``*_refunc.fits`` (variance or
uncertainty), ``*_sciimgpsf.fits`` / ``*_refimgpsf.fits`` (PSF models). A missing PSF is fitted on the
image itself (extraction + `~ztfsds.photom.psf.build_psf`); a missing mask flags only the non-finite
pixels. The outputs are written beside each other in ``out``: ``<stem>_scimrefdiffimg.fits``,
``<stem>_diffimgpsf.fits``, ``<stem>_candidates.fits``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ..config import Config
from ..errors import MissingKeywordError
from ..products import MaskBits, atomic_write, table_hdulist

__all__ = ["subtract_pair"]

log = logging.getLogger(__name__)

_SUFFIXES = ("_sciimg", "_refimg")


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".fits.fz", ".fits.gz", ".fits"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    for suf in _SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


def _sibling(path: Path, suffixes) -> Path | None:
    stem = _stem(path)
    for suf in suffixes:
        for ext in (".fits", ".fits.gz", ".fits.fz"):
            p = path.parent / f"{stem}_{suf}{ext}"
            if p.exists():
                return p
    return None


def _read(path: Path):
    with fits.open(path) as hdul:
        hdu = next((h for h in hdul if h.data is not None and getattr(h.data, "ndim", 0) == 2), None)
        if hdu is None:
            from ..errors import MissingExtensionError

            raise MissingExtensionError(path, "no 2-D image HDU")
        data = np.asarray(hdu.data, dtype=np.float32)
        header = hdu.header.copy()
    for key in ("MAGZP",):
        if key not in header:
            raise MissingKeywordError(path, key)
    if not WCS(header).has_celestial:
        raise MissingKeywordError(path, "CTYPE1")
    return data, header


def _image_set(path: Path, kind: str, config: Config):
    """(image with non-finite -> 0, header, mask, variance or None, PSF model, psf catalog) of one file."""
    from ..astrom.extraction import background, extract
    from ..photom.forced import psf_from_hdulist
    from ..photom.psf import build_psf
    from ..photom.psffit import psf_photometry
    from ..photom.runner import psfcat_table

    data, header = _read(path)
    bad = ~np.isfinite(data)
    data = np.where(bad, 0.0, data).astype(np.float32)
    mpath = _sibling(path, ("mskimg",) if kind == "sci" else ("refmsk",))
    mask = np.asarray(fits.getdata(mpath), dtype=np.int16) if mpath is not None else np.zeros(data.shape, np.int16)
    mask = (mask | (bad * np.int16(int(MaskBits.NAN)))).astype(np.int16)
    var = None
    vpath = _sibling(path, ("varimg",) if kind == "sci" else ("refunc",))
    if vpath is not None:
        v = np.asarray(fits.getdata(vpath), dtype=np.float32)
        var = v if kind == "sci" else v**2
    gain = float(header.get("GAIN", 6.0))
    saturate = float(header["SATURATE"]) if "SATURATE" in header else None
    src = extract(data, mask, gain=gain, saturate=saturate, params=config.astrom, filename=str(path))
    ppath = _sibling(path, ("sciimgpsf",) if kind == "sci" else ("refimgpsf",))
    if ppath is not None:
        with fits.open(ppath) as hdul:
            psf = psf_from_hdulist(hdul)
    else:
        psf = build_psf(data, mask, src, size=config.photom.psf_size, oversample=config.photom.psf_oversampling,
                        degree=config.photom.psf_degree, gain=gain, saturate=saturate, product=str(path))
    bkg = background(data, mask, filename=str(path))
    fit = psf_photometry(data, psf, src["x"], src["y"], src["flux"], mskimg=mask, background=bkg.level,
                         bkg_rms=bkg.rms, gain=gain, saturate=saturate, product=str(path))
    wcs = WCS(header)
    cat = psfcat_table(fit, src, wcs, float(header["MAGZP"]))
    src = Table(src, copy=True)
    src["ra"], src["dec"] = wcs.all_pix2world(np.asarray(src["x"]), np.asarray(src["y"]), 0)
    return data, header, mask, var, psf, cat, src


def subtract_pair(sciimg, refimg, out, *, config: Config | None = None) -> list[Path]:
    """ZOGY subtraction of ``refimg`` from ``sciimg`` (FITS files), products written under ``out``.

    Parameters
    ----------
    sciimg, refimg : path-like
        Calibrated images with a celestial WCS and MAGZP (DN at that zero point).
    out : path-like
        Output folder (created).
    config : `~ztfsds.config.Config`, optional

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    ztfsds.errors.InputError
        An unreadable file, no image HDU, or no WCS / MAGZP (the error names the file and the keyword).
    """
    from .runner import subtract_images

    config = config or Config()
    sci_path, ref_path, out = Path(sciimg), Path(refimg), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sci, sh, smask, svar, spsf, _, _ = _image_set(sci_path, "sci", config)
    ref, rh, rmask, rvar, rpsf, rcat, rsrc = _image_set(ref_path, "ref", config)
    sub = subtract_images(sci, sh, smask, svar, spsf, ref, rh, rmask, rvar, rpsf, params=config.subtract,
                          refcat=rcat, ref_sources=rsrc, photom=config.photom, product=sci_path.name)
    stem = _stem(sci_path)
    h = sh.copy()
    h["REFIMG"] = (ref_path.name, "reference image")
    h["DIFFMLIM"] = (round(sub.maglim, 3), "5-sigma mag limit of the difference image")
    h["DIFSIGMA"] = (float(sub.sigma), "background noise of D [DN]")
    h["NCANDS"] = (len(sub.candidates), "candidates with |Scorr| >= threshold")
    paths = []
    for suffix, hdul in ((f"{stem}_scimrefdiffimg.fits", fits.HDUList([fits.PrimaryHDU(sub.diff, h)])),
                         (f"{stem}_diffimgpsf.fits", sub.psf.to_hdulist())):
        with atomic_write(out / suffix) as tmp:
            hdul.writeto(tmp)
        paths.append(out / suffix)
    cand = table_hdulist(h, sub.candidates, "CANDIDATES")
    cand.append(fits.ImageHDU(sub.cutouts, name="CUTOUTS"))
    with atomic_write(out / f"{stem}_candidates.fits") as tmp:
        cand.writeto(tmp)
    paths.append(out / f"{stem}_candidates.fits")
    return paths
