"""Instrumental calibration: raw CCD files to sciimg, mskimg and variance, and the calibration library."""

from .calibration import CCDCalibration, QuadrantCalibration
from .overscan import overscan_level

__all__ = ["CCDCalibration", "QuadrantCalibration", "overscan_level"]
