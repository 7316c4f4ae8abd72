"""The columns of the calibrator catalogs: one canonical schema per catalog kind.

Every provider hands back tables in these schemas (`CatalogSchema.conform` renames nothing: it checks,
converts units, fills optional columns and orders them), so that partitions written by different
providers merge into one catalog.

``'gaia'`` (Gaia DR3-like astrometric reference; one row per ``source_id``)
    ``source_id`` int64; ``ra``, ``dec`` [deg] at ``ref_epoch``; ``ra_error`` (on RA cos Dec),
    ``dec_error`` [mas]; ``pmra`` (RA cos Dec), ``pmdec`` [mas/yr] and their errors ``pmra_error``,
    ``pmdec_error`` [mas/yr] (NaN for sources without proper motion, like Gaia's 2-parameter
    solutions); ``parallax``, ``parallax_error`` [mas] (optional); ``phot_g_mean_mag``,
    ``phot_bp_mean_mag``, ``phot_rp_mean_mag`` [mag] (BP, RP optional); ``ref_epoch`` [Julian year].
``'ps1'`` (Pan-STARRS1-like photometric reference; one row per ``objid``)
    ``objid`` int64; ``ra``, ``dec`` [deg] (PS1 mean epoch, ~J2012; no proper motions);
    ``gmag``, ``rmag``, ``imag`` and their errors ``e_gmag``, ``e_rmag``, ``e_imag`` [mag]
    (NaN where undetected); ``zmag``, ``e_zmag``, ``ymag``, ``e_ymag`` [mag] and ``sgscore``
    (star/galaxy score, 1 = star; Tachibana & Miller 2018) optional; ``source_id`` optional
    (the simulator's truth id, -1 otherwise).

Optional columns a provider lacks are filled with NaN (floats) or -1 (integers); columns outside the
schema are dropped. All floating-point columns are stored as float64.

Examples
--------
>>> from astropy.table import Table
>>> from ztfsds.catalogs.schema import SCHEMAS
>>> t = Table({"objid": [1], "ra": [10.0], "dec": [20.0], "gmag": [18.0], "rmag": [17.5],
...            "imag": [17.3], "e_gmag": [0.01], "e_rmag": [0.01], "e_imag": [0.02]})
>>> out = SCHEMAS["ps1"].conform(t)
>>> out.colnames[:3], str(out["ra"].unit), float(out["sgscore"][0])
(['objid', 'ra', 'dec'], 'deg', nan)
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
from astropy import units as u
from astropy.table import Column, MaskedColumn, Table

from ..errors import ConfigError, InputError

__all__ = ["KINDS", "ColumnSpec", "CatalogSchema", "SCHEMAS", "get_schema"]

log = logging.getLogger(__name__)

#: The catalog kinds: the astrometric (Gaia-like) and the photometric (PS1-like) reference.
KINDS = ("gaia", "ps1")


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    """One column of a catalog schema.

    Attributes
    ----------
    name : str
        Column name.
    unit : str or None
        Astropy unit string (None: dimensionless).
    dtype : str
        Stored numpy dtype (``'f8'`` or ``'i8'``).
    required : bool
        A provider's table must have it.
    description : str
        What it holds.
    """

    name: str
    unit: str | None
    dtype: str
    required: bool
    description: str

    @property
    def fill(self):
        """Value of an absent optional column (NaN for floats, -1 for integers)."""
        return -1 if self.dtype.startswith("i") else np.nan


@dataclasses.dataclass(frozen=True)
class CatalogSchema:
    """The canonical columns of one catalog kind.

    Attributes
    ----------
    kind : str
        ``'gaia'`` or ``'ps1'``.
    id_column : str
        Unique identifier of a source (merges deduplicate on it).
    mag_column : str
        The magnitude that ``mag_limit`` cuts on (G for Gaia, r for PS1).
    columns : tuple of ColumnSpec
        The columns, in stored order.
    reference_epoch : float or None
        Epoch of the positions [Julian year] when a table has no ``ref_epoch`` column
        (2016.0 for Gaia DR3; ~2012 for PS1, whose positions are mean positions without proper motions).
    has_proper_motions : bool
        Positions can be propagated to another epoch.
    """

    kind: str
    id_column: str
    mag_column: str
    columns: tuple[ColumnSpec, ...]
    reference_epoch: float | None
    has_proper_motions: bool

    @property
    def names(self) -> list[str]:
        """Column names in stored order."""
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        """The spec of one column (`~ztfsds.errors.ConfigError` if unknown)."""
        for c in self.columns:
            if c.name == name:
                return c
        raise ConfigError(f"{self.kind!r} catalogs have no column {name!r}; columns: {self.names}")

    def empty(self) -> Table:
        """An empty table with the schema's columns, dtypes and units."""
        return Table([Column(np.zeros(0, dtype=c.dtype), name=c.name, unit=c.unit) for c in self.columns])

    def conform(self, table: Table, *, source: str | os.PathLike | None = None) -> Table:
        """Check a provider's table and return it in the canonical schema.

        Columns with units are converted to the schema's units; columns without a unit are taken to
        be in them. Masked values become NaN (floats); optional columns that are absent are filled;
        other columns are dropped. ``ref_epoch`` (Gaia) defaults to `reference_epoch`.

        Parameters
        ----------
        table : `~astropy.table.Table`
            The provider's table, with the schema's column names.
        source : str or path-like, optional
            Where the table came from (named in errors).

        Returns
        -------
        `~astropy.table.Table`
            A new table with exactly the schema's columns.

        Raises
        ------
        ztfsds.errors.InputError
            A required column is missing, a unit cannot be converted, an id is masked, or a
            position is not finite.
        """
        missing = [c.name for c in self.columns if c.required and c.name not in table.colnames]
        if missing:
            raise InputError(source, f"a {self.kind!r} catalog needs column(s) {missing} (has {table.colnames}); "
                                     "map the names with LocalFileProvider(column_map=...)")
        dropped = [n for n in table.colnames if n not in self.names]
        if dropped:
            log.debug("%s: dropping columns outside the %r schema: %s", source, self.kind, dropped)
        n = len(table)
        out = Table()
        for spec in self.columns:
            if spec.name not in table.colnames:
                fill = self.reference_epoch if spec.name == "ref_epoch" else spec.fill
                out[spec.name] = Column(np.full(n, fill, dtype=spec.dtype), unit=spec.unit)
                continue
            out[spec.name] = Column(self._values(table[spec.name], spec, source), unit=spec.unit)
        for name in ("ra", "dec"):
            bad = int(np.count_nonzero(~np.isfinite(out[name])))
            if bad:
                raise InputError(source, f"{bad} row(s) have a non-finite {name!r}")
        if n and (np.any(out["dec"] < -90.0) or np.any(out["dec"] > 90.0)):
            raise InputError(source, "declinations outside [-90, 90] deg")
        out["ra"] = out["ra"] % 360.0
        return out

    def _values(self, col, spec: ColumnSpec, source) -> np.ndarray:
        unit = getattr(col, "unit", None)
        if isinstance(col, u.Quantity):
            unit, col = col.unit, col.value
        masked = isinstance(col, MaskedColumn) or np.ma.isMaskedArray(col)
        mask = np.ma.getmaskarray(col) if masked else None
        if spec.dtype.startswith("i"):
            if mask is not None and mask.any():
                raise InputError(source, f"column {spec.name!r} has {int(mask.sum())} masked value(s)")
            return np.asarray(np.ma.getdata(col)).astype(spec.dtype)
        values = np.asarray(np.ma.getdata(col), dtype=float).copy()
        if mask is not None:
            values[mask] = np.nan
        if unit is not None and spec.unit is not None and u.Unit(unit) != u.Unit(spec.unit):
            try:
                values = (values * u.Unit(unit)).to_value(spec.unit)
            except u.UnitConversionError:
                raise InputError(source, f"column {spec.name!r} is in {unit}, which does not convert to "
                                         f"{spec.unit}") from None
        return values.astype(spec.dtype)


