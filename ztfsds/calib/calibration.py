"""The calibration a raw CCD needs: what `build_library` measures and `calibrate_ccd` applies.

A `CCDCalibration` holds one `QuadrantCalibration` per readout quadrant plus the CCD's crosstalk
matrix. Arrays are in science orientation (the orientation of the raw quadrant HDUs as written by
the camera and the simulator), the quadrant shape of the raw data.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["QuadrantCalibration", "CCDCalibration"]


@dataclasses.dataclass(frozen=True)
class QuadrantCalibration:
    """Calibration of one readout quadrant.

    Attributes
    ----------
    ccdid, qid : int
        The quadrant.
    filtercode : str
        Filter of the flat ('zg', 'zr', 'zi').
    bias : numpy.ndarray
        float32 (ny, nx) master bias [DN]: the image-area bias less the per-row overscan level.
    flat : numpy.ndarray
        float32 (ny, nx) master flat, normalised to median 1 over the CCD's four quadrants (the
        channels' relative gains stay in it); 1 where the pixel is unusable (see ``bpm``).
    bpm : numpy.ndarray
        int16 (ny, nx) bad-pixel mask, an OR of `ztfsds.products.MaskBits` (DEAD, LOW_RESPONSIVITY,
        HIGH_RESPONSIVITY, NOISY); 0 for good pixels.
    gain : float
        Measured gain [e-/DN] (photon-transfer curve of flat pairs).
    read_noise : float
        Measured read noise [e-] (from bias frames).
    nonlin_a, nonlin_b : float
        Non-linearity coefficients (``DN_true = x / (a x**2 + b x + 1)``, x = raw DN above bias).
    saturation : float
        Raw level above the bias [DN] at and above which a pixel is saturated (ADC ceiling or full
        well, whichever comes first).
    provenance : dict
        Header cards naming the products used, e.g. ``{'CIDBIAS': 'ztf_20200924_OO_c13_q3_bias.fits',
        'CIDHIFLT': ...}``.
    """

    ccdid: int
    qid: int
    filtercode: str
    bias: np.ndarray
    flat: np.ndarray
    bpm: np.ndarray
    gain: float
    read_noise: float
    nonlin_a: float
    nonlin_b: float
    saturation: float
    provenance: dict = dataclasses.field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """Quadrant shape ``(ny, nx)``."""
        return tuple(self.bias.shape)


@dataclasses.dataclass(frozen=True)
class CCDCalibration:
    """Calibration of one CCD for one filter and night.

    Attributes
    ----------
    ccdid : int
        CCD id.
    filtercode : str
        Filter.
    night : str
        ``YYYYMMDD`` of the calibration products used.
    quadrants : dict of int to QuadrantCalibration
        By qid 1-4.
    crosstalk : numpy.ndarray
        float64 (4, 4): ``crosstalk[v - 1, s - 1]`` is the fraction of amplifier ``s``'s signal [DN]
        that appears in amplifier ``v`` at the same readout position (0 on the diagonal).
    """

    ccdid: int
    filtercode: str
    night: str
    quadrants: dict
    crosstalk: np.ndarray
