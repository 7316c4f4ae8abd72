"""Matched lightcurves as a HATS catalog: HEALPix-partitioned Parquet, readable by lsdb.

One row per object and quadrant-filter with the public data releases' columns (``objectid``,
``filterid``, ``fieldid``, ``rcid``, ``objra``, ``objdec``, ``nepochs`` and the per-epoch lists ``hmjd``,
``mag``, ``magerr``, ``clrcoeff``, ``catflags``, with the DR files' types), followed by ztfsds's
per-epoch additions that the IRSA lightcurve service returns (`EXTENDED_COLUMNS`: ``expid``, ``mjd``,
``hjd`` (full precision: the public ``hmjd`` is float32, ~6 minutes at MJD 59000), ``ra``, ``dec``,
``chi``, ``sharp``, ``programid``, ``limitmag``, ``magzp``, ``magzprms``, ``clrcounc``, ``exptime``,
``airmass``, ``filefracday``), and the HATS spatial index ``_healpix_29`` (the nested HEALPix
pixel of order 29 of ``objra``, ``objdec``).

Layout (HATS, as lsdb/hats read it)::

    <catalog>/properties                       key=value: obs_collection, dataproduct_type=object,
                                               hats_nrows, hats_col_ra, hats_col_dec, hats_order...
    <catalog>/partition_info.csv               Norder,Npix of every partition
    <catalog>/dataset/_common_metadata         the Parquet schema
    <catalog>/dataset/_metadata                the schema and every file's row groups
    <catalog>/dataset/Norder=K/Dir=D/Npix=N.parquet   D = 10000 * (N // 10000)

Partitions are adaptive: a HEALPix pixel holding more than ``max_rows`` objects is split into its four
children, down to ``max_order``. Rows in a file are sorted by ``_healpix_29``.

`write_hats` writes the whole catalog into a temporary directory next to it and swaps it in with two
renames (the old one is removed after), so a reader sees the old catalog or the new one, never a mix
of partitions (between the two renames, for microseconds, the path does not exist).
`update_lightcurves` replaces one or more quadrant-filters' rows (the monthly matchfile update) and
leaves the others as they were.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from astropy.table import Table

from ..catalogs.healpix import cone_pixels, healpix_index
from ..errors import InputError
from ..products.ids import lightcurve_oid
from .matchfile import MatchFile

__all__ = [
    "lightcurve_table",
    "write_hats",
    "read_lightcurves",
    "read_hats_arrow",
    "update_lightcurves",
    "read_dr_parquet",
    "arrow_to_table",
    "table_to_arrow",
    "PUBLIC_SCHEMA",
    "EXTENDED_COLUMNS",
    "HEALPIX_COLUMN",
]

log = logging.getLogger(__name__)

#: The HATS spatial-index column.
HEALPIX_COLUMN = "_healpix_29"

#: Columns and types of the public DR lightcurve files (DR5 Parquet).
PUBLIC_SCHEMA = pa.schema([
    ("objectid", pa.int64()), ("filterid", pa.uint8()), ("fieldid", pa.int16()), ("rcid", pa.uint8()),
    ("objra", pa.float32()), ("objdec", pa.float32()), ("nepochs", pa.int64()),
    ("hmjd", pa.list_(pa.float32())), ("mag", pa.list_(pa.float32())), ("magerr", pa.list_(pa.float32())),
    ("clrcoeff", pa.list_(pa.float32())), ("catflags", pa.list_(pa.uint16())),
])

#: ztfsds's per-epoch list columns after the public ones: (name, value type, where it comes from).
EXTENDED_COLUMNS = (
    ("expid", pa.int64(), "sourcedata"), ("mjd", pa.float64(), "sourcedata"), ("hjd", pa.float64(), "sourcedata"),
    ("ra", pa.float64(), "sourcedata"),
    ("dec", pa.float64(), "sourcedata"), ("chi", pa.float32(), "sourcedata"), ("sharp", pa.float32(), "sourcedata"),
    ("programid", pa.int16(), "sourcedata"), ("limitmag", pa.float32(), "exposures"),
    ("magzp", pa.float32(), "exposures"), ("magzprms", pa.float32(), "exposures"),
    ("clrcounc", pa.float32(), "exposures"), ("exptime", pa.float32(), "exposures"),
    ("airmass", pa.float32(), "exposures"), ("filefracday", pa.int64(), "exposures"),
)
_EXPOSURE_SOURCE = {"filefracday": "fracday"}


def _list_array(values: np.ndarray, offsets: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values).cast(value_type))


def lightcurve_table(matchfile: MatchFile, *, extended: bool = True) -> pa.Table:
    """The public-release lightcurve rows of one matchfile.

    Parameters
    ----------
    matchfile : MatchFile
        A calibrated matchfile (`ztfsds.match.calibrate`).
    extended : bool, optional
        Append ztfsds's per-epoch columns (`EXTENDED_COLUMNS`).

    Returns
    -------
    pyarrow.Table
        One row per object with at least one detection, sorted by ``objectid``: ``objectid`` =
        ``field*10**12 + fid*10**11 + ccdid*10**9 + qid*10**8 + matchid + 1``, ``objra``, ``objdec`` [deg],
        ``nepochs`` and the per-epoch lists in time order (``hmjd`` = HJD - 2400000.5 [day], ``mag``,
        ``magerr`` [mag], ``clrcoeff``, ``catflags``), then `HEALPIX_COLUMN`.
    """
    sd = matchfile.sourcedata
    src = matchfile.sources
    exp = matchfile.exposures
    field, fid, ccdid, qid, rcid = matchfile.field, matchfile.filterid, matchfile.ccdid, matchfile.qid, matchfile.rcid
    matchid = np.asarray(sd["matchid"], dtype=np.int64)
    order = np.lexsort((np.asarray(sd["expid"]), np.asarray(sd["mjd"]), matchid))
    matchid = matchid[order]
    ids, starts, counts = np.unique(matchid, return_index=True, return_counts=True)
    offsets = np.r_[starts, len(matchid)]
    src_ids = np.asarray(src["matchid"], dtype=np.int64)
    src_order = np.argsort(src_ids)
    pos = src_order[np.searchsorted(src_ids, ids, sorter=src_order)]
    ra = np.asarray(src["ra"], dtype=np.float64)[pos]
    dec = np.asarray(src["dec"], dtype=np.float64)[pos]
    exp_ids = np.asarray(exp["expid"], dtype=np.int64)
    exp_order = np.argsort(exp_ids)
    epos = exp_order[np.searchsorted(exp_ids, np.asarray(sd["expid"], dtype=np.int64)[order], sorter=exp_order)]
    n = len(ids)
    if n and not 0 <= int(ids.max()) + 1 < 10**8:
        raise ValueError(f"matchid {int(ids.max())} does not fit the 8-digit running number of an objectid")
    objectid = lightcurve_oid(field, fid, ccdid, qid, 0) + ids + 1
    cols = {
        "objectid": pa.array(objectid, pa.int64()),
        "filterid": pa.array(np.full(n, fid), pa.uint8()),
        "fieldid": pa.array(np.full(n, field), pa.int16()),
        "rcid": pa.array(np.full(n, rcid), pa.uint8()),
        "objra": pa.array(ra.astype(np.float32)),
        "objdec": pa.array(dec.astype(np.float32)),
        "nepochs": pa.array(counts.astype(np.int64)),
        "hmjd": _list_array(np.asarray(sd["hjd"], dtype=np.float64)[order] - 2400000.5, offsets, pa.float32()),
        "mag": _list_array(np.asarray(sd["mag"])[order], offsets, pa.float32()),
        "magerr": _list_array(np.asarray(sd["magerr"])[order], offsets, pa.float32()),
        "clrcoeff": _list_array(np.asarray(exp["clrcoeff"])[epos], offsets, pa.float32()),
        "catflags": _list_array(np.asarray(sd["catflags"])[order], offsets, pa.uint16()),
    }
    if extended:
        for name, vtype, where in EXTENDED_COLUMNS:
            if where == "sourcedata":
                values = np.asarray(sd[name])[order]
            else:
                values = np.asarray(exp[_EXPOSURE_SOURCE.get(name, name)])[epos]
            cols[name] = _list_array(values, offsets, vtype)
    cols[HEALPIX_COLUMN] = pa.array(healpix_index(ra, dec, order=29).astype(np.int64))
    table = pa.table(cols)
    return table.sort_by("objectid")


def _radec_columns(table: pa.Table, ra_column: str, dec_column: str) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(table.column(ra_column).to_numpy(zero_copy_only=False), dtype=np.float64),
            np.asarray(table.column(dec_column).to_numpy(zero_copy_only=False), dtype=np.float64))


def _with_healpix(table: pa.Table, ra_column: str, dec_column: str) -> pa.Table:
    if HEALPIX_COLUMN in table.column_names:
        return table
    ra, dec = _radec_columns(table, ra_column, dec_column)
    return table.append_column(HEALPIX_COLUMN, pa.array(healpix_index(ra, dec, order=29).astype(np.int64)))


def _partitions(hpx: np.ndarray, max_rows: int, max_order: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive (order, pixel) of every row: pixels with more than ``max_rows`` rows split into children."""
    order = np.zeros(len(hpx), dtype=np.int64)
    pixel = hpx >> 58
    todo = np.ones(len(hpx), dtype=bool)
    for k in range(0, max_order + 1):
        if not np.any(todo):
            break
        pix_k = hpx[todo] >> (2 * (29 - k))
        uniq, inv, cnt = np.unique(pix_k, return_inverse=True, return_counts=True)
        leaf = (cnt <= max_rows) | (k == max_order)
        rows = np.flatnonzero(todo)
        done = leaf[inv]
        order[rows[done]] = k
        pixel[rows[done]] = pix_k[done]
        todo[rows[done]] = False
    return order, pixel


