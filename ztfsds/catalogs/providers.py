"""Where calibrator catalogs come from: the `Provider` protocol and the offline providers.

A provider answers ``fetch(kind, field, ccdid=None)`` with the sources of one ZTF field (or one CCD
of it) in the kind's canonical schema (`ztfsds.catalogs.schema`). `build_catalogs` stores what it
returns. Providers here:

- `SimProvider`: the simulator's exports ``sim/catalogs/<field:06d>_c<cc:02d>_{gaia,ps1}.fits``
  under a data root (`ztfsds.sim.simulate_night`).
- `LocalFileProvider`: a user's table (FITS, ECSV, CSV, VOTable, Parquet with pyarrow) with a column
  map.
- `~ztfsds.catalogs.online.GaiaArchiveProvider` and `~ztfsds.catalogs.online.VizierPS1Provider`
  (online; `ztfsds.catalogs.online`).

Examples
--------
>>> from ztfsds.catalogs import LocalFileProvider, Provider, SimProvider
>>> isinstance(SimProvider("/data"), Provider)
True
>>> int(SimProvider.source_id(655, 13, 42))
655130000000042
>>> int(SimProvider.truth_id(655130000000042))
42
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from astropy import units as u
from astropy.table import Table, vstack

from ..errors import ConfigError, InputError, ProductNotFoundError
from ..products.fitsio import open_fits
from .regions import DEFAULT_MARGIN, ccd_cell, field_region
from .schema import KINDS, get_schema

__all__ = ["Provider", "SimProvider", "LocalFileProvider"]

log = logging.getLogger(__name__)


@runtime_checkable
class Provider(Protocol):
    """What `build_catalogs` needs from a catalog source.

    Attributes
    ----------
    name : str
        Short name recorded in the catalog manifest (``'sim'``, ``'local'``, ``'gaia-archive'``...).
    kinds : tuple of str
        Catalog kinds it can provide.
    """

    name: str
    kinds: tuple

    def fetch(self, kind: str, field: int, ccdid: int | None = None) -> Table:
        """Sources of one field (or one CCD of it), in the kind's canonical schema."""
        ...  # pragma: no cover


def _check_kind(provider, kind: str) -> None:
    get_schema(kind)
    if kind not in provider.kinds:
        raise ConfigError(f"provider {provider.name!r} serves {provider.kinds}, not {kind!r}")


class SimProvider:
    """The simulator's calibrator catalogs under a data root.

    `ztfsds.sim.simulate_night` draws an independent sky for each (field, CCD) and exports its
    Gaia-like and PS1-like catalogs as ``sim/catalogs/<field:06d>_c<cc:02d>_{gaia,ps1}.fits``. This
    provider reads them and makes them storable:

    - ``source_id`` (1, 2, ... in every export) becomes unique across exports:
      ``source_id = (field x 100 + ccdid) x 10**10 + truth id`` (`source_id`, `truth_id`); PS1 rows
      keep their ``objid`` and carry the same ``source_id``, so a Gaia and a PS1 row of one simulated
      star share it.
    - With ``clip=True`` (default) each export is cut to its CCD's cell of the focal plane
      (`ztfsds.catalogs.regions.ccd_cell`): an export covers a circle around its CCD that reaches
      into the neighbouring CCDs, whose own skies are drawn independently; without the cut, a catalog
      built from several CCDs would list neighbours' stars that are not in this CCD's images. For
      small simulated sub-arrays the circle stays inside the cell and nothing is cut.

    Parameters
    ----------
    root : path-like
        Data root of the simulated night.
    clip : bool, optional
        Cut each export to its CCD's cell.
    """

    name = "sim"
    kinds = KINDS
    #: Multiplier of the (field x 100 + ccdid) prefix of simulated source ids.
    ID_BASE = 10**10

    def __init__(self, root: str | os.PathLike, *, clip: bool = True):
        self.root = Path(root)
        self.clip = bool(clip)

    def __repr__(self) -> str:
        return f"SimProvider({str(self.root)!r}, clip={self.clip})"

    @staticmethod
    def source_id(field, ccdid, truth_id):
        """Catalog ``source_id`` of a simulated star (vectorised over ``truth_id``)."""
        return (int(field) * 100 + int(ccdid)) * SimProvider.ID_BASE + np.asarray(truth_id, dtype=np.int64)

    @staticmethod
    def truth_id(source_id):
        """The simulator's truth ``source_id`` (as in the truth tables) of a catalog ``source_id``."""
        return np.asarray(source_id, dtype=np.int64) % SimProvider.ID_BASE

    def exports(self, kind: str, field: int, ccdid: int | None = None) -> list[Path]:
        """The export files of a field (one CCD, or every CCD exported), sorted.

        Raises
        ------
        ztfsds.errors.ProductNotFoundError
            None exists.
        """
        _check_kind(self, kind)
        base = self.root / "sim" / "catalogs"
        if ccdid is not None:
            pattern = f"{int(field):06d}_c{int(ccdid):02d}_{kind}.fits"
            paths = [base / pattern] if (base / pattern).is_file() else []
        else:
            pattern = f"{int(field):06d}_c??_{kind}.fits"
            paths = sorted(base.glob(pattern)) if base.is_dir() else []
        if not paths:
            raise ProductNotFoundError(f"{base / pattern}: no simulated {kind!r} catalog for field {field}"
                                       f"{'' if ccdid is None else f' CCD {ccdid}'}; simulate the night first "
                                       "(ztfsds.sim.simulate_night / 'ztfsds simulate-night')")
        return paths

    def fetch(self, kind: str, field: int, ccdid: int | None = None) -> Table:
        """Sources of the simulated field (or CCD), in the canonical schema.

        Parameters
        ----------
        kind : {'gaia', 'ps1'}
            Catalog kind.
        field : int
            ZTF field id.
        ccdid : int, optional
            One CCD; None for every CCD exported for the field.

        Returns
        -------
        `~astropy.table.Table`
        """
        schema = get_schema(kind)
        parts = []
        for path in self.exports(kind, field, ccdid):
            ccd = int(path.name.split("_c")[1][:2])
            with open_fits(path) as hdul:
                if len(hdul) < 2:
                    raise InputError(path, "simulated catalog has no table in HDU 1")
                raw = Table.read(hdul[1], mask_invalid=False)
            table = schema.conform(raw, source=path)
            if "source_id" in raw.colnames:
                table["source_id"] = self.source_id(field, ccd, np.asarray(raw["source_id"]))
            if self.clip and len(table):
                inside = ccd_cell(field, ccd, np.asarray(table["ra"]), np.asarray(table["dec"]))
                if not inside.all():
                    log.debug("%s: %d of %d rows outside CCD %d's cell", path.name, int((~inside).sum()),
                              len(table), ccd)
                table = table[inside]
            parts.append(table)
        return vstack(parts, join_type="exact") if len(parts) > 1 else parts[0]


