"""Alert cutouts: 63x63 stamps as gzipped single-HDU FITS files, byte-compatible with real ZTF packets.

A real packet's ``cutoutScience``, ``cutoutTemplate`` and ``cutoutDifference`` each hold ``{fileName,
stampData}`` where ``stampData`` is a gzip stream (IPAC: level 9, header ``xfl=2``; ours: level 1) of a FITS
file with one primary HDU and nothing else: the cards ``SIMPLE``, ``BITPIX = -32``, ``NAXIS = 2``,
``NAXIS1``, ``NAXIS2``, ``BUNIT = 'DN'`` (2018 difference stamps add ``SSNRMS``, ``DSDIFF``, ``DSNRMS``),
``END``, then the big-endian float32 pixels padded to 2880 bytes (20160 bytes for 63x63). Off-image pixels
are NaN (2019 onwards; earlier stamps were cropped to e.g. 41x63). Real stamps write ``SIMPLE  =  T``
outside the fixed format, which astropy warns about; `cutout_array` parses the header itself and reads
both, and `cutout_bytes` writes the standard card.

File names (`cutout_filenames`): ``candid<candid>_pid<pid>_targ_sci.fits.gz``,
``candid<candid>_ref.fits.gz`` and ``candid<candid>_pid<pid>_targ_scimref.fits.gz`` for a positive
candidate or ``..._targ_refmsci.fits.gz`` for a negative one, whose difference stamp is reference minus
science (the transient appears positive in it).
"""

from __future__ import annotations

import gzip
import math
import zlib

import numpy as np

from ..errors import AlertPacketError

__all__ = ["cutout_bytes", "cutout_array", "cutout_cards", "cutout_filenames", "CUTOUT_SIZE"]

#: Side of a ZTF alert cutout [px].
CUTOUT_SIZE = 63

_BLOCK = 2880
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "END", "BSCALE", "BZERO", "PCOUNT",
               "GCOUNT", "BUNIT"}
_BITPIX_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _card(key: str, value, comment: str | None = None) -> bytes:
    """One fixed-format 80-character header card."""
    if isinstance(value, bool):
        text = "T" if value else "F"
    elif isinstance(value, (int, np.integer)):
        text = str(int(value))
    elif isinstance(value, (float, np.floating)):
        value = float(value)
        text = repr(value).upper() if math.isfinite(value) else "'NaN'"
        if "E" not in text and "." not in text and text != "'NaN'":
            text += "."
    else:
        text = "'" + str(value).replace("'", "''").ljust(8) + "'"
    card = f"{key.upper():<8}= "
    card += text.rjust(20) if not text.startswith("'") else text
    if comment:
        card += " / " + str(comment)
    card = card[:80]
    return card.ljust(80).encode("ascii", "replace")


_PLAIN_HEADERS: dict = {}


def _header_block(shape, extra) -> bytes:
    if not extra:
        key = tuple(shape)
        block = _PLAIN_HEADERS.get(key)
        if block is None:
            block = _PLAIN_HEADERS[key] = _build_header(shape, ())
        return block
    return _build_header(shape, extra)


def _build_header(shape, extra) -> bytes:
    cards = [_card("SIMPLE", True), _card("BITPIX", -32), _card("NAXIS", 2), _card("NAXIS1", int(shape[1])),
             _card("NAXIS2", int(shape[0])), _card("BUNIT", "DN")]
    for key, value, comment in extra:
        cards.append(_card(key, value, comment))
    cards.append(b"END".ljust(80))
    raw = b"".join(cards)
    return raw + b" " * (-len(raw) % _BLOCK)


def _extra_cards(header):
    """``(key, value, comment)`` of the non-structural cards of a Header, a mapping or a list of tuples."""
    if header is None:
        return []
    out = []
    if hasattr(header, "cards"):
        items = [(c.keyword, c.value, c.comment) for c in header.cards]
    elif isinstance(header, dict):
        items = [(k, v[0], v[1]) if isinstance(v, tuple) else (k, v, None) for k, v in header.items()]
    else:
        items = [tuple(c) + (None,) * (3 - len(c)) for c in header]
    for key, value, comment in items:
        if not key or key.upper() in _STRUCTURAL or key.upper() in ("COMMENT", "HISTORY", ""):
            continue
        if len(key) > 8:
            raise AlertPacketError(None, f"cutout header keyword {key!r} is longer than 8 characters")
        out.append((key, value, comment))
    return out


