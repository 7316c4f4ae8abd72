"""`CatalogStore`: calibrator catalogs as HEALPix-partitioned FITS tables under a data root.

::

    <root>/catalogs/<kind>/manifest.json                       what the catalog is (`CatalogManifest`)
    <root>/catalogs/<kind>/Norder=6/Dir=0/Npix=1234.fits       one partition: the sources whose
                                                               reference-epoch position is in nested
                                                               HEALPix pixel 1234 of order 6

``kind`` is ``'gaia'`` or ``'ps1'``. A partition is a FITS binary table (HDU 1, EXTNAME ``CATALOG``)
in the kind's schema (`ztfsds.catalogs.schema`) plus a ``healpix`` column (int64, nested index of
order 14), sorted by ``healpix`` then by the id column, with CHECKSUM/DATASUM cards; its headers say
CATKIND, HPXORDER, HPXPIX, IDXORDER and NROWS. Every file is written atomically
(`ztfsds.products.write_fits`).

Writing (`CatalogStore.write`) merges: rows whose id is already in the catalog replace the old rows
(also when the new position falls in a neighbouring partition), so re-running a build changes
nothing and overlapping fields add no duplicates. Ids are looked for in the partitions the new rows
fall in and their neighbours only: an id re-listed more than a partition (~55') away from its old
position would be a different source and is not found. Writers of one catalog take a lock file
(``<kind>/.lock``), so parallel builds of different fields are safe on one machine.

A build that is killed leaves complete partitions (each is atomic) and possibly a manifest one
build behind: queries find partitions by their file names, not from the manifest, and re-running
the build restores the manifest.

Examples
--------
>>> import tempfile
>>> from astropy.table import Table
>>> from ztfsds.catalogs import CatalogStore
>>> cat = CatalogStore(tempfile.mkdtemp())
>>> rows = Table({"objid": [1, 2], "ra": [10.0, 10.01], "dec": [20.0, 20.0], "gmag": [18.0, 19.0],
...               "rmag": [17.5, 18.5], "imag": [17.3, 18.3], "e_gmag": [0.01, 0.02],
...               "e_rmag": [0.01, 0.02], "e_imag": [0.02, 0.03]})
>>> paths = cat.write("ps1", rows, provenance={"provider": "doctest"})
>>> [p.relative_to(cat.root).as_posix() for p in paths]
['catalogs/ps1/Norder=6/Dir=10000/Npix=19863.fits']
>>> cat.read_manifest("ps1").nrows
2
>>> _ = cat.write("ps1", rows, provenance={"provider": "doctest"})  # idempotent
>>> cat.read_manifest("ps1").nrows
2
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
import threading
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Column, Table, vstack

from .._version import __version__
from ..errors import ConfigError, FITSFormatError, InputError, ProductNotFoundError
from ..products import ProductStore, atomic_write, write_fits
from ..products.fitsio import open_fits
from .healpix import (
    INDEX_ORDER,
    PARTITION_ORDER,
    healpix_index,
    neighbour_pixels,
    partition_of,
    partition_relpath,
)
from .schema import KINDS, get_schema

try:  # POSIX advisory locks; elsewhere builds of one catalog must not run in parallel
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["CatalogManifest", "CatalogStore", "as_catalog_store"]

log = logging.getLogger(__name__)

#: Version of the on-disk layout written in the manifest.
FORMAT_VERSION = 1
_EXTNAME = "CATALOG"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass
class CatalogManifest:
    """What a stored catalog is: ``<root>/catalogs/<kind>/manifest.json``.

    Attributes
    ----------
    kind : str
        ``'gaia'`` or ``'ps1'``.
    order : int
        HEALPix order of the partitions (nested).
    index_order : int
        HEALPix order of the ``healpix`` column.
    id_column : str
        The column rows are deduplicated on.
    reference_epoch : float or None
        Typical epoch of the positions [Julian year] (each Gaia row has its own ``ref_epoch``).
    ref_epoch_range : list of float or None
        Smallest and largest ``ref_epoch`` of the rows (Gaia), [Julian year].
    pm_max : float
        Largest total proper motion of any row [mas/yr] (0 without proper motions); queries at
        another epoch widen their search by ``pm_max x |dt|``.
    columns : list of dict
        ``name``, ``unit``, ``dtype`` of each stored column.
    pixels : dict of int to int
        Rows per partition pixel.
    sources : dict of str to dict
        What each build contributed, keyed by provider and region (``'sim:000655_c13'``):
        ``provider``, ``built`` (UTC ISO time), ``rows`` and the provider's details.
    created, updated : str
        UTC ISO times.
    software : str
        ztfsds version of the last writer.
    format_version : int
        Layout version.
    """

    kind: str
    order: int = PARTITION_ORDER
    index_order: int = INDEX_ORDER
    id_column: str = ""
    reference_epoch: float | None = None
    ref_epoch_range: list | None = None
    pm_max: float = 0.0
    columns: list = dataclasses.field(default_factory=list)
    pixels: dict = dataclasses.field(default_factory=dict)
    sources: dict = dataclasses.field(default_factory=dict)
    created: str = ""
    updated: str = ""
    software: str = __version__
    format_version: int = FORMAT_VERSION

    @classmethod
    def new(cls, kind: str) -> CatalogManifest:
        """An empty manifest for a kind, with its schema's columns."""
        schema = get_schema(kind)
        cols = [{"name": c.name, "unit": c.unit, "dtype": c.dtype} for c in schema.columns]
        cols.append({"name": "healpix", "unit": None, "dtype": "i8"})
        now = _now()
        return cls(kind=kind, id_column=schema.id_column, reference_epoch=schema.reference_epoch,
                   columns=cols, created=now, updated=now)

    @property
    def nrows(self) -> int:
        """Total number of rows."""
        return int(sum(self.pixels.values()))

    @property
    def column_names(self) -> list[str]:
        """Stored column names."""
        return [c["name"] for c in self.columns]

    def to_json(self) -> str:
        """The manifest as JSON text."""
        d = dataclasses.asdict(self)
        d["pixels"] = {str(k): int(v) for k, v in sorted(self.pixels.items())}
        return json.dumps(d, indent=1, default=str)

    @classmethod
    def read(cls, path: str | os.PathLike) -> CatalogManifest:
        """Read a manifest file.

        Raises
        ------
        ztfsds.errors.ProductNotFoundError
            No such file.
        ztfsds.errors.InputError
            Not a valid manifest.
        """
        path = Path(path)
        if not path.is_file():
            raise ProductNotFoundError(f"{path}: catalog manifest not found")
        try:
            d = json.loads(path.read_text())
            d["pixels"] = {int(k): int(v) for k, v in d.get("pixels", {}).items()}
            known = {f.name for f in dataclasses.fields(cls)}
            m = cls(**{k: v for k, v in d.items() if k in known})
        except (ValueError, TypeError, AttributeError) as exc:
            raise InputError(path, f"not a valid catalog manifest ({exc})") from None
        if m.format_version > FORMAT_VERSION:
            raise InputError(path, f"catalog layout version {m.format_version} is newer than this ztfsds "
                                   f"understands ({FORMAT_VERSION}); upgrade ztfsds")
        return m


