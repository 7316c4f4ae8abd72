"""The IPAC matchfile: one quadrant-filter's matched sources and epochs in PyTables HDF5.

A matchfile (``ztf_<field06>_<fc>_c<cc>_q<q>_match.pytable``) holds, in the HDF5 group ``/matches``:

``exposures``
    one row per epoch (``expid``, ``obsmjd``, ``obshjd``, ``magzp``, ``clrcoeff``, ``infobits``, ...);
``sources``
    one row per matched object (``matchid``, ``ra``, ``dec``, ``x, y, z`` unit vector, ``nobs``,
    ``meanmag``, ``chisq``, ``stetsonj``, ``vonneumannratio``, ``percentiles[12]``, ``refmag``...);
``sourcedata``
    one row per detection of an object (``matchid``, ``expid``, ``mjd``, ``hjd``, ``mag``, ``magerr``,
    ``psfflux``, ``catflags``...);
``transients`` / ``transientdata``
    the same for detections that matched no object.

The group's attributes describe the quadrant (``fieldID``, ``ccdID``, ``quadrantID``, ``rcID``,
``filterID``, ``referenceImageID``, ``referenceZeroPoint`` ...). PyTables stores each table as a chunked
one-dimensional compound dataset whose attributes name every field (``FIELD_<i>_NAME``,
``FIELD_<i>_FILL``) and give ``CLASS='TABLE'``, ``VERSION``, ``TITLE`` and ``NROWS``; `write_matchfile`
writes exactly that with h5py, so that PyTables, and IPAC's and Kowalski's readers, read our files.

ztfsds adds a few columns of its own to the real ones (``relzp``... in ``exposures``; ``variable``,
``period``... in ``sources``, see `EXTRA_EXPOSURE_COLUMNS` and `EXTRA_SOURCE_COLUMNS`); readers that
select columns by name are unaffected.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import h5py
import numpy as np
from astropy.table import Table

from ..errors import InputError
from ..products.fitsio import atomic_write

__all__ = [
    "MatchFile",
    "read_matchfile",
    "write_matchfile",
    "matchfile_name",
    "empty_table",
    "EXPOSURES_DTYPE",
    "SOURCES_DTYPE",
    "SOURCEDATA_DTYPE",
    "TRANSIENTDATA_DTYPE",
    "EXTRA_EXPOSURE_COLUMNS",
    "EXTRA_SOURCE_COLUMNS",
    "TABLE_NAMES",
]

log = logging.getLogger(__name__)

#: The tables of a matchfile, in the order IPAC writes them.
TABLE_NAMES = ("exposures", "sourcedata", "sources", "transientdata", "transients")

#: ``exposures`` columns of the real matchfiles (PyTables version 2.7), in their order.
EXPOSURES_DTYPE = [
    ("airmass", "<f4"), ("clrcoeff", "<f4"), ("clrcounc", "<f4"), ("clrmed", "<f4"), ("clrrms", "<f4"),
    ("diq", "<f4"), ("expid", "<u4"), ("exptime", "<f4"), ("fieldid", "<u4"), ("filterid", "<u2"),
    ("fracday", "<u8"), ("gmedian", "<f4"), ("infobits", "<u4"), ("ipac_pub_date", "<f4"),
    ("limitmag", "<f4"), ("magzp", "<f4"), ("magzprms", "<f4"), ("magzpunc", "<f4"), ("nps1matches", "<i4"),
    ("nsources", "<i4"), ("nstars", "<i4"), ("ntransients", "<i4"), ("obshjd", "<f8"), ("obsmjd", "<f8"),
    ("pcolor", "S8"), ("programid", "<u2"), ("programpi", "S40"), ("rcid", "u1"), ("zpclrcov", "<f4"),
    ("zpmed", "<f4"),
]

#: ztfsds's additions to ``exposures``: the relative photometric refinement of each epoch.
EXTRA_EXPOSURE_COLUMNS = [
    ("relzp", "<f4"),       # offset subtracted from the PS1-calibrated magnitudes [mag]
    ("relzpunc", "<f4"),    # its uncertainty [mag]
    ("relzprms", "<f4"),    # rms of the calibrator residuals after the refinement [mag]
    ("relzpx", "<f4"),      # linear spatial term along x [mag per 1000 px]
    ("relzpy", "<f4"),      # linear spatial term along y [mag per 1000 px]
    ("nrelcal", "<i4"),     # calibrator stars used
]

_NCOUNT = 3
#: ``sources`` (and ``transients``) columns of the real matchfiles.
SOURCES_DTYPE = [
    ("astrometricrms", "<f8"), ("chisq", "<f4"), ("con", "<f4"), ("dec", "<f8"), ("lineartrend", "<f4"),
    ("magrms", "<f4"), ("matchid", "<i4"), ("maxmag", "<f4"), ("maxslope", "<f4"), ("meanmag", "<f4"),
    ("medianabsdev", "<f4"), ("medianmag", "<f4"), ("medmagerr", "<f4"), ("minmag", "<f4"),
    ("nabovemeanbystd", "<u2", (_NCOUNT,)), ("nbelowmeanbystd", "<u2", (_NCOUNT,)),
    ("nconsecabovemeanbystd", "<u2", (_NCOUNT,)), ("nconsecbelowmeanbystd", "<u2", (_NCOUNT,)),
    ("nconsecfrommeanbystd", "<u2", (_NCOUNT,)), ("ngoodobs", "<u2"), ("ngoodobsrel", "<u2"),
    ("nmedianbufferrange", "<u2"), ("nobs", "<u2"), ("nobsrel", "<u2"), ("npairposslope", "<u2"),
    ("percentiles", "<f4", (12,)), ("ra", "<f8"), ("refchi", "<f4"), ("refmag", "<f4"), ("refmagerr", "<f4"),
    ("refsharp", "<f4"), ("refsnr", "<f4"), ("skewness", "<f4"), ("smallkurtosis", "<f4"),
    ("stetsonj", "<f4"), ("stetsonk", "<f4"), ("uncalibmeanmag", "<f4"), ("vonneumannratio", "<f4"),
    ("weightedmagrms", "<f4"), ("weightedmeanmag", "<f4"), ("x", "<f8"), ("y", "<f8"), ("z", "<f8"),
]

#: ztfsds's additions to ``sources``: variability flag and period.
EXTRA_SOURCE_COLUMNS = [
    ("variable", "u1"),         # 1 if flagged variable
    ("period", "<f8"),          # Lomb-Scargle period of variables [day] (0 if none)
    ("periodpower", "<f4"),     # its normalised power
    ("isref", "u1"),            # 1 if seeded by a reference-image source
]

#: ``sourcedata`` columns of the real matchfiles.
SOURCEDATA_DTYPE = [
    ("catflags", "<u2"), ("chi", "<f4"), ("dec", "<f8"), ("expid", "<u4"), ("hjd", "<f8"), ("mag", "<f4"),
    ("magerr", "<f4"), ("magerrmodel", "<f4"), ("matchid", "<u4"), ("mjd", "<f8"), ("programid", "<u2"),
    ("psfflux", "<f4"), ("psffluxerr", "<f4"), ("ra", "<f8"), ("sharp", "<f4"), ("xpos", "<f4"), ("ypos", "<f4"),
]

#: ``transientdata`` columns of the real matchfiles.
TRANSIENTDATA_DTYPE = [
    ("catflags", "<u2"), ("chi", "<f4"), ("dec", "<f8"), ("expid", "<u4"), ("hjd", "<f8"), ("mag", "<f4"),
    ("magerr", "<f4"), ("magerrmodel", "<f4"), ("matchid", "<u4"), ("mjd", "<f8"), ("programid", "<u2"),
    ("psfflux", "<f4"), ("psffluxerr", "<f4"), ("psfmag", "<f4"), ("psfmagerr", "<f4"), ("ra", "<f8"),
    ("sharp", "<f4"), ("sid", "<u8"), ("snr", "<f4"), ("x", "<f8"), ("xpos", "<f4"), ("y", "<f8"),
    ("ypos", "<f4"), ("z", "<f8"),
]

_TITLES = {
    "exposures": "List of Exposures",
    "sourcedata": "Field {field:06d} RC {rcid} Matched Sources Data",
    "sources": "Field {field:06d} RC {rcid} Matched Sources Table",
    "transientdata": "Field {field:06d} RC {rcid} Transients Data",
    "transients": "Field {field:06d} RC {rcid} Transients Table",
}

_DTYPES = {
    "exposures": EXPOSURES_DTYPE + EXTRA_EXPOSURE_COLUMNS,
    "sources": SOURCES_DTYPE + EXTRA_SOURCE_COLUMNS,
    "sourcedata": SOURCEDATA_DTYPE,
    "transients": SOURCES_DTYPE + EXTRA_SOURCE_COLUMNS,
    "transientdata": TRANSIENTDATA_DTYPE,
}

_TABLE_ATTRS = ("CLASS", "VERSION", "TITLE", "NROWS")


def matchfile_name(field: int, filtercode: str, ccdid: int, qid: int) -> str:
    """IPAC's matchfile name, e.g. ``ztf_000245_zr_c10_q1_match.pytable``."""
    return f"ztf_{int(field):06d}_{filtercode}_c{int(ccdid):02d}_q{int(qid)}_match.pytable"