def cutout_bytes(stamp, *, header=None, compresslevel: int = 1) -> bytes:
    """A stamp as the gzipped FITS file of a ZTF alert cutout (``stampData``).

    Parameters
    ----------
    stamp : array-like
        2-D image [DN]; written as big-endian float32 (NaN kept: off-image pixels).
    header : `~astropy.io.fits.Header` or dict or list of tuples, optional
        Extra cards after ``BUNIT`` (structural keywords are ignored), e.g. ``{'DSNRMS': (5.6, 'ratio:
        D/stddev(D)')}``.
    compresslevel : int, optional
        gzip level. IPAC uses 9 (gzip header ``xfl=2``); on real stamps level 1 (the default) is 2.5x
        faster (0.26 against 0.64 ms a stamp, 1500 stamps a quadrant) for 1 % more bytes.

    Returns
    -------
    bytes
        gzip stream (``mtime`` 0, so equal stamps give equal bytes).

    Raises
    ------
    ztfsds.errors.AlertPacketError
        The stamp is not 2-D.

    Examples
    --------
    >>> import numpy as np
    >>> from ztfsds.alerts.cutout import cutout_bytes, cutout_array
    >>> stamp = np.arange(63 * 63, dtype=np.float32).reshape(63, 63)
    >>> data = cutout_bytes(stamp)
    >>> bool(np.array_equal(cutout_array(data), stamp))
    True
    """
    arr = np.asarray(stamp)
    if arr.ndim != 2:
        raise AlertPacketError(None, f"a cutout must be a 2-D image, got shape {arr.shape}")
    pixels = np.ascontiguousarray(arr, dtype=">f4").tobytes()
    raw = _header_block(arr.shape, _extra_cards(header)) + pixels + b"\0" * (-len(pixels) % _BLOCK)
    return gzip.compress(raw, compresslevel=compresslevel, mtime=0)


def _parse_value(text: str):
    text = text.strip()
    if text.startswith("'"):
        end = text.find("'", 1)
        while end != -1 and text[end + 1:end + 2] == "'":
            end = text.find("'", end + 2)
        return text[1:end if end != -1 else None].replace("''", "'").rstrip()
    value = text.split("/", 1)[0].strip()
    if value in ("T", "F"):
        return value == "T"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value.replace("D", "E"))
    except ValueError:
        return value


def _decompress(data: bytes, what) -> bytes:
    data = bytes(data)
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise AlertPacketError(what, f"cutout is not a valid gzip stream: {exc}") from None
    return data


def _cards(raw: bytes, what) -> tuple[dict, int]:
    """The header cards of the primary HDU and the offset of its data."""
    cards: dict = {}
    pos = 0
    while True:
        if pos + 80 > len(raw):
            raise AlertPacketError(what, "cutout FITS header has no END card (truncated stamp?)")
        card = raw[pos:pos + 80].decode("ascii", "replace")
        pos += 80
        key = card[:8].strip()
        if key == "END":
            break
        if card[8:10] == "= " or (key == "SIMPLE" and "=" in card[8:11]):
            cards[key] = _parse_value(card[card.index("=") + 1:])
    if not raw.startswith(b"SIMPLE"):
        raise AlertPacketError(what, "cutout is not a FITS file (no SIMPLE card)")
    return cards, pos + (-pos % _BLOCK)


def cutout_cards(data: bytes) -> dict:
    """The header cards (keyword -> value) of a cutout's FITS file (gzipped or not)."""
    raw = _decompress(data, None)
    return _cards(raw, None)[0]


def cutout_array(data: bytes, *, name: str | None = None) -> np.ndarray:
    """The image of an alert cutout (``stampData``: gzipped FITS, or plain FITS).

    Parameters
    ----------
    data : bytes
        The cutout's ``stampData``.
    name : str, optional
        The cutout's ``fileName`` (named in errors).

    Returns
    -------
    numpy.ndarray
        ``(NAXIS2, NAXIS1)`` float32 in native byte order (float64 for BITPIX -64), ``BSCALE``/``BZERO``
        applied to integer images; NaN where the stamp has none (off the image).

    Raises
    ------
    ztfsds.errors.AlertPacketError
        Not gzip/FITS, a truncated stamp, or not a 2-D image.
    """
    raw = _decompress(data, name)
    cards, offset = _cards(raw, name)
    bitpix = cards.get("BITPIX")
    if bitpix not in _BITPIX_DTYPES:
        raise AlertPacketError(name, f"cutout has an invalid BITPIX {bitpix!r}")
    if cards.get("NAXIS") != 2:
        raise AlertPacketError(name, f"cutout is not a 2-D image (NAXIS = {cards.get('NAXIS')!r})")
    nx, ny = int(cards.get("NAXIS1", 0)), int(cards.get("NAXIS2", 0))
    dtype = np.dtype(_BITPIX_DTYPES[bitpix])
    nbytes = nx * ny * dtype.itemsize
    if offset + nbytes > len(raw):
        raise AlertPacketError(name, f"cutout data truncated: {max(len(raw) - offset, 0)} bytes for a {ny}x{nx} "
                                     f"BITPIX {bitpix} image ({nbytes} bytes)")
    image = np.frombuffer(raw, dtype=dtype, count=nx * ny, offset=offset).reshape(ny, nx)
    out_dtype = np.float64 if bitpix == -64 else np.float32
    image = image.astype(out_dtype)
    if bitpix > 0:
        bscale, bzero = float(cards.get("BSCALE", 1.0)), float(cards.get("BZERO", 0.0))
        if bscale != 1.0 or bzero != 0.0:
            image = (image * bscale + bzero).astype(out_dtype)
    return image


def cutout_filenames(candid: int, pid: int, isdiffpos: str) -> tuple[str, str, str]:
    """The ``fileName`` of the science, template and difference cutouts, as IPAC names them."""
    negative = str(isdiffpos) in ("f", "0")
    return (f"candid{int(candid)}_pid{int(pid)}_targ_sci.fits.gz", f"candid{int(candid)}_ref.fits.gz",
            f"candid{int(candid)}_pid{int(pid)}_targ_{'refmsci' if negative else 'scimref'}.fits.gz")
