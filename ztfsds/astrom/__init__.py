"""Source extraction and astrometric calibration.

`extract` finds and measures the sources of a calibrated quadrant (compiled background mesh,
matched-filter detection, deblending, windowed centroids, moments, fluxes, flags); `prior_wcs` builds the
pointing prior from a header; `solve_wcs` matches the detections to a Gaia-like catalog by triangle
asterisms from that prior and fits a TPV (or SIP) distortion with outlier rejection, with ZTF's QA
keywords and INFOBITS; `run_astrom` is the product runner.
"""

from .extraction import Background, SourceFlags, background, extract
from .match import AsterismMatch, match_asterisms
from .runner import run_astrom
from .solve import AstromResult, prior_wcs, solve_wcs

__all__ = [
    "Background",
    "SourceFlags",
    "background",
    "extract",
    "AsterismMatch",
    "match_asterisms",
    "AstromResult",
    "prior_wcs",
    "solve_wcs",
    "run_astrom",
]