def empty_table(name: str, n: int = 0) -> Table:
    """A zero-filled table of ``n`` rows with the columns of matchfile table ``name`` (plus ztfsds's)."""
    if name not in _DTYPES:
        raise ValueError(f"unknown matchfile table {name!r}; valid: {', '.join(_DTYPES)}")
    return Table(np.zeros(n, dtype=_DTYPES[name]))


@dataclasses.dataclass
class MatchFile:
    """The content of one matchfile.

    Attributes
    ----------
    attrs : dict
        Attributes of the ``/matches`` group (``fieldID``, ``ccdID``, ``quadrantID``, ``rcID``, ``filterID``,
        ``referenceImageID``, ``referenceZeroPoint`` [mag], ...), numpy scalars as stored.
    exposures, sources, sourcedata, transients, transientdata : `~astropy.table.Table`
        The tables; ``meta`` of each holds the dataset's own attributes other than PyTables' bookkeeping
        (e.g. the ``A``...``D`` error-model coefficients of ``sourcedata``).
    """

    attrs: dict
    exposures: Table
    sources: Table
    sourcedata: Table
    transients: Table = dataclasses.field(default_factory=lambda: empty_table("transients"))
    transientdata: Table = dataclasses.field(default_factory=lambda: empty_table("transientdata"))

    def table(self, name: str) -> Table:
        """One of the tables by name."""
        if name not in TABLE_NAMES:
            raise KeyError(f"no matchfile table {name!r}; valid: {', '.join(TABLE_NAMES)}")
        return getattr(self, name)

    @property
    def field(self) -> int:
        return int(self.attrs.get("fieldID", 0))

    @property
    def ccdid(self) -> int:
        return int(self.attrs.get("ccdID", 0))

    @property
    def qid(self) -> int:
        return int(self.attrs.get("quadrantID", 0))

    @property
    def rcid(self) -> int:
        return int(self.attrs.get("rcID", 4 * (self.ccdid - 1) + self.qid - 1))

    @property
    def filterid(self) -> int:
        return int(self.attrs.get("filterID", 0))