class LocalFileProvider:
    """A calibrator catalog from a local table file.

    The file holds one catalog kind. On ``fetch`` the rows inside the field's (or CCD's) region
    (`ztfsds.catalogs.regions.field_region`) are returned in the canonical schema.

    Parameters
    ----------
    path : path-like
        The table: FITS, ECSV, CSV, VOTable or Parquet (Parquet needs pyarrow).
    column_map : mapping of str to str, optional
        Canonical name -> the file's column name, for the columns whose names differ (e.g.
        ``{'ra': 'RA_ICRS', 'dec': 'DE_ICRS', 'phot_g_mean_mag': 'Gmag'}``). Columns without units
        are taken to be in the schema's units.
    kind : {'gaia', 'ps1'}
        Which catalog the file is.
    format : str, optional
        Astropy table format (default: from the file name).
    ref_epoch : float, optional
        Epoch of the positions [Julian year] for a Gaia-like file without a ``ref_epoch`` column
        (default 2016.0).
    margin : `~astropy.units.Quantity`, optional
        Margin of the field regions (default `ztfsds.catalogs.regions.DEFAULT_MARGIN`).
    """

    name = "local"
    _FORMATS = {".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".ecsv": "ascii.ecsv", ".csv": "ascii.csv",
                ".parquet": "parquet", ".pq": "parquet", ".vot": "votable", ".xml": "votable"}

    def __init__(self, path: str | os.PathLike, column_map: Mapping[str, str] | None = None, *, kind: str,
                 format: str | None = None, ref_epoch: float | None = None, margin=DEFAULT_MARGIN):
        get_schema(kind)
        self.path = Path(path)
        self.column_map = dict(column_map or {})
        self.kind = kind
        self.kinds = (kind,)
        self.format = format
        self.ref_epoch = ref_epoch
        self.margin = margin
        self._table = None

    def __repr__(self) -> str:
        return f"LocalFileProvider({str(self.path)!r}, kind={self.kind!r})"

    def _guess_format(self) -> str:
        if self.format is not None:
            return self.format
        name = self.path.name.lower()
        for suffix, fmt in self._FORMATS.items():
            if name.endswith(suffix):
                return fmt
        raise InputError(self.path, f"cannot tell the table format from the name; pass format= "
                                    f"(one of {sorted(set(self._FORMATS.values()))})")

    def read(self) -> Table:
        """The whole file in the canonical schema (read once, then cached).

        Raises
        ------
        ztfsds.errors.ProductNotFoundError
            The file does not exist.
        ztfsds.errors.InputError
            The file cannot be read, or lacks a required column (after ``column_map``).
        """
        if self._table is not None:
            return self._table
        if not self.path.is_file():
            raise ProductNotFoundError(f"{self.path}: catalog file not found")
        fmt = self._guess_format()
        try:
            if fmt == "fits":
                raw = Table.read(self.path, format="fits", mask_invalid=False)
            else:
                raw = Table.read(self.path, format=fmt)
        except ImportError as exc:
            raise InputError(self.path, f"reading {fmt} needs an optional package ({exc}); "
                                        "for Parquet: pip install pyarrow") from None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise InputError(self.path, f"not a readable {fmt} table ({exc})") from None
        missing = [src for src in self.column_map.values() if src not in raw.colnames]
        if missing:
            raise InputError(self.path, f"column_map names column(s) {missing} that the file lacks "
                                        f"(it has {raw.colnames})")
        if self.column_map:
            raw.rename_columns(list(self.column_map.values()), list(self.column_map.keys()))
        if self.kind == "gaia" and "ref_epoch" not in raw.colnames and self.ref_epoch is not None:
            raw["ref_epoch"] = np.full(len(raw), float(self.ref_epoch)) * u.yr
        self._table = get_schema(self.kind).conform(raw, source=self.path)
        log.info("%s: %d %s rows", self.path, len(self._table), self.kind)
        return self._table

    def fetch(self, kind: str, field: int, ccdid: int | None = None) -> Table:
        """Rows of the file inside the field's (or CCD's) region, in the canonical schema."""
        _check_kind(self, kind)
        table = self.read()
        center, radius = field_region(field, ccdid, margin=self.margin)
        c = center.icrs
        a, d = np.radians(np.asarray(table["ra"])), np.radians(np.asarray(table["dec"]))
        a0, d0 = c.ra.rad, c.dec.rad
        cos_sep = np.sin(d) * np.sin(d0) + np.cos(d) * np.cos(d0) * np.cos(a - a0)
        return table[cos_sep >= np.cos(radius.to_value(u.rad))]

