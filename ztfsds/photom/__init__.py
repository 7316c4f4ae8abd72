"""Photometry: the spatially varying PSF model, PSF-fit and aperture catalogs, photometric calibration,
limiting magnitudes and forced photometry.

Modules: `~ztfsds.photom.psf` (PSF model), `~ztfsds.photom.psffit` (PSF-fit and forced photometry),
`~ztfsds.photom.aperture` (fixed apertures and their corrections), `~ztfsds.photom.photcal` (zero point,
colour term, limiting magnitudes), `~ztfsds.photom.runner` (`run_photom`, the product runner) and
`~ztfsds.photom.forced` (the forced-photometry service and its users' helpers).
"""

from .aperture import ZTF_DIAMETERS, ApertureFlags, apcor_header_cards, aperture_corrections, aperture_photometry
from .forced import (ProcStatus, baseline_correct, forced_photometry_service, read_forced_photometry,
                     rescale_uncertainties, to_magnitudes, write_forced_photometry)
from .photcal import PhotCalResult, empirical_limiting_magnitude, limiting_magnitude, photometric_calibration
from .psf import PSFModel, build_psf
from .psffit import ForcedPhotFlags, PSFFitFlags, forced_photometry, psf_photometry
from .runner import run_photom

__all__ = ["PSFModel", "build_psf", "psf_photometry", "forced_photometry", "PSFFitFlags", "ForcedPhotFlags", "ZTF_DIAMETERS", "ApertureFlags",
           "aperture_photometry", "aperture_corrections", "apcor_header_cards", "PhotCalResult",
           "photometric_calibration", "limiting_magnitude", "empirical_limiting_magnitude", "run_photom",
           "forced_photometry_service", "ProcStatus", "baseline_correct", "rescale_uncertainties",
           "to_magnitudes", "read_forced_photometry", "write_forced_photometry"]
