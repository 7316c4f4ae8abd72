"""Typed, documented parameter sets: one per stage, loadable from TOML, written into product headers.

Every stage takes its own frozen dataclass of parameters (`CalibParams`, `AstromParams`, ...). `Config`
groups them; `load_config` reads a TOML file with one table per stage::

    [calib]
    overscan_poly_order = 2

    [astrom]
    detect_threshold = 4.0

Unknown tables or keys, wrong types and out-of-range values are rejected with a `~ztfsds.errors.ConfigError`
that names the file, the key and the problem (and suggests the nearest valid key). Each parameter set
has a stable hash (`ParamSet.param_hash`) that, with the package version, is written into every product
header (`Config.to_header`), so a product always says how it was made.

Examples
--------
>>> from ztfsds.config import Config
>>> cfg = Config.from_dict({"calib": {"overscan_poly_order": 2}})
>>> cfg.calib.overscan_poly_order
2
>>> cfg.calib.param_hash() != Config().calib.param_hash()
True
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any, ClassVar

from astropy.io import fits

from ._version import __version__
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ParamSet",
    "CalibParams",
    "AstromParams",
    "PhotomParams",
    "RefimgParams",
    "SubtractParams",
    "AlertParams",
    "ArchiveParams",
    "OpsParams",
    "Config",
    "load_config",
]


def _param(default, doc: str, *, unit: str = "", choices: tuple | None = None, min=None, max=None):
    """A dataclass field carrying its documentation, unit and allowed values."""
    return dataclasses.field(default=default, metadata={"doc": doc, "unit": unit, "choices": choices,
                                                        "min": min, "max": max})


class ParamSet:
    """Mixin of every stage's parameter dataclass: validation, dict/TOML/header round trips, hash."""

    #: TOML table name and header keyword prefix of the stage.
    section: ClassVar[str] = ""
    #: 8-character header keyword holding the parameter hash.
    hash_keyword: ClassVar[str] = ""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(getattr(self, f.name), hints[f.name], f"[{self.section}] {f.name}")
            meta = f.metadata
            if meta.get("choices") and value not in meta["choices"]:
                raise ConfigError(f"[{self.section}] {f.name} = {value!r}: must be one of {meta['choices']}")
            for item in value if isinstance(value, tuple) else (value,):
                if meta.get("min") is not None and item < meta["min"]:
                    raise ConfigError(f"[{self.section}] {f.name} = {value!r}: must be >= {meta['min']}")
                if meta.get("max") is not None and item > meta["max"]:
                    raise ConfigError(f"[{self.section}] {f.name} = {value!r}: must be <= {meta['max']}")
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Cross-parameter checks (overridden by stages that need them); raise ConfigError."""

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "<dict>"):
        """Build from a mapping, rejecting unknown keys with a suggestion.

        Parameters
        ----------
        values : dict
            Parameter names and values.
        source : str, optional
            Where the values came from (a file name), used in error messages.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{source}: unknown parameter {key!r} in [{cls.section}]{hint}; "
                                  f"valid keys: {', '.join(names)}")
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Parameter values as plain Python types (tuples as lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    def param_hash(self) -> str:
        """Stable 12-hex-digit hash of the stage name and values (independent of dict order/platform)."""
        payload = json.dumps({"section": self.section, "params": self.to_dict()}, sort_keys=True,
                             separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def header_cards(self) -> list[fits.Card]:
        """Header cards recording the parameters: the hash keyword and one HIERARCH card per value."""
        cards = [fits.Card(self.hash_keyword, self.param_hash(), f"ztfsds {self.section} parameter hash")]
        for name, value in self.to_dict().items():
            text = ",".join(map(str, value)) if isinstance(value, list) else value
            cards.append(fits.Card(f"HIERARCH ZTFSDS {self.section.upper()} {name.upper()}", text))
        return cards

    @classmethod
    def from_header(cls, header: fits.Header):
        """Rebuild the parameter set from cards written by `header_cards`."""
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            key = f"ZTFSDS {cls.section.upper()} {f.name.upper()}"
            if key not in header:
                continue
            raw = header[key]
            origin = typing.get_origin(hints[f.name])
            if origin is tuple:
                raw = [] if raw == "" else str(raw).split(",")
            values[f.name] = raw
        return cls.from_dict(values, source="FITS header")

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str, str]]:
        """(name, default, unit, documentation) of every parameter, for docs and ``ztfsds config show``."""
        return [(f.name, f.default, f.metadata.get("unit", ""), f.metadata.get("doc", ""))
                for f in dataclasses.fields(cls)]