def _partition_relpath(norder: int, npix: int) -> str:
    return f"dataset/Norder={norder}/Dir={10000 * (npix // 10000)}/Npix={npix}.parquet"


@contextlib.contextmanager
def _swapped_directory(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}-{tmp.name[-8:]}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_hats(table: pa.Table | Table, path: str | os.PathLike, *, name: str | None = None,
               max_rows: int = 200_000, max_order: int = 10, ra_column: str = "objra",
               dec_column: str = "objdec") -> Path:
    """Write a catalog in the HATS layout, replacing any catalog at ``path`` at once.

    Parameters
    ----------
    table : pyarrow.Table or `~astropy.table.Table`
        The rows (e.g. `lightcurve_table` output or a DR lightcurve file); `HEALPIX_COLUMN` is computed
        from the position columns if absent.
    path : path-like
        The catalog directory.
    name : str, optional
        ``obs_collection`` of the ``properties`` (default: the directory name).
    max_rows : int, optional
        Largest partition before it is split.
    max_order : int, optional
        Deepest partition order.
    ra_column, dec_column : str, optional
        The position columns [deg].

    Returns
    -------
    pathlib.Path
        The catalog directory.
    """
    path = Path(path)
    if isinstance(table, Table):
        table = table_to_arrow(table)
    drop = [c for c in ("__index_level_0__",) if c in table.column_names]
    if drop:
        table = table.drop_columns(drop)
    table = table.replace_schema_metadata(None)
    table = _with_healpix(table, ra_column, dec_column)
    hpx = np.asarray(table.column(HEALPIX_COLUMN).to_numpy(), dtype=np.int64)
    norder, npix = _partitions(hpx, max_rows, max_order)
    key = norder * (1 << 40) + npix
    rows_sorted = np.lexsort((hpx, key))
    keys = key[rows_sorted]
    bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, dtype=np.int64)
    bounds = np.r_[bounds, len(keys)]
    with _swapped_directory(path) as tmp:
        parts = []
        metadata = []
        for b0, b1 in zip(bounds[:-1], bounds[1:]):
            rows = rows_sorted[b0:b1]
            k, p = int(norder[rows[0]]), int(npix[rows[0]])
            rel = _partition_relpath(k, p)
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            part = table.take(pa.array(rows))
            collector = []
            pq.write_table(part, out, compression="zstd", metadata_collector=collector)
            collector[0].set_file_path(rel[len("dataset/"):])
            metadata.append(collector[0])
            parts.append((k, p, len(rows)))
        (tmp / "dataset").mkdir(exist_ok=True)
        pq.write_metadata(table.schema, tmp / "dataset" / "_common_metadata")
        pq.write_metadata(table.schema, tmp / "dataset" / "_metadata",
                          metadata_collector=metadata if metadata else None)
        with open(tmp / "partition_info.csv", "w") as fh:
            fh.write("Norder,Npix\n")
            for k, p, _ in sorted(parts):
                fh.write(f"{k},{p}\n")
        orders = [k for k, _, _ in parts]
        sky_fraction = sum(1.0 / (12 * 4**k) for k in orders)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MUTC")
        props = {
            "obs_collection": name or path.name,
            "dataproduct_type": "object",
            "hats_nrows": str(table.num_rows),
            "hats_col_ra": ra_column,
            "hats_col_dec": dec_column,
            "hats_col_healpix": HEALPIX_COLUMN,
            "hats_col_healpix_order": "29",
            "hats_max_rows": str(max_rows),
            "hats_order": str(max(orders) if orders else 0),
            "moc_sky_fraction": f"{sky_fraction:.5f}",
            "hats_npix_suffix": ".parquet",
            "hats_builder": "ztfsds",
            "hats_creation_date": now,
            "hats_estsize": str(int(math.ceil(sum(f.stat().st_size for f in tmp.rglob("*.parquet")) / 1024))),
            "hats_release_date": now[:10],
            "hats_version": "v0.1",
        }
        with open(tmp / "properties", "w") as fh:
            fh.write("#HATS catalog\n")
            for k, v in props.items():
                fh.write(f"{k}={v}\n")
    log.info("wrote HATS catalog %s: %d rows in %d partitions", path, table.num_rows, len(parts))
    return path