def read_matchfile(path: str | os.PathLike) -> MatchFile:
    """Read a matchfile (IPAC's or ours) with h5py.

    Parameters
    ----------
    path : path-like
        The ``*_match.pytable`` file.

    Returns
    -------
    MatchFile
        Group attributes and the five tables (a table absent from the file is empty).

    Raises
    ------
    ztfsds.errors.InputError
        If the file is not HDF5 or has no ``/matches`` group.
    """
    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable HDF5 matchfile ({exc})") from exc
    with h5:
        if "matches" not in h5:
            raise InputError(path, f"no /matches group (groups: {', '.join(h5) or 'none'}); not a matchfile")
        group = h5["matches"]
        attrs = dict(group.attrs.items())
        tables = {}
        for name in TABLE_NAMES:
            if name not in group:
                tables[name] = empty_table(name)
                continue
            dset = group[name]
            if dset.dtype.names is None:
                raise InputError(path, f"/matches/{name} is not a table (dtype {dset.dtype})")
            table = Table(dset[()])
            for key, value in dset.attrs.items():
                if key in _TABLE_ATTRS or (key.startswith("FIELD_") and key.endswith(("_NAME", "_FILL"))):
                    continue
                table.meta[key] = value
            table.meta["TITLE"] = dset.attrs.get("TITLE", np.bytes_(b""))
            table.meta["VERSION"] = dset.attrs.get("VERSION", np.bytes_(b"2.7"))
            tables[name] = table
    return MatchFile(attrs=attrs, **tables)