def _coerce(value, hint, where: str):
    """Check (and gently convert) one value against its annotation."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, str):
            raise ConfigError(f"{where} = {value!r}: expected a list")
        try:
            items = list(value)
        except TypeError:
            raise ConfigError(f"{where} = {value!r}: expected a list") from None
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(items)
        else:
            if len(items) != len(args):
                raise ConfigError(f"{where} = {value!r}: expected {len(args)} values")
            item_types = list(args)
        return tuple(_coerce(v, t, where) for v, t in zip(items, item_types))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value in ("True", "False", "T", "F"):  # from FITS header text
            return value in ("True", "T")
        raise ConfigError(f"{where} = {value!r}: expected true or false")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} = {value!r}: expected an integer")
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: expected a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} = {value!r}: expected a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} = {value!r}: expected a string")
    raise TypeError(f"{where}: unsupported parameter type {hint!r}")  # a programming error


@dataclasses.dataclass(frozen=True)
class CalibParams(ParamSet):
    """Instrumental calibration (`ztfsds.calib`): overscan, bias, flats, masks, saturation.

    Attributes
    ----------
    overscan_columns : tuple of int
        First and last+1 overscan columns used for the per-row bias level (ZTF uses 5-25 of 30).
    overscan_clip_sigma : float
        Clip threshold of the per-row overscan statistic, in robust sigma.
    overscan_poly_order : int
        Order of the polynomial fitted to the per-row overscan levels along rows.
    stack_clip_sigma : float
        Clip threshold when combining bias and flat stacks, in robust sigma.
    stack_maxiters : int
        Maximum clipping iterations of the stack combination.
    saturation_margin : float
        Pixels above this fraction of the channel's saturation level are flagged SATURATED.
    cosmic_ray_sigma : float
        Detection threshold of the cosmic-ray (pixel spike) flagging, in sigma.
    cosmic_ray_contrast : float
        A cosmic-ray pixel must exceed the median of its 8 neighbours by this many times their excess
        over the local background (a star's core: ~4 at FWHM 1.5 px, ~2.4 at 2 px).
    cosmic_ray_grow_sigma : float
        Neighbours of a cosmic-ray pixel this far above the median of their own neighbours (and as
        sharp) are flagged too, in sigma.
    crosstalk : bool
        Remove amplifier crosstalk ghosts.
    crosstalk_ghost_sigma : float
        Pixels where the removed crosstalk ghost exceeded this many sigma of the pixel noise are
        flagged GHOST.
    workers : int
        Threads used by the compiled stack combination and the per-exposure calibration.
    """

    section: ClassVar[str] = "calib"
    hash_keyword: ClassVar[str] = "CALHASH"

    overscan_columns: tuple[int, int] = _param((5, 25), "overscan columns used (first, last+1)", unit="pix",
                                               min=0, max=30)
    overscan_clip_sigma: float = _param(3.0, "overscan row clip threshold", unit="sigma", min=0.5)
    overscan_poly_order: int = _param(3, "overscan polynomial order along rows", min=0, max=9)
    stack_clip_sigma: float = _param(3.0, "stack combination clip threshold", unit="sigma", min=0.5)
    stack_maxiters: int = _param(5, "stack combination clipping iterations", min=1, max=50)
    saturation_margin: float = _param(0.98, "fraction of saturation level flagged SATURATED", min=0.1, max=1.0)
    cosmic_ray_sigma: float = _param(5.0, "cosmic-ray flagging threshold", unit="sigma", min=1.0)
    cosmic_ray_contrast: float = _param(5.0, "cosmic-ray sharpness: excess over neighbours / their excess",
                                        min=1.0)
    cosmic_ray_grow_sigma: float = _param(2.0, "cosmic-ray growth threshold (neighbours of a hit)", unit="sigma",
                                          min=0.0)
    crosstalk: bool = _param(True, "remove amplifier crosstalk ghosts")
    crosstalk_ghost_sigma: float = _param(5.0, "GHOST flag: removed ghost above this noise multiple",
                                          unit="sigma", min=0.0)
    workers: int = _param(1, "threads for compiled stack combination and calibration", min=1)

    def validate(self):
        lo, hi = self.overscan_columns
        if hi - lo < 3:
            raise ConfigError(f"[calib] overscan_columns = {self.overscan_columns}: need at least 3 columns")


@dataclasses.dataclass(frozen=True)
class AstromParams(ParamSet):
    """Source extraction and astrometric calibration (`ztfsds.astrom`).

    Attributes
    ----------
    detect_threshold : float
        Detection threshold above the local background RMS, in sigma.
    background_mesh : int
        Background mesh cell size, in pixels.
    min_area : int
        Minimum number of connected pixels above threshold for a detection.
    prior_offset : float
        Largest pointing error of the prior searched by the pattern matcher, in arcsec.
    prior_rotation : float
        Largest rotation error of the prior searched, in degrees.
    match_radius : float
        Final cross-match radius between detections and the reference catalog, in arcsec.
    distortion : str
        Distortion model: 'tpv' (as ZTF/SCAMP) or 'sip'.
    distortion_degree : int
        Polynomial degree of the distortion (3, cubic, as the issue and the simulator's optics; the
        real IPAC headers carry PV1_0-PV1_16, a quartic TPV: 4 reproduces them to 3 mas instead of
        7.5 mas). Reduced automatically when there are too few matches.
    clip_sigma : float
        Outlier rejection threshold of the fit, in sigma.
    min_matches : int
        Fewer matched stars than this sets INFOBITS bit 14 (ZTF: 100), for a full quadrant; an image
        of a fraction of its area needs that fraction of them (at least 10).
    """

    section: ClassVar[str] = "astrom"
    hash_keyword: ClassVar[str] = "ASTHASH"

    detect_threshold: float = _param(5.0, "detection threshold", unit="sigma", min=0.5)
    background_mesh: int = _param(128, "background mesh size", unit="pix", min=8)
    min_area: int = _param(5, "minimum connected pixels of a detection", unit="pix", min=1)
    prior_offset: float = _param(150.0, "pointing-prior search radius", unit="arcsec", min=0.0)
    prior_rotation: float = _param(0.6, "pointing-prior rotation search range", unit="deg", min=0.0)
    match_radius: float = _param(1.5, "final cross-match radius", unit="arcsec", min=0.01)
    distortion: str = _param("tpv", "distortion model", choices=("tpv", "sip"))
    distortion_degree: int = _param(3, "distortion polynomial degree", min=1, max=5)
    clip_sigma: float = _param(3.0, "fit outlier rejection", unit="sigma", min=1.0)
    min_matches: int = _param(100, "minimum matches before INFOBITS bit 14", min=3)


@dataclasses.dataclass(frozen=True)
class PhotomParams(ParamSet):
    """PSF modelling, PSF-fit and aperture photometry, photometric calibration (`ztfsds.photom`).

    Attributes
    ----------
    psf_size : int
        Side of the PSF model stamp, in pixels (odd).
    psf_oversampling : int
        Oversampling factor of the pixel-basis PSF model.
    psf_degree : int
        Degree of the polynomial variation of the PSF across the quadrant.
    psf_max_stars : int
        Most stars used to build the PSF model.
    fit_radius : float
        Radius of the pixels used in a PSF fit, in pixels (raised to 1.1 x the FWHM in poor seeing).
    group_radius : float
        Sources closer than this (friends of friends) are PSF-fitted together, in pixels.
    max_group : int
        Largest group fitted jointly; larger groups are split.
    psf_error : float
        Fractional error of the PSF model per pixel (DAOPHOT's profile error): adds
        ``(psf_error * model)**2`` to each pixel's variance, so that bright stars' uncertainties include
        the model's imperfection.
    aperture_diameters : tuple of float
        Aperture diameters of the aperture catalog, in pixels (ZTF: 2, 3, 4, 6, 10, 14).
    zp_clip_sigma : float
        Outlier rejection of the zero-point fit, in sigma.
    min_calibrators : int
        Fewer PS1-like calibrators than this sets INFOBITS bit 9 (ZTF: 30).
    maglim_snr : float
        Signal-to-noise ratio of the limiting magnitude MAGLIM.
    """

    section: ClassVar[str] = "photom"
    hash_keyword: ClassVar[str] = "PHOHASH"

    psf_size: int = _param(25, "PSF stamp side", unit="pix", min=5)
    psf_oversampling: int = _param(3, "PSF model oversampling", min=1, max=8)
    psf_degree: int = _param(2, "PSF spatial polynomial degree", min=0, max=4)
    psf_max_stars: int = _param(300, "maximum PSF stars", min=5)
    fit_radius: float = _param(3.0, "PSF-fit radius", unit="pix", min=1.0)
    group_radius: float = _param(4.0, "PSF-fit grouping radius", unit="pix", min=0.0)
    max_group: int = _param(25, "largest jointly fitted group", min=1)
    psf_error: float = _param(0.03, "fractional PSF model error per pixel", min=0.0, max=1.0)
    aperture_diameters: tuple[float, ...] = _param((2.0, 3.0, 4.0, 6.0, 10.0, 14.0), "aperture diameters",
                                                   unit="pix", min=0.5)
    zp_clip_sigma: float = _param(3.0, "zero-point outlier rejection", unit="sigma", min=1.0)
    min_calibrators: int = _param(30, "minimum calibrators before INFOBITS bit 9", min=1)
    maglim_snr: float = _param(5.0, "S/N of the limiting magnitude", min=1.0)

    def validate(self):
        if self.psf_size % 2 == 0:
            raise ConfigError(f"[photom] psf_size = {self.psf_size}: must be odd")


@dataclasses.dataclass(frozen=True)
class RefimgParams(ParamSet):
    """Reference-image selection and co-addition (`ztfsds.refimg`).

    Attributes
    ----------
    min_epochs : int
        Fewest good epochs a reference is built from (ZTF: 15).
    max_epochs : int
        Most epochs co-added (ZTF: 40).
    max_seeing : float
        Epochs with worse seeing FWHM are not used, in arcsec.
    min_maglim : float
        Epochs shallower than this 5-sigma limit are not used, in mag.
    kernel : str
        Resampling kernel.
    clip_sigma : float
        Outlier rejection of the co-add, in sigma.
    clip_fraction : float
        Fraction of the pixel's median added (in quadrature) to its noise in the rejection: the
        epochs' seeing differs, so star cores and wings depart from the median by tens of percent
        without being outliers.
    """

    section: ClassVar[str] = "refimg"
    hash_keyword: ClassVar[str] = "REFHASH"

    min_epochs: int = _param(15, "minimum epochs", min=1)
    max_epochs: int = _param(40, "maximum epochs", min=1)
    max_seeing: float = _param(3.0, "maximum seeing FWHM", unit="arcsec", min=0.5)
    min_maglim: float = _param(19.5, "minimum 5-sigma limiting magnitude", unit="mag")
    kernel: str = _param("lanczos3", "resampling kernel", choices=("lanczos3", "bilinear"))
    clip_sigma: float = _param(3.0, "co-add outlier rejection", unit="sigma", min=1.0)
    clip_fraction: float = _param(1.0, "co-add rejection tolerance in proportion to the median", min=0.0)

    def validate(self):
        if self.max_epochs < self.min_epochs:
            raise ConfigError(f"[refimg] max_epochs = {self.max_epochs} < min_epochs = {self.min_epochs}")


@dataclasses.dataclass(frozen=True)
class SubtractParams(ParamSet):
    """ZOGY image subtraction and candidate detection (`ztfsds.subtract`).

    Attributes
    ----------
    astrometric_noise : float
        Registration noise dx = dy of the Scorr astrometric term, in pixels (IPAC: 0.25).
    detect_threshold : float
        Candidates are peaks with ``|Scorr|`` at least this, in sigma (ZTF: 5).
    cutout_size : int
        Side of the science/reference/difference cutouts, in pixels (ZTF: 63).
    fft_workers : int
        Threads of scipy.fft.
    tile_size : int
        ZOGY runs on tiles about this size, each with the PSFs at its centre, in pixels (a full
        quadrant: 3 x 3 tiles).
    tile_margin : int
        Overlap of the ZOGY tiles (more than the kernels' reach), in pixels.
    ref_noise_factor : float
        Variance of the reference's noise at the PSF's scale over its pixel variance: interpolation
        correlates the noise of a resampled image (Lanczos3 lowers the pixel variance to 0.80 of the
        noise level on average, per resampling; a co-add resampled onto the science grid: 1 / 0.80^2).
    ref_psf_stars : int
        Most stars of the reference's PSF refitted on the science grid (the co-add's stars have high
        S/N; 200 keep a degree-2 model, at two thirds of the time of 300).
    max_flux_ratio_change : float
        The new/reference flux ratio measured on the stars is applied only within this fraction of 1
        (the zero points agree to ~1 %; a larger departure is a failed measurement).
    """

    section: ClassVar[str] = "subtract"
    hash_keyword: ClassVar[str] = "SUBHASH"

    astrometric_noise: float = _param(0.25, "registration noise dx = dy", unit="pix", min=0.0)
    detect_threshold: float = _param(5.0, "candidate threshold in |Scorr|", unit="sigma", min=1.0)
    cutout_size: int = _param(63, "cutout side", unit="pix", min=7)
    fft_workers: int = _param(1, "scipy.fft worker threads", min=1)
    tile_size: int = _param(1024, "ZOGY tile size", unit="pix", min=64)
    tile_margin: int = _param(48, "ZOGY tile overlap", unit="pix", min=0)
    ref_noise_factor: float = _param(1.57, "reference noise variance at PSF scale / pixel variance", min=1.0)
    ref_psf_stars: int = _param(200, "most stars of the resampled reference's PSF", min=10)
    max_flux_ratio_change: float = _param(0.05, "largest applied departure of the flux ratio from 1", min=0.0)


@dataclasses.dataclass(frozen=True)
class AlertParams(ParamSet):
    """Alert packets and distribution (`ztfsds.alerts`).

    Attributes
    ----------
    schema_version : str
        ZTF Avro alert schema version written.
    history_days : float
        Length of the ``prv_candidates`` and ``fp_hists`` history, in days.
    association_radius : float
        Radius associating a candidate with an existing object id, in arcsec.
    compact : bool
        Write schemaless packets without cutouts (cutouts then come from the archive).
    kafka_servers : str
        Kafka bootstrap servers ('' = no Kafka; packets go to tar files only).
    """

    section: ClassVar[str] = "alerts"
    hash_keyword: ClassVar[str] = "ALEHASH"

    schema_version: str = _param("4.02", "Avro schema version", choices=("4.02",))
    history_days: float = _param(30.0, "history length", unit="day", min=0.0)
    association_radius: float = _param(1.5, "object association radius", unit="arcsec", min=0.01)
    compact: bool = _param(False, "schemaless packets without cutouts")
    kafka_servers: str = _param("", "Kafka bootstrap servers ('' for none)")


@dataclasses.dataclass(frozen=True)
class ArchiveParams(ParamSet):
    """Database and archive (`ztfsds.archive`).

    Attributes
    ----------
    database_url : str
        '' for the embedded SQLite file under the data root, or a ``postgresql://`` URL.
    healpix_order : int
        HEALPix order (nested) of the position index.
    """

    section: ClassVar[str] = "archive"
    hash_keyword: ClassVar[str] = "ARCHASH"

    database_url: str = _param("", "database URL ('' for SQLite under the data root)")
    healpix_order: int = _param(14, "HEALPix nested order of the position index", min=0, max=29)

    def validate(self):
        url = self.database_url
        if url and not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ConfigError(f"[archive] database_url = {url!r}: must be '' or sqlite:///... or postgresql://...")


@dataclasses.dataclass(frozen=True)
class OpsParams(ParamSet):
    """Night runner and operations (`ztfsds.ops`).

    Attributes
    ----------
    executor : str
        'serial', 'process' (a local process pool) or 'dask'.
    workers : int
        Worker processes of the local pool.
    scheduler : str
        Dask scheduler address when ``executor = 'dask'``.
    retries : int
        Times a failed quadrant job is retried.
    min_free_gb : float
        Clean-up starts below this free disk space, in GB.
    """

    section: ClassVar[str] = "ops"
    hash_keyword: ClassVar[str] = "OPSHASH"

    executor: str = _param("process", "executor", choices=("serial", "process", "dask"))
    workers: int = _param(2, "local worker processes", min=1)
    scheduler: str = _param("", "Dask scheduler address")
    retries: int = _param(1, "retries of a failed job", min=0, max=10)
    min_free_gb: float = _param(5.0, "free-space threshold for clean-up", unit="GB", min=0.0)

    def validate(self):
        if self.executor == "dask" and not self.scheduler:
            raise ConfigError("[ops] executor = 'dask' needs a scheduler address")


_STAGES: dict[str, type[ParamSet]] = {cls.section: cls for cls in (
    CalibParams, AstromParams, PhotomParams, RefimgParams, SubtractParams, AlertParams, ArchiveParams,
    OpsParams)}


@dataclasses.dataclass(frozen=True)
class Config:
    """All stages' parameters.

    Attributes
    ----------
    calib, astrom, photom, refimg, subtract, alerts, archive, ops : ParamSet
        One parameter set per stage (defaults when not given).
    source : str
        Where the configuration came from (a file name, or '<defaults>').
    """

    calib: CalibParams = dataclasses.field(default_factory=CalibParams)
    astrom: AstromParams = dataclasses.field(default_factory=AstromParams)
    photom: PhotomParams = dataclasses.field(default_factory=PhotomParams)
    refimg: RefimgParams = dataclasses.field(default_factory=RefimgParams)
    subtract: SubtractParams = dataclasses.field(default_factory=SubtractParams)
    alerts: AlertParams = dataclasses.field(default_factory=AlertParams)
    archive: ArchiveParams = dataclasses.field(default_factory=ArchiveParams)
    ops: OpsParams = dataclasses.field(default_factory=OpsParams)
    source: str = dataclasses.field(default="<defaults>", compare=False)

    STAGES: ClassVar[tuple[str, ...]] = tuple(_STAGES)

    @classmethod
    def from_dict(cls, tables: dict[str, Any], *, source: str = "<dict>") -> "Config":
        """Build from ``{stage: {parameter: value}}``, rejecting unknown stages and keys."""
        stages = {}
        for name, values in tables.items():
            if name not in _STAGES:
                close = difflib.get_close_matches(name, list(_STAGES), n=1)
                hint = f" (did you mean [{close[0]}]?)" if close else ""
                raise ConfigError(f"{source}: unknown table [{name}]{hint}; valid tables: "
                                  f"{', '.join(_STAGES)}")
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: {name!r} must be a table of parameters ([{name}])")
            stages[name] = _STAGES[name].from_dict(values, source=source)
        return cls(**stages, source=source)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "Config":
        """Read a TOML parameter file (see `load_config`)."""
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ConfigError(f"{path}: parameter file not found") from None
        try:
            tables = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        return cls.from_dict(tables, source=str(path))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{stage: {parameter: value}}`` of every stage."""
        return {name: getattr(self, name).to_dict() for name in self.STAGES}

    def to_toml(self) -> str:
        """The configuration as TOML text that `from_toml` reads back unchanged."""
        lines = [f"# ztfsds {__version__} parameters"]
        for name in self.STAGES:
            params = getattr(self, name)
            lines += ["", f"[{name}]"]
            for pname, default, unit, doc in params.describe():
                value = getattr(params, pname)
                comment = f"{doc}" + (f" [{unit}]" if unit else "")
                lines.append(f"{pname} = {_toml_value(value)}  # {comment}")
        return "\n".join(lines) + "\n"

    def param_hash(self) -> str:
        """Stable hash of all stages' parameters."""
        return hashlib.sha256("".join(getattr(self, n).param_hash() for n in self.STAGES).encode()).hexdigest()[:12]

    def to_header(self, header: fits.Header, stages: tuple[str, ...] | None = None) -> fits.Header:
        """Record the software version and the parameters of ``stages`` (default all) in a header.

        Writes ``PIPEVERS`` (ztfsds version), ``CFGHASH`` (hash of the whole configuration) and, per
        stage, its hash keyword (``CALHASH``...) and one ``HIERARCH ZTFSDS <STAGE> <PARAM>`` card per
        parameter.
        """
        header["PIPEVERS"] = (__version__, "ztfsds version")
        header["CFGHASH"] = (self.param_hash(), "ztfsds configuration hash")
        for name in stages or self.STAGES:
            for card in getattr(self, name).header_cards():
                if card.keyword in header:  # re-running a stage replaces, never duplicates
                    del header[card.keyword]
                header.append(card)
        return header


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load a TOML parameter file; the defaults when ``path`` is None.

    Parameters
    ----------
    path : path-like, optional
        TOML file with one table per stage (``[calib]``, ``[astrom]``, ...). Missing tables and keys
        take their defaults.

    Raises
    ------
    ztfsds.errors.ConfigError
        The file is missing or not TOML, or holds an unknown table/key or a bad value.
    """
    return Config() if path is None else Config.from_toml(path)