def _read_properties(path: Path) -> dict:
    props = {}
    file = path / "properties"
    if not file.exists():
        file = path / "hats.properties"
    if not file.exists():
        raise InputError(path, "not a HATS catalog: no 'properties' file")
    for line in file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        props[k.strip()] = v.strip()
    return props


def _read_partitions(path: Path) -> list[tuple[int, int]]:
    info = path / "partition_info.csv"
    if not info.exists():
        raise InputError(path, "not a HATS catalog: no partition_info.csv")
    lines = info.read_text().splitlines()
    header = [h.strip() for h in lines[0].split(",")]
    try:
        io, ip = header.index("Norder"), header.index("Npix")
    except ValueError as exc:
        raise InputError(info, f"partition_info.csv header {header} lacks Norder/Npix") from exc
    out = []
    for line in lines[1:]:
        if line.strip():
            f = line.split(",")
            out.append((int(f[io]), int(f[ip])))
    return out


def read_hats_arrow(path: str | os.PathLike, *, ids: Iterable[int] | None = None,
                    cone: tuple[float, float, float] | None = None, columns: list[str] | None = None,
                    id_column: str = "objectid") -> pa.Table:
    """Rows of a HATS catalog as a pyarrow Table (see `read_lightcurves`)."""
    path = Path(path)
    props = _read_properties(path)
    parts = _read_partitions(path)
    ra_col, dec_col = props.get("hats_col_ra", "objra"), props.get("hats_col_dec", "objdec")
    if cone is not None:
        ra0, dec0, radius = (float(v) for v in cone)
        if not (radius > 0 and math.isfinite(ra0) and -90 <= dec0 <= 90):
            raise InputError(path, f"invalid cone {cone}")
        wanted = set()
        for order in sorted({k for k, _ in parts}):
            pix = set(int(p) for p in cone_pixels(ra0, dec0, radius, order=order))
            wanted.update((k, p) for k, p in parts if k == order and p in pix)
        parts = [kp for kp in parts if kp in wanted]
    filters = None
    if ids is not None:
        ids = [int(i) for i in ids]
        filters = [(id_column, "in", ids)] if ids else None
        if not ids:
            parts = []
    read_cols = None
    if columns is not None:
        read_cols = list(dict.fromkeys(list(columns) + ([ra_col, dec_col] if cone is not None else [])))
    tables = []
    schema = pq.read_schema(path / "dataset" / "_common_metadata") if (path / "dataset" / "_common_metadata").exists() \
        else None
    for k, p in parts:
        file = path / _partition_relpath(k, p)
        if not file.exists():
            raise InputError(file, "partition listed in partition_info.csv is missing")
        t = pq.read_table(file, columns=read_cols, filters=filters)
        if t.num_rows:
            tables.append(t)
    if not tables:
        if schema is not None:
            empty = schema.empty_table()
            return empty.select(read_cols) if read_cols else empty
        return pa.table({})
    table = pa.concat_tables(tables, promote_options="default")
    if cone is not None:
        ra, dec = _radec_columns(table, ra_col, dec_col)
        r0, d0 = math.radians(ra0), math.radians(dec0)
        rr, dd = np.radians(ra), np.radians(dec)
        cosd = np.sin(d0) * np.sin(dd) + np.cos(d0) * np.cos(dd) * np.cos(rr - r0)
        keep = cosd >= math.cos(math.radians(radius))
        table = table.filter(pa.array(keep))
    if columns is not None:
        table = table.select(list(columns))
    return table


