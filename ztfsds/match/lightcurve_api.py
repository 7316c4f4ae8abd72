"""Lightcurve retrieval with the parameters and output columns of IRSA's ZTF lightcurve service.

`query_lightcurves` takes the query of ``https://irsa.ipac.caltech.edu/cgi-bin/ZTF/nph_light_curves``
(as a dict or the URL query string) and answers from a HATS lightcurve catalog under the data root, so
that clients written for IRSA can point at ztfsds:

==================  ==============================================================================
``ID``              object id(s) (``oid``); repeat the parameter or separate by commas
``POS``             ``CIRCLE ra dec radius`` [deg], ``0 < radius <= 0.1667`` (also ``CIRCLE=ra dec r``)
``BAND``            ``lambda_min lambda_max`` [m] (or one wavelength): filters whose band overlaps
``BANDNAME``        ``g``, ``r``, ``i`` (comma separated)
``MAG``             ``min max``: objects whose median magnitude is in the range
``NUM_OBS``         minimum number of epochs of an object (also ``NOBS_MIN``)
``TIME``            ``mjd_min mjd_max`` [MJD] (``-Inf``/``Inf`` allowed): epochs in the range
``BAD_CATFLAGS_MASK``  drop epochs whose ``catflags`` share a bit with the mask (e.g. 32768)
``COLLECTION``      catalog name (a directory under ``<root>/match/lightcurves``); default the latest
``FORMAT``          ``VOTABLE`` (default), ``IPAC_TABLE``, ``CSV``, ``TSV``, ``HTML``, ``PARQUET``
==================  ==============================================================================

``BAND``, ``BANDNAME``, ``NUM_OBS`` and ``MAG`` cannot be combined with ``ID`` (as at IRSA). Malformed
parameters raise `LightcurveQueryError` (a `ValueError`) with a message naming the parameter: the
HTTP service answers them with 400.

Output columns, one row per epoch, sorted by ``oid`` and time: ``oid expid hjd mjd mag magerr catflags
filtercode ra dec chi sharp filefracday field ccdid qid limitmag magzp magzprms clrcoeff clrcounc exptime
airmass programid``. ``mjd`` is the exposure start (UTC) and ``hjd`` the heliocentric JD of that instant
(add ``exptime / 2`` for mid-exposure), as IRSA documents. Columns a catalog lacks (a public DR file has
only ``hmjd mag magerr clrcoeff catflags``) are NaN or -1.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from astropy.table import Table

from .. import camera
from ..errors import ZTFSDSError
from ..products import ProductStore
from ..products.fitsio import atomic_write
from .lightcurves import read_hats_arrow
from .runner import DEFAULT_COLLECTION

__all__ = ["query_lightcurves", "parse_query", "write_lightcurves", "plot_lightcurve", "LightcurveQueryError",
           "OUTPUT_COLUMNS", "FORMATS", "MAX_RADIUS"]

log = logging.getLogger(__name__)

#: Largest cone radius the service accepts [deg] (600 arcsec).
MAX_RADIUS = 0.1667

#: Output formats: FORMAT value -> astropy/pyarrow writer.
FORMATS = {"VOTABLE": "votable", "IPAC_TABLE": "ascii.ipac", "CSV": "ascii.csv", "TSV": "ascii.tab",
           "HTML": "ascii.html", "PARQUET": "parquet"}

#: The service's output columns and their types.
OUTPUT_COLUMNS = (
    ("oid", np.int64), ("expid", np.int64), ("hjd", np.float64), ("mjd", np.float64), ("mag", np.float32),
    ("magerr", np.float32), ("catflags", np.int32), ("filtercode", "U2"), ("ra", np.float64), ("dec", np.float64),
    ("chi", np.float32), ("sharp", np.float32), ("filefracday", np.int64), ("field", np.int32), ("ccdid", np.int16),
    ("qid", np.int16), ("limitmag", np.float32), ("magzp", np.float32), ("magzprms", np.float32),
    ("clrcoeff", np.float32), ("clrcounc", np.float32), ("exptime", np.float32), ("airmass", np.float32),
    ("programid", np.int16),
)

_UNITS = {"hjd": "d", "mjd": "d", "mag": "mag", "magerr": "mag", "ra": "deg", "dec": "deg", "limitmag": "mag",
          "magzp": "mag", "magzprms": "mag", "exptime": "s"}
_PARAMS = ("ID", "POS", "CIRCLE", "BAND", "BANDNAME", "MAG", "NUM_OBS", "NOBS_MIN", "TIME", "BAD_CATFLAGS_MASK",
           "COLLECTION", "FORMAT")
_NOT_WITH_ID = ("BAND", "BANDNAME", "MAG", "NUM_OBS", "NOBS_MIN")
_PLOT_COLOURS = {"zg": "tab:green", "zr": "tab:red", "zi": "tab:orange"}


class LightcurveQueryError(ZTFSDSError, ValueError):
    """A lightcurve query parameter is malformed or inconsistent (the HTTP service answers 400)."""


def _values(params: dict, name: str) -> list[str]:
    value = params.get(name)
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    # an empty value (``CIRCLE=`` in a form) counts as absent, as in IRSA's CGI
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def _floats(name: str, text: str, count: tuple[int, ...]) -> list[float]:
    parts = [p for p in re.split(r"[\s,]+", text.strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise LightcurveQueryError(f"{name}={text!r}: expected {' or '.join(map(str, count))} numbers") from None
    if len(values) not in count:
        raise LightcurveQueryError(f"{name}={text!r}: expected {' or '.join(map(str, count))} numbers, "
                                   f"got {len(values)}")
    if any(math.isnan(v) for v in values):
        raise LightcurveQueryError(f"{name}={text!r}: NaN is not allowed")
    return values


def _single(params: dict, name: str) -> str | None:
    values = _values(params, name)
    if len(values) > 1:
        raise LightcurveQueryError(f"{name} given {len(values)} times; give it once")
    return values[0] if values else None


def parse_query(params: dict | str) -> dict:
    """Validate lightcurve-service parameters.

    Parameters
    ----------
    params : dict or str
        ``{name: value or [values]}`` (names case-insensitive) or a URL query string
        (``'POS=CIRCLE+255.57+12.28+0.0028&BANDNAME=r'``).

    Returns
    -------
    dict
        ``ids`` (list of int or None), ``cone`` ((ra, dec, radius) [deg] or None), ``filterids`` (set or None),
        ``mag`` ((min, max) or None), ``nobs_min`` (int), ``time`` ((min, max) [MJD] or None), ``bad_mask``
        (int), ``collection`` (str or None), ``format`` (a key of `FORMATS`).

    Raises
    ------
    LightcurveQueryError
        On an unknown parameter, a malformed value, an inconsistent combination or no ID/POS.
    """
    if isinstance(params, str):
        pairs = parse_qsl(params.lstrip("?"), keep_blank_values=True)
        merged: dict = {}
        for k, v in pairs:
            merged.setdefault(k, []).append(v)
        params = merged
    if not isinstance(params, dict):
        raise LightcurveQueryError(f"parameters must be a dict or a query string, not {type(params).__name__}")
    norm: dict = {}
    for key, value in params.items():
        name = str(key).strip().upper()
        if name not in _PARAMS:
            raise LightcurveQueryError(f"unknown parameter {key!r}; valid parameters: {', '.join(_PARAMS)}")
        vals = value if isinstance(value, (list, tuple)) else [value]
        norm.setdefault(name, []).extend(vals)
    out = {"ids": None, "cone": None, "filterids": None, "mag": None, "nobs_min": 0, "time": None, "bad_mask": 0,
           "collection": None, "format": "VOTABLE"}
    ids = []
    for text in _values(norm, "ID"):
        for part in (p for p in re.split(r"[\s,]+", text) if p):
            try:
                value = int(part)
            except ValueError:
                raise LightcurveQueryError(f"ID={text!r}: object ids are integers") from None
            if value < 0:
                raise LightcurveQueryError(f"ID={text!r}: object ids are positive")
            ids.append(value)
    if _values(norm, "ID") and not ids:
        raise LightcurveQueryError("ID is empty")
    out["ids"] = ids or None
    cones = []
    for text in _values(norm, "POS"):
        m = re.match(r"^\s*CIRCLE\s+(.*)$", text, flags=re.IGNORECASE)
        if not m:
            raise LightcurveQueryError(f"POS={text!r}: expected 'CIRCLE ra dec radius' (degrees)")
        cones.append(_floats("POS", m.group(1), (3,)))
    for text in _values(norm, "CIRCLE"):
        cones.append(_floats("CIRCLE", text, (3,)))
    if len(cones) > 1:
        raise LightcurveQueryError("give one POS (or CIRCLE) per query")
    if cones:
        ra, dec, radius = cones[0]
        if not 0.0 <= ra < 360.0 and not (math.isfinite(ra) and -360 < ra < 720):
            raise LightcurveQueryError(f"POS: right ascension {ra} out of range [0, 360)")
        if not -90.0 <= dec <= 90.0:
            raise LightcurveQueryError(f"POS: declination {dec} out of range [-90, 90]")
        if not 0.0 < radius <= MAX_RADIUS:
            raise LightcurveQueryError(f"POS: radius {radius} deg out of range (0, {MAX_RADIUS}] "
                                       f"(at most 600 arcsec)")
        out["cone"] = (ra % 360.0, dec, radius)
    if out["ids"] is None and out["cone"] is None:
        raise LightcurveQueryError("give ID=<oid> or POS=CIRCLE <ra> <dec> <radius>")
    if out["ids"] is not None:
        clash = [p for p in _NOT_WITH_ID if p in norm]
        if clash:
            raise LightcurveQueryError(f"{', '.join(clash)} cannot be combined with ID")
    filterids = None
    band = _single(norm, "BAND")
    if band is not None:
        lo_hi = _floats("BAND", band, (1, 2))
        lo, hi = (lo_hi[0], lo_hi[0]) if len(lo_hi) == 1 else sorted(lo_hi)
        if lo <= 0 or hi > 1e-4:
            raise LightcurveQueryError(f"BAND={band!r}: wavelengths are in metres (e.g. 'BAND=6e-7 7e-7')")
        filterids = {f.fid for f in (camera.get_filter(c) for c in ("zg", "zr", "zi"))
                     if f.wavelength_min * 1e-10 <= hi and f.wavelength_max * 1e-10 >= lo}
    bandname = _single(norm, "BANDNAME")
    if bandname is not None:
        names = set()
        for part in (p for p in re.split(r"[\s,]+", bandname) if p):
            key = part.lower()
            key = {"g": "zg", "r": "zr", "i": "zi"}.get(key, key)
            if key not in ("zg", "zr", "zi"):
                raise LightcurveQueryError(f"BANDNAME={bandname!r}: use g, r or i")
            names.add(camera.get_filter(key).fid)
        filterids = names if filterids is None else filterids & names
    out["filterids"] = filterids
    mag = _single(norm, "MAG")
    if mag is not None:
        lo, hi = _floats("MAG", mag, (2,))
        if lo > hi:
            raise LightcurveQueryError(f"MAG={mag!r}: minimum above maximum")
        out["mag"] = (lo, hi)
    nobs = [v for name in ("NUM_OBS", "NOBS_MIN") for v in _values(norm, name)]
    if len(nobs) > 1:
        raise LightcurveQueryError("give NUM_OBS (or NOBS_MIN) once")
    if nobs:
        try:
            out["nobs_min"] = int(nobs[0])
        except ValueError:
            raise LightcurveQueryError(f"NUM_OBS={nobs[0]!r}: expected an integer") from None
        if out["nobs_min"] < 0:
            raise LightcurveQueryError(f"NUM_OBS={nobs[0]!r}: must be >= 0")
    time_range = _single(norm, "TIME")
    if time_range is not None:
        lo, hi = _floats("TIME", time_range, (2,))
        if lo > hi:
            raise LightcurveQueryError(f"TIME={time_range!r}: start after end")
        out["time"] = (lo, hi)
    mask = _single(norm, "BAD_CATFLAGS_MASK")
    if mask is not None:
        try:
            out["bad_mask"] = int(mask)
        except ValueError:
            raise LightcurveQueryError(f"BAD_CATFLAGS_MASK={mask!r}: expected an integer") from None
        if not 0 <= out["bad_mask"] < 2**16:
            raise LightcurveQueryError(f"BAD_CATFLAGS_MASK={mask!r}: must be in 0..65535")
    collection = _single(norm, "COLLECTION")
    if collection is not None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", collection) or collection.startswith("."):
            raise LightcurveQueryError(f"COLLECTION={collection!r}: not a collection name")
        out["collection"] = collection
    fmt = _single(norm, "FORMAT")
    if fmt is not None:
        if fmt.upper() not in FORMATS:
            raise LightcurveQueryError(f"FORMAT={fmt!r}: use one of {', '.join(FORMATS)}")
        out["format"] = fmt.upper()
    return out


def _catalog(root, store, catalog, collection) -> Path:
    if catalog is not None:
        return Path(catalog)
    if store is None:
        if root is None:
            raise LightcurveQueryError("no lightcurve data: give root=, store= or catalog=")
        store = ProductStore(root)
    base = store.match_dir / "lightcurves"
    available = sorted(p.name for p in base.iterdir() if (p / "partition_info.csv").exists()) if base.is_dir() else []
    if collection is None:
        if DEFAULT_COLLECTION in available:
            return base / DEFAULT_COLLECTION
        if not available:
            raise LightcurveQueryError(f"{base}: no lightcurve collection (run 'ztfsds match' first)")
        return base / available[-1]
    if collection not in available:
        raise LightcurveQueryError(f"COLLECTION={collection!r}: unknown; available: {', '.join(available) or 'none'}")
    return base / collection


def _flat(table: pa.Table, name: str, dtype, offsets: np.ndarray, fill):
    total = int(offsets[-1]) if len(offsets) else 0
    if name not in table.column_names:
        return np.full(total, fill, dtype=dtype)
    col = table.column(name).combine_chunks()
    values = col.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64 if np.dtype(dtype).kind == "f" else None).astype(dtype)


def query_lightcurves(params: dict | str, *, root: str | os.PathLike | None = None, store: ProductStore | None = None,
                      catalog: str | os.PathLike | None = None) -> Table:
    """Answer a lightcurve query as IRSA's ZTF lightcurve service does.

    Parameters
    ----------
    params : dict or str
        The service's parameters (see the module documentation and `parse_query`).
    root : path-like, optional
        Data root holding ``match/lightcurves/<collection>``.
    store : `~ztfsds.products.ProductStore`, optional
        The same as a store.
    catalog : path-like, optional
        A HATS lightcurve catalog to read directly (``COLLECTION`` is then ignored).

    Returns
    -------
    `~astropy.table.Table`
        One row per epoch with `OUTPUT_COLUMNS`; ``meta['FORMAT']`` is the requested format.

    Raises
    ------
    LightcurveQueryError
        On malformed parameters or an unknown collection.
    """
    query = parse_query(params)
    path = _catalog(root, store, catalog, query["collection"])
    try:
        arrow = read_hats_arrow(path, ids=query["ids"], cone=query["cone"])
    except ZTFSDSError as exc:
        raise LightcurveQueryError(f"{path}: cannot read the lightcurve catalog ({exc})") from exc
    if arrow.num_rows and query["filterids"] is not None:
        fid = pc.cast(arrow.column("filterid"), pa.int64()).to_numpy()
        arrow = arrow.filter(pa.array(np.isin(fid, sorted(query["filterids"]))))
    if arrow.num_rows and query["nobs_min"]:
        arrow = arrow.filter(pa.array(arrow.column("nepochs").to_numpy() >= query["nobs_min"]))
    if arrow.num_rows and query["mag"] is not None:
        med = np.array([np.median(m) if len(m) else np.nan for m in arrow.column("mag").to_pylist()])
        lo, hi = query["mag"]
        arrow = arrow.filter(pa.array((med >= lo) & (med <= hi)))
    return _explode(arrow, query)


def _explode(arrow: pa.Table, query: dict) -> Table:
    n_obj = arrow.num_rows
    if n_obj:
        offsets = np.asarray(arrow.column("mag").combine_chunks().offsets.to_numpy(), dtype=np.int64)
        counts = np.diff(offsets)
    else:
        offsets, counts = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    total = int(offsets[-1])

    def scalar(name, dtype):
        if n_obj == 0:
            return np.zeros(0, dtype=dtype)
        return np.repeat(np.asarray(arrow.column(name).to_numpy(), dtype=dtype), counts)

    out = {}
    out["oid"] = scalar("objectid", np.int64)
    exptime = _flat(arrow, "exptime", np.float32, offsets, np.nan)
    half = np.where(np.isfinite(exptime), exptime / 2.0 / 86400.0, 0.0)
    hmjd = _flat(arrow, "hmjd", np.float64, offsets, np.nan)
    if "hjd" in arrow.column_names:          # ztfsds catalogs: full precision (hmjd is float32)
        hmjd = _flat(arrow, "hjd", np.float64, offsets, np.nan) - 2400000.5
    mjd_mid = _flat(arrow, "mjd", np.float64, offsets, np.nan)
    out["expid"] = _flat(arrow, "expid", np.int64, offsets, -1)
    out["hjd"] = hmjd + 2400000.5 - half
    out["mjd"] = mjd_mid - half
    out["mag"] = _flat(arrow, "mag", np.float32, offsets, np.nan)
    out["magerr"] = _flat(arrow, "magerr", np.float32, offsets, np.nan)
    out["catflags"] = _flat(arrow, "catflags", np.int32, offsets, 0)
    fid = scalar("filterid", np.int64)
    codes = np.array(["", "zg", "zr", "zi"])
    out["filtercode"] = codes[np.clip(fid, 0, 3)] if len(fid) else np.zeros(0, dtype="U2")
    out["ra"] = _flat(arrow, "ra", np.float64, offsets, np.nan)
    out["dec"] = _flat(arrow, "dec", np.float64, offsets, np.nan)
    if total and "ra" not in arrow.column_names:
        out["ra"] = scalar("objra", np.float64)
        out["dec"] = scalar("objdec", np.float64)
    out["chi"] = _flat(arrow, "chi", np.float32, offsets, np.nan)
    out["sharp"] = _flat(arrow, "sharp", np.float32, offsets, np.nan)
    out["filefracday"] = _flat(arrow, "filefracday", np.int64, offsets, -1)
    out["field"] = scalar("fieldid", np.int32)
    rcid = scalar("rcid", np.int64)
    out["ccdid"] = (rcid // 4 + 1).astype(np.int16)
    out["qid"] = (rcid % 4 + 1).astype(np.int16)
    for name in ("limitmag", "magzp", "magzprms", "clrcoeff", "clrcounc"):
        out[name] = _flat(arrow, name, np.float32, offsets, np.nan)
    out["exptime"] = exptime
    out["airmass"] = _flat(arrow, "airmass", np.float32, offsets, np.nan)
    out["programid"] = _flat(arrow, "programid", np.int16, offsets, -1)
    keep = np.ones(total, dtype=bool)
    if query["time"] is not None:
        t = np.where(np.isfinite(out["mjd"]), out["mjd"], out["hjd"] - 2400000.5)
        keep &= (t >= query["time"][0]) & (t <= query["time"][1])
    if query["bad_mask"]:
        keep &= (out["catflags"] & query["bad_mask"]) == 0
    table = Table()
    for name, dtype in OUTPUT_COLUMNS:
        table[name] = np.asarray(out[name])[keep].astype(dtype)
        if name in _UNITS:
            table[name].unit = _UNITS[name]
    if len(table):
        order = np.lexsort((table["mjd"], table["hjd"], table["oid"]))
        table = table[order]
    table.meta["FORMAT"] = query["format"]
    return table


def write_lightcurves(table: Table, path_or_buffer, format: str = "csv") -> None:
    """Write a `query_lightcurves` result as the service would send it.

    Parameters
    ----------
    table : `~astropy.table.Table`
        The lightcurves.
    path_or_buffer : path-like or file-like
        Destination file (written atomically) or an open binary/text buffer.
    format : str, optional
        ``csv``, ``tsv``, ``ipac_table``, ``votable``, ``html`` or ``parquet`` (case-insensitive).

    Raises
    ------
    LightcurveQueryError
        On an unknown format.
    """
    fmt = str(format).upper()
    if fmt not in FORMATS:
        raise LightcurveQueryError(f"format {format!r}: use one of {', '.join(f.lower() for f in FORMATS)}")
    if isinstance(path_or_buffer, (str, os.PathLike)):
        with atomic_write(path_or_buffer) as tmp:
            _write(table, tmp, fmt)
        return
    _write(table, path_or_buffer, fmt)


def _write(table: Table, dest, fmt: str) -> None:
    clean = Table(table, copy=True)
    clean.meta = {}
    if fmt == "PARQUET":
        arrow = pa.table({name: pa.array(np.asarray(clean[name])) for name in clean.colnames})
        pq.write_table(arrow, str(dest) if isinstance(dest, Path) else dest)
        return
    if isinstance(dest, Path):
        clean.write(dest, format=FORMATS[fmt], overwrite=True)
        return
    if fmt == "VOTABLE":
        buf = io.BytesIO()
        clean.write(buf, format="votable")
        data = buf.getvalue()
    else:
        text = io.StringIO()
        clean.write(text, format=FORMATS[fmt])
        data = text.getvalue().encode()
    if isinstance(dest, io.TextIOBase):
        dest.write(data.decode())
    else:
        dest.write(data)


def plot_lightcurve(table: Table, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Plot lightcurves (magnitude against MJD, one colour per filter) into a PNG.

    Parameters
    ----------
    table : `~astropy.table.Table`
        A `query_lightcurves` result (``oid``, ``mjd`` or ``hjd``, ``mag``, ``magerr``, ``filtercode``).
    path : path-like
        The PNG file (written atomically).
    title : str, optional
        Plot title (default: the object ids).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    t = np.asarray(table["mjd"], dtype=np.float64) if len(table) else np.zeros(0)
    if len(table) and not np.any(np.isfinite(t)):
        t = np.asarray(table["hjd"], dtype=np.float64) - 2400000.5
    oids = list(dict.fromkeys(int(o) for o in table["oid"])) if len(table) else []
    markers = "osD^v<>ph*"
    for k, oid in enumerate(oids):
        for code in ("zg", "zr", "zi"):
            sel = (np.asarray(table["oid"]) == oid) & (np.asarray(table["filtercode"]) == code)
            if not np.any(sel):
                continue
            ax.errorbar(t[sel], np.asarray(table["mag"])[sel], yerr=np.asarray(table["magerr"])[sel],
                        fmt=markers[k % len(markers)], ms=3, lw=0.8, color=_PLOT_COLOURS[code],
                        label=f"{oid} {code}")
    if not oids:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
    ax.invert_yaxis()
    ax.set_xlabel("MJD (exposure start, UTC)")
    ax.set_ylabel("magnitude")
    ax.set_title(title or (", ".join(str(o) for o in oids[:4]) + (" ..." if len(oids) > 4 else "")))
    if oids:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