def _fill_value(dtype: np.dtype):
    base = dtype.base if dtype.subdtype else dtype
    return np.zeros((), dtype=base)[()] if base.kind != "S" else np.bytes_(b"")


def _structured(table: Table) -> np.ndarray:
    arr = table.as_array()
    if hasattr(arr, "filled"):
        arr = arr.filled()
    return np.asarray(arr)


def _write_table(group: h5py.Group, name: str, table: Table, title: str) -> None:
    data = _structured(table)
    itemsize = max(int(data.dtype.itemsize), 1)
    chunk = max(1, min(max(len(data), 1), 65536 // itemsize))
    dset = group.create_dataset(name, data=data, maxshape=(None,), chunks=(chunk,))
    dset.attrs["CLASS"] = np.bytes_(b"TABLE")
    dset.attrs["VERSION"] = np.bytes_(table.meta.get("VERSION", b"2.7"))
    dset.attrs["TITLE"] = np.bytes_(table.meta.get("TITLE", title.encode()))
    for i, field in enumerate(data.dtype.names):
        dset.attrs[f"FIELD_{i}_NAME"] = np.bytes_(field.encode())
        dset.attrs[f"FIELD_{i}_FILL"] = _fill_value(data.dtype[field])
    dset.attrs["NROWS"] = np.int64(len(data))
    for key, value in table.meta.items():
        if key in ("TITLE", "VERSION"):
            continue
        dset.attrs[key] = value


def write_matchfile(matchfile: MatchFile, path: str | os.PathLike) -> Path:
    """Write a matchfile in IPAC's PyTables layout, atomically.

    Parameters
    ----------
    matchfile : MatchFile
        The content; tables are written with the dtypes of their columns (so IPAC's tables read by
        `read_matchfile` are written back byte-for-byte the same in values and types).
    path : path-like
        Destination; replaced only once the new file is complete.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    field, rcid = matchfile.field, matchfile.rcid
    with atomic_write(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["CLASS"] = np.bytes_(b"GROUP")
            h5.attrs["FILTERS"] = np.int64(0)
            h5.attrs["PYTABLES_FORMAT_VERSION"] = np.bytes_(b"2.1")
            h5.attrs["TITLE"] = h5py.Empty("S1")
            h5.attrs["VERSION"] = np.bytes_(b"1.0")
            group = h5.create_group("matches")
            attrs = {"CLASS": np.bytes_(b"GROUP"), "FILTERS": np.int64(0),
                     "TITLE": np.bytes_(b"Matched Sources"), "VERSION": np.bytes_(b"1.0")}
            attrs.update(matchfile.attrs)
            for key, value in attrs.items():
                group.attrs[key] = value
            for name in TABLE_NAMES:
                _write_table(group, name, matchfile.table(name), _TITLES[name].format(field=field, rcid=rcid))
    log.info("wrote matchfile %s (%d sources, %d epochs, %d detections)", path, len(matchfile.sources),
             len(matchfile.exposures), len(matchfile.sourcedata))
    return path
