"""`MatchParams`: the parameters of source matching, relative photometry and lightcurve writing."""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError

__all__ = ["MatchParams", "BAD_EPOCH_CATFLAG"]

#: ``catflags`` bit of an epoch flagged bad as a whole (bad INFOBITS, failed relative calibration).
BAD_EPOCH_CATFLAG = 32768


@dataclasses.dataclass(frozen=True)
class MatchParams:
    """Parameters of `ztfsds.match` (defaults follow IPAC's matchfiles where known).

    Attributes
    ----------
    radius : float
        Match radius between an epoch's detection and an object [arcsec] (IPAC: 1.5).
    min_new_epochs : int
        Epochs in which a source absent from the reference must be detected (within ``radius`` of
        its other detections) to become a new object.
    bad_infobits : int
        An epoch whose INFOBITS has any of these bits gets ``catflags`` bit 15 on every detection
        (default: every bit IPAC sets for a failed or degraded calibration, i.e. all but bit 0).
    cal_max_magerr : float
        Detections with larger photometric errors are not used as relative-calibration stars [mag].
    cal_min_nobs : int
        Calibration stars need at least this many good epochs.
    cal_clip : float
        Residuals beyond this many sigma are dropped from the relative-calibration fit.
    cal_var_chi2 : float
        Calibration stars whose reduced chi2 exceeds this multiple of the median reduced chi2 are
        treated as variable and dropped from the fit.
    cal_iterations : int
        Outer (rejection) iterations of the relative calibration.
    cal_floor : float
        Error added in quadrature to every detection's ``magerr`` in the fit weights [mag].
    spatial_degree : {0, 1}
        0: one offset per epoch; 1: offset plus a linear term in x and y per epoch.
    min_epoch_cal : int
        An epoch with fewer calibration stars is flagged bad (``catflags`` bit 15) and not corrected.
    var_chi2 : float
        Objects whose reduced chi2 (about the weighted mean, with ``var_floor``) exceeds this are flagged
        variable (together with ``var_stetsonj``).
    var_stetsonj : float
        Minimum Stetson J of a variable.
    var_robust : float
        Minimum robust variance ``(1.4826 median |z|)^2`` of a variable's normalised deviations from its median,
        ``z = (mag - median) / sqrt(magerr^2 + var_floor^2)`` (1 for noise): single outliers raise the chi2
        and Stetson J, not this.
    var_floor : float
        Systematic error added in quadrature to ``magerr`` in the variability statistics [mag].
    var_min_nobs : int
        Minimum good epochs for a variability flag and a period.
    period_min, period_max : float
        Range of the Lomb-Scargle period search [day].
    samples_per_peak : int
        Frequency-grid oversampling of the Lomb-Scargle periodogram.
    hats_max_rows : int
        Largest number of objects in one HATS partition file before it is split into its 4 children.
    hats_max_order : int
        Deepest HEALPix order of a HATS partition.
    """

    radius: float = 1.5
    min_new_epochs: int = 2
    bad_infobits: int = 0x7FFFFFFE
    cal_max_magerr: float = 0.05
    cal_min_nobs: int = 5
    cal_clip: float = 5.0
    cal_var_chi2: float = 3.0
    cal_iterations: int = 4
    cal_floor: float = 0.003
    spatial_degree: int = 0
    min_epoch_cal: int = 10
    var_chi2: float = 5.0
    var_stetsonj: float = 0.5
    var_robust: float = 2.0
    var_floor: float = 0.0
    var_min_nobs: int = 10
    period_min: float = 0.1
    period_max: float = 200.0
    samples_per_peak: int = 5
    hats_max_rows: int = 200_000
    hats_max_order: int = 10

    def __post_init__(self):
        checks = [
            ("radius", self.radius > 0),
            ("min_new_epochs", self.min_new_epochs >= 2),
            ("cal_max_magerr", self.cal_max_magerr > 0),
            ("cal_min_nobs", self.cal_min_nobs >= 2),
            ("cal_clip", self.cal_clip > 0),
            ("cal_var_chi2", self.cal_var_chi2 > 1),
            ("cal_iterations", self.cal_iterations >= 1),
            ("cal_floor", self.cal_floor >= 0),
            ("spatial_degree", self.spatial_degree in (0, 1)),
            ("min_epoch_cal", self.min_epoch_cal >= 1),
            ("var_min_nobs", self.var_min_nobs >= 3),
            ("period_min", 0 < self.period_min < self.period_max),
            ("samples_per_peak", self.samples_per_peak >= 1),
            ("hats_max_rows", self.hats_max_rows >= 1),
            ("hats_max_order", 0 <= self.hats_max_order <= 19),
        ]
        for name, ok in checks:
            if not ok:
                raise ConfigError(f"MatchParams: invalid {name} = {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, config) -> "MatchParams":
        """The parameters from a `MatchParams`, a `ztfsds.config.Config` with a ``match`` set, a dict or None."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, dict):
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(config) - names)
            if unknown:
                raise ConfigError(f"MatchParams: unknown parameter(s) {', '.join(unknown)}")
            return cls(**config)
        match = getattr(config, "match", None)
        if match is None:
            return cls()
        if isinstance(match, cls):
            return match
        return cls(**{f.name: getattr(match, f.name) for f in dataclasses.fields(cls) if hasattr(match, f.name)})