def _c(name, unit, dtype, required, description):
    return ColumnSpec(name, unit, dtype, required, description)


_GAIA = CatalogSchema(
    kind="gaia",
    id_column="source_id",
    mag_column="phot_g_mean_mag",
    reference_epoch=2016.0,
    has_proper_motions=True,
    columns=(
        _c("source_id", None, "i8", True, "source identifier"),
        _c("ra", "deg", "f8", True, "right ascension at ref_epoch (ICRS)"),
        _c("dec", "deg", "f8", True, "declination at ref_epoch (ICRS)"),
        _c("ra_error", "mas", "f8", True, "standard error of ra * cos(dec)"),
        _c("dec_error", "mas", "f8", True, "standard error of dec"),
        _c("pmra", "mas / yr", "f8", False, "proper motion in ra * cos(dec) (NaN: none)"),
        _c("pmdec", "mas / yr", "f8", False, "proper motion in dec (NaN: none)"),
        _c("pmra_error", "mas / yr", "f8", False, "standard error of pmra"),
        _c("pmdec_error", "mas / yr", "f8", False, "standard error of pmdec"),
        _c("parallax", "mas", "f8", False, "parallax"),
        _c("parallax_error", "mas", "f8", False, "standard error of parallax"),
        _c("phot_g_mean_mag", "mag", "f8", True, "G magnitude"),
        _c("phot_bp_mean_mag", "mag", "f8", False, "BP magnitude"),
        _c("phot_rp_mean_mag", "mag", "f8", False, "RP magnitude"),
        _c("ref_epoch", "yr", "f8", False, "epoch of ra, dec [Julian year]"),
    ),
)

_PS1 = CatalogSchema(
    kind="ps1",
    id_column="objid",
    mag_column="rmag",
    reference_epoch=2012.0,
    has_proper_motions=False,
    columns=(
        _c("objid", None, "i8", True, "PS1 object identifier"),
        _c("ra", "deg", "f8", True, "mean right ascension (ICRS)"),
        _c("dec", "deg", "f8", True, "mean declination (ICRS)"),
        _c("gmag", "mag", "f8", True, "g PSF magnitude (NaN: undetected)"),
        _c("rmag", "mag", "f8", True, "r PSF magnitude"),
        _c("imag", "mag", "f8", True, "i PSF magnitude"),
        _c("zmag", "mag", "f8", False, "z PSF magnitude"),
        _c("ymag", "mag", "f8", False, "y PSF magnitude"),
        _c("e_gmag", "mag", "f8", True, "error of gmag"),
        _c("e_rmag", "mag", "f8", True, "error of rmag"),
        _c("e_imag", "mag", "f8", True, "error of imag"),
        _c("e_zmag", "mag", "f8", False, "error of zmag"),
        _c("e_ymag", "mag", "f8", False, "error of ymag"),
        _c("sgscore", None, "f8", False, "star/galaxy score, 1 = star"),
        _c("source_id", None, "i8", False, "simulator truth id (-1: none)"),
    ),
)

#: The schema of each catalog kind.
SCHEMAS = {"gaia": _GAIA, "ps1": _PS1}


def get_schema(kind: str) -> CatalogSchema:
    """The schema of a catalog kind.

    Raises
    ------
    ztfsds.errors.ConfigError
        ``kind`` is not one of `KINDS`.
    """
    try:
        return SCHEMAS[kind]
    except (KeyError, TypeError):
        raise ConfigError(f"catalog kind must be one of {KINDS}, got {kind!r}") from None