def arrow_to_table(table: pa.Table) -> Table:
    """A pyarrow Table as an astropy Table; list columns become object columns of numpy arrays."""
    out = Table()
    for name in table.column_names:
        col = table.column(name).combine_chunks() if table.num_rows else table.column(name)
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            if isinstance(col, pa.ChunkedArray):
                col = pa.concat_arrays(col.chunks) if col.num_chunks else pa.array([], col.type)
            offsets = np.asarray(col.offsets.to_numpy(), dtype=np.int64)
            values = col.flatten().to_numpy(zero_copy_only=False)
            arr = np.empty(len(col), dtype=object)
            for i in range(len(col)):
                arr[i] = values[offsets[i]:offsets[i + 1]].copy()
            out[name] = arr
        else:
            out[name] = np.asarray(col.to_numpy(zero_copy_only=False))
    return out


def table_to_arrow(table: Table, schema: pa.Schema | None = None) -> pa.Table:
    """An astropy Table (with object columns of arrays for lists) as a pyarrow Table."""
    cols = {}
    for name in table.colnames:
        data = table[name]
        ftype = schema.field(name).type if schema is not None and name in schema.names else None
        if data.dtype == object:
            arrays = [np.asarray(v) for v in data]
            lengths = np.array([len(a) for a in arrays], dtype=np.int64)
            offsets = np.r_[0, np.cumsum(lengths)]
            values = np.concatenate(arrays) if arrays else np.zeros(0)
            vtype = ftype.value_type if ftype is not None else pa.from_numpy_dtype(values.dtype)
            cols[name] = _list_array(values, offsets, vtype)
        else:
            cols[name] = pa.array(np.asarray(data), type=ftype)
    return pa.table(cols)


