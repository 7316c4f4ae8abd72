"""The simulator: realistic raw ZTF nights with truth tables (the yardstick of every accuracy test).

- `ztfsds.sim.sky`: stars, galaxies, variables, supernovae, nuclear transients, asteroids, and the
  Gaia-like / PS1-like calibrator catalogs exported from the same sky.
- `ztfsds.sim.conditions`: the night schedule and the observing conditions of each exposure.
- `ztfsds.sim.optics`: the true WCS (pointing offset, rotation, distortion), the spatially varying PSF
  and the renderer.
- `ztfsds.sim.instrument` and `ztfsds.sim.raw`: the camera (bias, overscan, flat, defects,
  non-linearity, saturation and bleeds, crosstalk, cosmic rays) and the raw files it writes.
- `ztfsds.sim.night`: `simulate_night`, everything together under a data root.

The simulator imports only `ztfsds.camera`, `ztfsds.products` and `ztfsds.errors`: it shares no
measurement code with the pipeline it grades.
"""

from .night import NightResult, known_asteroids, simulate_exposure_ccd, simulate_night, sky_for_ccd, truth_path

__all__ = ["NightResult", "simulate_night", "simulate_exposure_ccd", "sky_for_ccd", "truth_path", "known_asteroids"]
