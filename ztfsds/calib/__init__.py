"""Instrumental calibration: raw CCD files to sciimg, mskimg and variance, and the calibration library."""

from .calibration import CCDCalibration, QuadrantCalibration

__all__ = ["CCDCalibration", "QuadrantCalibration"]