def read_lightcurves(path: str | os.PathLike, ids: Iterable[int] | None = None,
                     cone: tuple[float, float, float] | None = None, *, columns: list[str] | None = None) -> Table:
    """Read lightcurves from a HATS catalog written by `write_hats` (or any HATS catalog).

    Parameters
    ----------
    path : path-like
        The catalog directory.
    ids : iterable of int, optional
        Only these ``objectid``.
    cone : tuple of float, optional
        (ra, dec, radius) [deg]: only objects within ``radius`` of the position; only the partitions
        overlapping the cone are read.
    columns : list of str, optional
        Only these columns.

    Returns
    -------
    `~astropy.table.Table`
        One row per object; per-epoch columns are object columns holding one numpy array per row.

    Raises
    ------
    ztfsds.errors.InputError
        If ``path`` is not a HATS catalog or a partition file is missing.
    """
    return arrow_to_table(read_hats_arrow(path, ids=ids, cone=cone, columns=columns))


def read_dr_parquet(path: str | os.PathLike) -> pa.Table:
    """A public-release lightcurve Parquet file (DR5 and later) as a pyarrow Table, without the pandas index."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(path, f"not a readable Parquet lightcurve file ({exc})") from exc
    missing = [f.name for f in PUBLIC_SCHEMA if f.name not in table.column_names]
    if missing:
        raise InputError(path, f"not a ZTF lightcurve file: columns {', '.join(missing)} missing")
    if "__index_level_0__" in table.column_names:
        table = table.drop_columns(["__index_level_0__"])
    return table.replace_schema_metadata(None)


def update_lightcurves(path: str | os.PathLike, new: pa.Table, *, name: str | None = None, max_rows: int = 200_000,
                       max_order: int = 10) -> Path:
    """Replace the rows of the quadrant-filters present in ``new`` in a HATS catalog (create it if absent).

    Parameters
    ----------
    path : path-like
        The catalog directory.
    new : pyarrow.Table
        Complete lightcurves of one or more (``fieldid``, ``rcid``, ``filterid``) (e.g. `lightcurve_table`
        of an updated matchfile): every earlier row of those quadrant-filters is dropped, the others kept.
    name, max_rows, max_order
        As in `write_hats`.

    Returns
    -------
    pathlib.Path
        The catalog directory.
    """
    path = Path(path)
    new = _with_healpix(new, "objra", "objdec")
    if (path / "partition_info.csv").exists():
        old = read_hats_arrow(path)
        if old.num_rows:
            def qkey(t):
                return (pc.cast(t.column("fieldid"), pa.int64()).to_numpy() * 1000
                        + pc.cast(t.column("rcid"), pa.int64()).to_numpy() * 10
                        + pc.cast(t.column("filterid"), pa.int64()).to_numpy())
            drop = np.isin(qkey(old), np.unique(qkey(new)))
            old = old.filter(pa.array(~drop))
            new = pa.concat_tables([old, new], promote_options="default") if old.num_rows else new
    table = new.sort_by("objectid")
    return write_hats(table, path, name=name, max_rows=max_rows, max_order=max_order)
