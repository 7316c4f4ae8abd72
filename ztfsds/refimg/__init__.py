"""Reference images: epoch selection, resampling, co-addition, the reference products and their synopsis.

Modules: `~ztfsds.refimg.resample` (Lanczos3 resampling between WCSs, compiled), `~ztfsds.refimg.coadd`
(selection, reference grid, outlier-rejecting weighted co-add), `~ztfsds.refimg.runner`
(`build_reference`, `reference_synopsis`).
"""

from .resample import Resampled, resample
from .coadd import CoaddResult, Epoch, NoReferenceError, coadd, reference_grid, select_epochs
from .runner import REFERENCE_ZP, build_reference, epoch_table, reference_synopsis

__all__ = ["resample", "Resampled", "select_epochs", "reference_grid", "coadd", "Epoch", "CoaddResult", "NoReferenceError",
           "build_reference", "reference_synopsis", "epoch_table", "REFERENCE_ZP"]
