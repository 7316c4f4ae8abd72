"""Image subtraction: ZOGY difference images, candidates and their features, real-bogus scores, fakes.

Modules: `~ztfsds.subtract.zogy` (the ZOGY core), `~ztfsds.subtract.streaks` (satellite trails and
fast movers), `~ztfsds.subtract.candidates` (detection in Scorr,
measurements on D, cutouts), `~ztfsds.subtract.braai` (the published braai d6_m7 real-bogus CNN in
numpy, ``drb``), `~ztfsds.subtract.realbogus` (our ``rb``, trained on simulated injections and
artefacts), `~ztfsds.subtract.fakes` (injected point sources), `~ztfsds.subtract.runner`
(`subtract_images`, `run_subtract`).
"""

from .braai import DRBVERSION, braai_score
from .realbogus import RB_VERSION, rb_score
from .candidates import cutouts, find_candidates
from .fakes import inject_point_sources
from .runner import Subtraction, difference_psf, run_subtract, subtract_images
from .streaks import detect_streaks, on_streak, streak_mask
from .zogy import ZogyResult, zogy

__all__ = ["subtract_images", "run_subtract", "Subtraction", "find_candidates", "cutouts",
           "inject_point_sources", "braai_score", "detect_streaks", "streak_mask", "on_streak", "zogy",
           "ZogyResult", "difference_psf", "rb_score", "RB_VERSION", "DRBVERSION"]
