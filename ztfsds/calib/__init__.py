"""Instrumental calibration: raw CCD files to sciimg, mskimg and variance, and the calibration library.

`build_library` measures a night's calibration (master biases, flats, bad-pixel masks, gains, read
noise, saturation, crosstalk) and writes it as products; `load_calibration` finds the products valid for
a night; `calibrate_ccd` / `calibrate_raw_file` apply them; `run_calib` is the product runner.
"""

from .apply import CalibratedQuadrant, calibrate_ccd, calibrate_quadrant, calibrate_raw_file, linear_signal
from .calibration import CCDCalibration, QuadrantCalibration
from .library import (
    CrosstalkResult,
    MasterBias,
    MasterFlat,
    RawCCD,
    bad_pixel_mask,
    build_library,
    hot_pixels,
    load_calibration,
    master_bias,
    master_flat,
    measure_crosstalk,
    normalize_ccd_flats,
    read_raw_ccd,
    saturation_level,
)
from .overscan import overscan_level
from .runner import quality_infobits, run_calib

__all__ = [
    "CCDCalibration",
    "QuadrantCalibration",
    "CalibratedQuadrant",
    "calibrate_ccd",
    "calibrate_quadrant",
    "calibrate_raw_file",
    "linear_signal",
    "CrosstalkResult",
    "MasterBias",
    "MasterFlat",
    "RawCCD",
    "bad_pixel_mask",
    "build_library",
    "hot_pixels",
    "load_calibration",
    "master_bias",
    "master_flat",
    "measure_crosstalk",
    "normalize_ccd_flats",
    "read_raw_ccd",
    "saturation_level",
    "overscan_level",
    "quality_infobits",
    "run_calib",
]