def as_catalog_store(store) -> CatalogStore:
    """A `CatalogStore` from a `CatalogStore`, a `~ztfsds.products.ProductStore` or a data-root path."""
    if isinstance(store, CatalogStore):
        return store
    if isinstance(store, ProductStore):
        return CatalogStore(store.root)
    if isinstance(store, (str, os.PathLike)):
        return CatalogStore(store)
    raise ConfigError(f"expected a data root, ProductStore or CatalogStore, got {type(store).__name__}")


class CatalogStore:
    """The calibrator catalogs under one data root.

    Parameters
    ----------
    root : path-like
        The data root (the catalogs live in ``<root>/catalogs``).
    verify : bool, optional
        Check each partition's DATASUM when reading it (default True; its cost is lost in the read).
    cache_mb : float, optional
        Keep up to this many MB of recently read partitions in memory (default 0: none). A process
        that queries many quadrants of the same fields (the four quadrants of a CCD share most of
        their partitions) should keep one store with a cache; a partition rewritten on disk is
        re-read (the cache is keyed by file size and modification time).
    """

    DIRNAME = "catalogs"

    def __init__(self, root: str | os.PathLike, *, verify: bool = True, cache_mb: float = 0.0):
        self.root = Path(root)
        self.verify = bool(verify)
        self.cache_mb = float(cache_mb)
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._cached_bytes = 0
        self._cache_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CatalogStore({str(self.root)!r})"

    # -- layout ---------------------------------------------------------------------------------
    @property
    def base(self) -> Path:
        """``<root>/catalogs``."""
        return self.root / self.DIRNAME

    def directory(self, kind: str) -> Path:
        """Directory of one catalog kind."""
        get_schema(kind)
        return self.base / kind

    def manifest_path(self, kind: str) -> Path:
        """The catalog's manifest file."""
        return self.directory(kind) / "manifest.json"

    def partition_path(self, kind: str, npix: int, order: int = PARTITION_ORDER) -> Path:
        """The file of one partition (whether or not it exists)."""
        return self.directory(kind) / partition_relpath(npix, order)

    def kinds(self) -> list[str]:
        """The catalog kinds present (with a manifest)."""
        return [k for k in KINDS if self.manifest_path(k).is_file()]

    def exists(self, kind: str) -> bool:
        """True if the catalog has been built."""
        return self.manifest_path(kind).is_file()

    # -- reading --------------------------------------------------------------------------------
    def read_manifest(self, kind: str) -> CatalogManifest:
        """The catalog's manifest.

        Raises
        ------
        ztfsds.errors.ProductNotFoundError
            The catalog has not been built.
        """
        path = self.manifest_path(kind)
        if not path.is_file():
            raise ProductNotFoundError(
                f"{path}: no {kind!r} calibrator catalog under data root {self.root}; build it with "
                f"'ztfsds catalogs build' or ztfsds.catalogs.build_catalogs(root, fields, kinds=[{kind!r}])")
        m = CatalogManifest.read(path)
        if m.kind != kind:
            raise InputError(path, f"manifest is for kind {m.kind!r}, expected {kind!r}")
        return m

    def read_partition(self, kind: str, npix: int, order: int = PARTITION_ORDER) -> Table:
        """Read one partition.

        Returns
        -------
        `~astropy.table.Table`
            The rows (native byte order), units from the file.

        Raises
        ------
        ztfsds.errors.ProductNotFoundError
            The file does not exist.
        ztfsds.errors.FITSFormatError
            The file is not a readable FITS table, its DATASUM does not match (corrupted), or it is
            not the partition its name says; the error names the file.
        """
        path = self.partition_path(kind, npix, order)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ProductNotFoundError(f"{path}: catalog partition not found") from None
        if self.cache_mb <= 0:
            return self._read_file(path, kind, npix, order)
        key = (path, st.st_size, st.st_mtime_ns)
        with self._cache_lock:
            table = self._cache.get(key)
            if table is not None:
                self._cache.move_to_end(key)
        if table is None:
            table = self._read_file(path, kind, npix, order)
            with self._cache_lock:
                if key not in self._cache:
                    self._cache[key] = table
                    self._cached_bytes += st.st_size
                while self._cached_bytes > self.cache_mb * 1e6 and len(self._cache) > 1:
                    (_, size, _), _ = self._cache.popitem(last=False)
                    self._cached_bytes -= size
        # a shallow copy: callers may add or drop columns; the data are shared (queries only slice them)
        return table.copy(copy_data=False)

    def _read_file(self, path: Path, kind: str, npix: int, order: int) -> Table:
        with open_fits(path) as hdul:
            if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
                raise FITSFormatError(path, "not a catalog partition (no binary table in HDU 1)")
            hdu = hdul[1]
            if self.verify and "DATASUM" in hdu.header and hdu.verify_datasum() == 0:
                raise FITSFormatError(path, "data checksum (DATASUM) does not match: the partition is "
                                            "corrupted; rebuild the catalog")
            header = hdu.header
            if header.get("CATKIND") != kind or header.get("HPXPIX") != int(npix) or header.get("HPXORDER") != order:
                raise FITSFormatError(path, f"header says CATKIND={header.get('CATKIND')!r}, "
                                            f"HPXORDER={header.get('HPXORDER')!r}, HPXPIX={header.get('HPXPIX')!r}; "
                                            f"expected {kind!r}, {order}, {int(npix)}")
            # NaN is a value here (no proper motion, undetected), not a mask
            table = Table.read(hdu, mask_invalid=False)
        for name in table.colnames:
            col = table[name]
            if not col.dtype.isnative:
                table[name] = Column(col.data.astype(col.dtype.newbyteorder("=")), unit=col.unit)
        table.meta.clear()
        if "healpix" not in table.colnames:
            raise FITSFormatError(path, "catalog partition has no 'healpix' column")
        return table

    def read_all(self, kind: str) -> Table:
        """Every row of a catalog (for small catalogs and tests), sorted by id."""
        m = self.read_manifest(kind)
        parts = [self.read_partition(kind, p, m.order) for p in self.pixels_on_disk(kind, m.order)]
        return _sorted(vstack(parts) if parts else self._empty(m), m.id_column)

    def pixels_on_disk(self, kind: str, order: int = PARTITION_ORDER) -> list[int]:
        """Partition pixels that have a file, sorted."""
        base = self.directory(kind) / f"Norder={order}"
        if not base.is_dir():
            return []
        out = []
        for p in base.glob("Dir=*/Npix=*.fits"):
            try:
                out.append(int(p.stem.split("=", 1)[1]))
            except ValueError:
                continue
        return sorted(out)

    def _empty(self, manifest: CatalogManifest) -> Table:
        return Table([Column(np.zeros(0, dtype=c["dtype"]), name=c["name"], unit=c["unit"])
                      for c in manifest.columns])

    # -- writing --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, kind: str):
        """Hold the catalog's write lock (an advisory ``fcntl`` lock on ``<kind>/.lock``)."""
        directory = self.directory(kind)
        directory.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(directory / ".lock", "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def remove(self, kind: str) -> None:
        """Delete a catalog (its manifest and every partition)."""
        directory = self.directory(kind)
        if directory.is_dir():
            with self.lock(kind):
                for child in directory.iterdir():
                    if child.name == ".lock":
                        continue
                    if child.is_dir():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            log.info("removed the %r catalog under %s", kind, self.base)

    def write(self, kind: str, table: Table, *, provenance: dict | None = None) -> list[Path]:
        """Merge rows into the catalog.

        Parameters
        ----------
        kind : str
            ``'gaia'`` or ``'ps1'``.
        table : `~astropy.table.Table`
            Rows in the kind's schema (`ztfsds.catalogs.schema.CatalogSchema.conform` is applied).
            Duplicate ids within it keep their last row.
        provenance : dict, optional
            Recorded in the manifest's ``sources``: ``provider`` (str), ``key`` (a region key like
            ``'000655_c13'``) and any JSON-serialisable details.

        Returns
        -------
        list of pathlib.Path
            The partition files created or rewritten, sorted (a partition that the merge empties
            is deleted and not listed).
        """
        schema = get_schema(kind)
        rows = schema.conform(table, source=(provenance or {}).get("provider"))
        rows = _dedupe(rows, schema.id_column)
        rows["healpix"] = Column(healpix_index(rows["ra"], rows["dec"], INDEX_ORDER), dtype=np.int64)
        provenance = dict(provenance or {})
        with self.lock(kind):
            try:
                manifest = self.read_manifest(kind)
            except ProductNotFoundError:
                manifest = CatalogManifest.new(kind)
            if manifest.order != PARTITION_ORDER or manifest.index_order != INDEX_ORDER:
                raise InputError(self.manifest_path(kind), f"catalog is partitioned at order {manifest.order} "
                                 f"(index {manifest.index_order}); this ztfsds writes {PARTITION_ORDER} "
                                 f"({INDEX_ORDER}): rebuild it (build_catalogs(..., replace=True))")
            if manifest.columns != CatalogManifest.new(kind).columns:
                raise InputError(self.manifest_path(kind), "catalog was written with other columns than this "
                                 "ztfsds's schema: rebuild it (build_catalogs(..., replace=True))")
            if schema.has_proper_motions and len(rows):
                pm = np.hypot(np.asarray(rows["pmra"]), np.asarray(rows["pmdec"]))
                pm = pm[np.isfinite(pm)]
                manifest.pm_max = max(manifest.pm_max, float(pm.max()) if pm.size else 0.0)
                ep = np.asarray(rows["ref_epoch"], dtype=float)
                lo, hi = float(ep.min()), float(ep.max())
                if manifest.ref_epoch_range:
                    lo, hi = min(lo, manifest.ref_epoch_range[0]), max(hi, manifest.ref_epoch_range[1])
                manifest.ref_epoch_range = [lo, hi]
            # the widened search of queries must hold before any partition grows
            self._write_manifest(kind, manifest)
            written = self._merge(kind, rows, manifest, schema.id_column)
            key = f"{provenance.get('provider', 'unknown')}:{provenance.get('key', '')}"
            manifest.sources[key] = {**provenance, "built": _now(), "rows": len(rows)}
            manifest.updated = _now()
            manifest.software = __version__
            self._write_manifest(kind, manifest)
        log.info("%s catalog: merged %d rows into %d partitions (%d rows in all)", kind, len(rows),
                 len(written), manifest.nrows)
        return sorted(written)

    def _write_manifest(self, kind: str, manifest: CatalogManifest) -> None:
        with atomic_write(self.manifest_path(kind)) as tmp:
            tmp.write_text(manifest.to_json())

    def _merge(self, kind: str, rows: Table, manifest: CatalogManifest, id_column: str) -> list[Path]:
        order = manifest.order
        part = partition_of(np.asarray(rows["healpix"]), manifest.index_order, order)
        touched = np.unique(part)
        on_disk = set(self.pixels_on_disk(kind, order))
        # a source re-measured near a partition edge may have moved to a neighbouring partition
        around = [p for p in neighbour_pixels(touched, order) if int(p) in on_disk]
        new_ids = np.asarray(rows[id_column])
        written = []
        for p in sorted(set(int(x) for x in touched) | set(int(x) for x in around)):
            path = self.partition_path(kind, p, order)
            old = self.read_partition(kind, p, order) if p in on_disk else None
            mine = rows[part == p]
            if old is not None:
                stale = np.isin(np.asarray(old[id_column]), new_ids)
                if not len(mine) and not stale.any():
                    continue
                old = old[~stale]
                merged = vstack([old, mine], join_type="exact") if len(mine) else old
            else:
                merged = mine
            if not len(merged):
                path.unlink(missing_ok=True)
                manifest.pixels.pop(p, None)
                continue
            merged = _sorted(merged, id_column, by_healpix=True)
            self._write_partition(path, kind, p, order, merged)
            manifest.pixels[p] = len(merged)
            written.append(path)
        return written

    def _write_partition(self, path: Path, kind: str, npix: int, order: int, table: Table) -> None:
        hdu = fits.table_to_hdu(Table(table, meta={}))
        hdu.name = _EXTNAME
        cards = [("CATKIND", kind, "calibrator catalog kind"),
                 ("HPXORDER", order, "HEALPix order of this partition (nested)"),
                 ("HPXPIX", int(npix), "HEALPix pixel of this partition (nested)"),
                 ("IDXORDER", INDEX_ORDER, "HEALPix order of the healpix column (nested)"),
                 ("NROWS", len(table), "rows in this partition")]
        for key, value, comment in cards:
            hdu.header[key] = (value, comment)
        primary = fits.PrimaryHDU()
        primary.header["ORIGIN"] = ("ztfsds", "ztfsds calibrator catalog partition")
        primary.header["PIPEVERS"] = (__version__, "ztfsds version")
        write_fits(path, fits.HDUList([primary, hdu]))


def _dedupe(table: Table, id_column: str) -> Table:
    """Keep the last row of each id."""
    ids = np.asarray(table[id_column])
    if len(ids) == len(np.unique(ids)):
        return table
    _, last = np.unique(ids[::-1], return_index=True)
    keep = np.sort(len(ids) - 1 - last)
    log.debug("dropping %d duplicate %s rows", len(ids) - len(keep), id_column)
    return table[keep]


def _sorted(table: Table, id_column: str, *, by_healpix: bool = False) -> Table:
    if not len(table):
        return table
    keys = (np.asarray(table[id_column]),) + ((np.asarray(table["healpix"]),) if by_healpix else ())
    return table[np.lexsort(keys)]
