"""Source matching across epochs, relative photometry, matchfiles and lightcurves (``ztfsds.match``).

- `match_epochs`: every epoch's PSF catalog against the reference-image sources (1.5"), new objects
  from sources seen in two or more epochs, unmatched detections kept; incremental updates.
- `calibrate`: relative photometric refinement per epoch from the ensemble of non-variable stars,
  variability statistics, variable flags and Lomb-Scargle periods.
- `read_matchfile`, `write_matchfile`: IPAC's matchfile layout (PyTables HDF5, read and written with h5py).
- `lightcurve_table`, `write_hats`, `read_lightcurves`, `update_lightcurves`: public-release lightcurves as a
  HATS catalog (HEALPix-partitioned Parquet, readable by lsdb).
- `run_match`, `run_match_all`: the product runner over a data root, optionally on Dask.
- `query_lightcurves`, `write_lightcurves`, `plot_lightcurve`: the IRSA lightcurve service's parameters,
  columns and formats.
"""

from .lightcurve_api import (
    LightcurveQueryError,
    parse_query,
    plot_lightcurve,
    query_lightcurves,
    write_lightcurves,
)
from .lightcurves import (
    lightcurve_table,
    read_dr_parquet,
    read_lightcurves,
    update_lightcurves,
    write_hats,
)
from .matchfile import MatchFile, matchfile_name, read_matchfile, write_matchfile
from .matching import exposure_record, match_epochs, reference_objects
from .params import BAD_EPOCH_CATFLAG, MatchParams
from .relphot import calibrate, lomb_scargle_period, relative_offsets, source_statistics
from .runner import DEFAULT_COLLECTION, run_match, run_match_all

__all__ = [
    "MatchParams",
    "BAD_EPOCH_CATFLAG",
    "MatchFile",
    "read_matchfile",
    "write_matchfile",
    "matchfile_name",
    "match_epochs",
    "exposure_record",
    "reference_objects",
    "calibrate",
    "relative_offsets",
    "source_statistics",
    "lomb_scargle_period",
    "lightcurve_table",
    "write_hats",
    "read_lightcurves",
    "read_dr_parquet",
    "update_lightcurves",
    "run_match",
    "run_match_all",
    "DEFAULT_COLLECTION",
    "query_lightcurves",
    "parse_query",
    "write_lightcurves",
    "plot_lightcurve",
    "LightcurveQueryError",
]
