"""rb: the feature-based real-bogus score of difference-image candidates.

ZTF's ``rb`` (ZTF_REFERENCE 2.8) is a machine-learned classifier of the candidate features IPAC measures
on the difference image; ``drb`` (`ztfsds.subtract.braai`) is the CNN on the cutouts. This module is our
``rb``: a small multi-layer perceptron (one hidden layer, tanh, sigmoid output) in numpy over
`FEATURE_NAMES`, trained by ``tools/train_rb.py`` on the pipeline's own candidates of simulated nights
(injected point sources as real, every candidate not near an injection, transient, variable star or
asteroid as bogus: bad subtractions of bright stars, cosmic rays, ghosts, trails, edges, noise). Score 0
(bogus) to 1 (real); the recommended threshold is 0.5.

Features (`rb_features`), each made dimensionless and clipped to a sane range:

* from the candidate table (`ztfsds.subtract.candidates`): ``scorr``, the PSF-fit S/N ``|flux| /
  sigflux``, ``chipsf``, ``magdiff``, ``magap - magapbig``, ``elong``, ``fwhm``, ``bimage``, ``nbad``,
  ``nneg``, ``sumrat``, ``mindtoedge``, ``distnr`` and the brightness of the nearest reference source
  relative to the candidate (``magpsf - magnr``, within 5 px);
* from the cutouts (science, reference, difference; the difference taken with the candidate's sign ``s``
  of ``isdiffpos``), over their central 31 x 31 pixels: the peak of ``s D`` over the local noise (robust
  sigma of the 8-15 px annulus), the best correlation of the 11 x 11 core with a circular Gaussian and its
  width, the peak pixel over its 8 neighbours (cosmic rays are sharper than the PSF), the fraction of
  negative pixels of ``s D`` in the 7 x 7 core, the deepest negative of ``s D`` within 7 px over the
  peak (dipoles, rings), the point asymmetry of the 7 x 7 core, the reference's and science image's 5 x 5
  core flux over the difference's (bright static stars), and the fraction of NaN pixels.

Without cutouts (``cutouts=None``) a second model trained on the table features alone scores the
candidates (less accurate; see ``RB_VERSION`` and the model file).

The model file ``ztfsds/data/rb_model.npz`` holds the feature names, the standardisation (mean, scale)
and the weights of both models; it is read once, on first use.
"""

from __future__ import annotations

import functools

import numpy as np
from astropy.table import Table

from ztfsds._resources import package_data, read_npz
from ztfsds.errors import InputError

__all__ = ["RB_VERSION", "FEATURE_NAMES", "TABLE_FEATURES", "CUTOUT_FEATURES", "rb_features", "rb_score"]

RB_VERSION = "zsds_rb_v1"
"""The model this module expects in ``ztfsds/data/rb_model.npz`` (the ``rbversion`` of our candidates)."""

TABLE_FEATURES = (
    "log_scorr", "log_snrpsf", "log_chipsf", "magdiff", "magap_big", "elong", "fwhm", "bimage", "nbad",
    "nneg", "sumrat", "log_mindtoedge", "log_distnr", "dmag_nr",
)
"""Features computed from the candidate table."""
CUTOUT_FEATURES = (
    "peak_sigma", "gauss_corr", "gauss_width", "spike", "negfrac7", "neglobe", "asym7", "log_ref_diff",
    "log_sci_diff", "nanfrac",
)
"""Features computed from the (sci, ref, diff) cutouts."""
FEATURE_NAMES = TABLE_FEATURES + CUTOUT_FEATURES
"""All features, in the order of `rb_features`' columns."""

_MODEL_FILE = "rb_model.npz"
_CORE = 15  # half side of the cutout region the features look at [px]
_WIDTHS = (0.8, 1.1, 1.5, 2.0, 2.7)  # Gaussian sigmas tried for gauss_corr [px]
_REQUIRED = ("scorr", "flux", "sigflux", "chipsf", "magdiff", "magap", "magapbig", "magpsf", "elong", "fwhm",
             "bimage", "nbad", "nneg", "sumrat", "mindtoedge", "distnr", "magnr", "isdiffpos")


def _col(t: Table, name: str) -> np.ndarray:
    return np.asarray(t[name], dtype=np.float64).ravel()


def candidate_sign(candidates: Table) -> np.ndarray:
    """+1 for positive (``isdiffpos`` 't', '1', b't' ...), -1 for negative candidates."""
    v = np.asarray(candidates["isdiffpos"]).ravel()
    if v.dtype.kind in "biuf":
        return np.where(v.astype(float) > 0, 1.0, -1.0)
    s = np.char.lower(np.char.strip(v.astype(str)))
    return np.where(np.isin(s, ("t", "1", "true")), 1.0, -1.0)


def _table_features(t: Table) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.abs(_col(t, "flux")) / _col(t, "sigflux")
        dist = _col(t, "distnr")
        dmag = _col(t, "magpsf") - _col(t, "magnr")
        near = np.isfinite(dist) & (dist < 5.0) & np.isfinite(dmag)
        cols = [
            np.log10(np.clip(_col(t, "scorr"), 1.0, 1e4)),
            np.log10(np.clip(np.nan_to_num(snr, nan=0.1), 0.1, 1e4)),
            np.log10(np.clip(np.nan_to_num(_col(t, "chipsf"), nan=100.0), 0.01, 1e4)),
            np.clip(np.nan_to_num(_col(t, "magdiff"), nan=1.5), -1.5, 1.5),
            np.clip(np.nan_to_num(_col(t, "magap") - _col(t, "magapbig"), nan=-1.5), -1.5, 1.5),
            np.clip(np.nan_to_num(_col(t, "elong"), nan=5.0), 1.0, 5.0),
            np.clip(np.nan_to_num(_col(t, "fwhm"), nan=0.0), 0.0, 10.0),
            np.clip(np.nan_to_num(_col(t, "bimage"), nan=0.0), 0.0, 4.0),
            np.clip(np.nan_to_num(_col(t, "nbad")), 0.0, 25.0),
            np.clip(np.nan_to_num(_col(t, "nneg")), 0.0, 25.0),
            np.clip(np.nan_to_num(_col(t, "sumrat"), nan=0.0), -1.0, 1.0),
            np.log10(1.0 + np.clip(np.nan_to_num(_col(t, "mindtoedge")), 0.0, 100.0)),
            np.log10(0.3 + np.clip(np.nan_to_num(dist, nan=30.0), 0.0, 30.0)),
            np.where(near, np.clip(dmag, -3.0, 8.0), -3.0),
        ]
    return np.column_stack(cols)


def _gaussians(size: int) -> np.ndarray:
    r2 = np.sum(np.mgrid[-size:size + 1, -size:size + 1] ** 2, axis=0)
    g = np.stack([np.exp(-0.5 * r2 / s**2) for s in _WIDTHS])
    g = g - g.mean(axis=(1, 2), keepdims=True)
    return g / np.linalg.norm(g.reshape(len(_WIDTHS), -1), axis=1)[:, None, None]


def _cutout_features(cutouts: np.ndarray, sign: np.ndarray) -> np.ndarray:
    n, _, ny, nx = cutouts.shape
    c = ny // 2
    h = _CORE
    cut = np.asarray(cutouts[:, :, c - h:c + h + 1, c - h:c + h + 1], dtype=np.float64)
    nanfrac = np.mean(~np.isfinite(cut), axis=(1, 2, 3))
    d = sign[:, None, None] * cut[:, 2]
    # a negative candidate is a positive one with the two images' roles exchanged (the source, if
    # any, is in the reference): measured so, it meets the classifier where it was trained
    neg = sign < 0
    sci = np.where(neg[:, None, None], cut[:, 1], cut[:, 0])
    ref = np.where(neg[:, None, None], cut[:, 0], cut[:, 1])
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
    rr = np.hypot(yy, xx)
    ann = (rr >= 8) & (rr <= h)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet_nan():
        a = d[:, ann]
        med = np.nanmedian(a, axis=1)
        sig = 1.4826 * np.nanmedian(np.abs(a - med[:, None]), axis=1)
        sig = np.where(np.isfinite(sig) & (sig > 0), sig, np.nan)
        dz = np.nan_to_num(d - np.nan_to_num(med)[:, None, None], nan=0.0)
        k = h  # centre index of the 31 x 31 region
        core3 = dz[:, k - 1:k + 2, k - 1:k + 2]
        peak = core3.reshape(n, -1).max(axis=1)
        peak_sigma = np.clip(np.nan_to_num(peak / sig, nan=0.0), -10.0, 1e3)
        # Gaussian matched filter on the 11 x 11 core (Pearson correlation for each width)
        r = 5
        core = dz[:, k - r:k + r + 1, k - r:k + r + 1]
        core = core - core.mean(axis=(1, 2), keepdims=True)
        norm = np.linalg.norm(core.reshape(n, -1), axis=1)
        corr = np.einsum("nij,wij->nw", core, _gaussians(r)) / np.where(norm > 0, norm, 1.0)[:, None]
        best = np.argmax(corr, axis=1)
        gauss_corr = corr[np.arange(n), best]
        gauss_width = np.asarray(_WIDTHS)[best]
        # sharpness: the brightest core pixel over the mean of its 8 neighbours
        flat = core3.reshape(n, -1)
        j = np.argmax(flat, axis=1)
        py, px = k - 1 + j // 3, k - 1 + j % 3
        nb = np.stack([dz[np.arange(n), py + dy, px + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                       if dy or dx], axis=1).mean(axis=1)
        top = flat[np.arange(n), j]
        spike = np.clip(np.where(top > 0, nb / np.where(top > 0, top, 1.0), -1.0), -1.0, 1.0)
        c7 = dz[:, k - 3:k + 4, k - 3:k + 4]
        negfrac7 = np.mean(c7 < 0, axis=(1, 2))
        inner = rr <= 7
        neglobe = np.clip(dz[:, inner].min(axis=1) / np.where(peak > 0, peak, np.inf), -2.0, 0.0)
        asym7 = np.abs(c7 - c7[:, ::-1, ::-1]).sum(axis=(1, 2)) / np.maximum(np.abs(c7).sum(axis=(1, 2)), 1e-12)

        def core_flux(img):
            bg = np.nanmedian(img[:, ann], axis=1)
            box = img[:, k - 2:k + 3, k - 2:k + 3] - bg[:, None, None]
            return np.nansum(box, axis=(1, 2))

        dflux = np.maximum(np.abs(core_flux(d)), np.nan_to_num(sig, nan=1.0))
        log_ref = np.log10(np.clip(np.nan_to_num(np.abs(core_flux(ref)) / dflux, nan=1e-2), 1e-2, 1e4))
        log_sci = np.log10(np.clip(np.nan_to_num(np.abs(core_flux(sci)) / dflux, nan=1e-2), 1e-2, 1e4))
    return np.column_stack([np.log10(np.clip(peak_sigma, 0.1, 1e3)), gauss_corr, gauss_width, spike, negfrac7,
                            neglobe, np.clip(asym7, 0.0, 2.0), log_ref, log_sci, nanfrac])


class _quiet_nan:
    """Silence numpy's all-NaN slice warnings (cutouts entirely off the image)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.filterwarnings("ignore", message="All-NaN slice", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _check_table(candidates) -> Table:
    if not isinstance(candidates, Table):
        candidates = Table(candidates)
    missing = [c for c in _REQUIRED if c not in candidates.colnames]
    if missing:
        raise InputError(None, f"candidate table lacks columns {missing} that rb needs "
                               "(see ztfsds.subtract.candidates.find_candidates)")
    return candidates


def _check_cutouts(cutouts, n: int) -> np.ndarray:
    arr = np.asarray(cutouts, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[0] != n or arr.shape[1] != 3 or arr.shape[2] != arr.shape[3] \
            or arr.shape[2] % 2 == 0 or arr.shape[2] < 2 * _CORE + 1:
        raise InputError(None, f"cutouts have shape {arr.shape}: expected ({n}, 3, size, size) with an odd "
                               f"size >= {2 * _CORE + 1} (science, reference, difference)")
    return arr


def rb_features(candidates: Table, cutouts: np.ndarray | None = None) -> np.ndarray:
    """The features of `FEATURE_NAMES` (or `TABLE_FEATURES` without cutouts), one row per candidate.

    Parameters
    ----------
    candidates : `~astropy.table.Table`
        Candidate table (`ztfsds.subtract.candidates.find_candidates`, or the ``CANDIDATES`` HDU of a
        ``candidates`` product).
    cutouts : numpy.ndarray, optional
        ``(n, 3, size, size)`` science, reference and difference cutouts [DN] centred on the candidates
        (odd ``size`` >= 31; the ``CUTOUTS`` HDU), NaN off the image.

    Returns
    -------
    numpy.ndarray
        ``(n, nfeatures)`` float64, dimensionless.
    """
    t = _check_table(candidates)
    feats = _table_features(t)
    if cutouts is None:
        return feats
    arr = _check_cutouts(cutouts, len(t))
    if not len(t):
        return np.zeros((0, len(FEATURE_NAMES)))
    return np.column_stack([feats, _cutout_features(arr, candidate_sign(t))])


def _model_path():
    return package_data(_MODEL_FILE)


def load_model(path) -> dict:
    """Read and check an rb model file: dict with ``full`` and ``table`` sub-models."""
    w = read_npz(path, what="rb model file",
                 missing=f"the rb model {RB_VERSION} is missing: the ztfsds installation is incomplete "
                         "(package data ztfsds/data); reinstall ztfsds, or retrain it with tools/train_rb.py")
    version = str(w["rbversion"]) if "rbversion" in w else None
    if version != RB_VERSION:
        raise InputError(path, f"rb model is {version!r}, this ztfsds expects {RB_VERSION!r}")
    out = {}
    for prefix, names in (("full", FEATURE_NAMES), ("table", TABLE_FEATURES)):
        got = tuple(str(s) for s in w.get(f"{prefix}_features", ()))
        if got != names:
            raise InputError(path, f"rb model {prefix!r} features {got} differ from this module's {names}")
        m = {k: np.asarray(w[f"{prefix}_{k}"], dtype=np.float64) for k in ("mean", "scale", "w1", "b1", "w2", "b2")}
        nf, nh = len(names), m["w1"].shape[1]
        if m["mean"].shape != (nf,) or m["scale"].shape != (nf,) or m["w1"].shape != (nf, nh) \
                or m["b1"].shape != (nh,) or m["w2"].shape != (nh,) or m["b2"].shape != ():
            raise InputError(path, f"rb model {prefix!r} arrays have inconsistent shapes")
        out[prefix] = m
    return out


@functools.lru_cache(maxsize=1)
def _model() -> dict:
    return load_model(_model_path())


def mlp_forward(m: dict, x: np.ndarray) -> np.ndarray:
    """Score standardised by ``m`` (mean, scale, w1, b1, w2, b2): ``sigmoid(tanh(z W1 + b1) . w2 + b2)``."""
    from scipy.special import expit

    z = (x - m["mean"]) / m["scale"]
    return expit(np.tanh(z @ m["w1"] + m["b1"]) @ m["w2"] + m["b2"])


def rb_score(candidates: Table, cutouts: np.ndarray | None = None) -> np.ndarray:
    """The real-bogus score ``rb`` of difference-image candidates.

    Parameters
    ----------
    candidates : `~astropy.table.Table`
        Candidate table with the columns of `ztfsds.subtract.candidates.find_candidates` (``scorr``,
        ``flux``, ``sigflux``, ``magpsf``, ``magap``, ``magapbig``, ``elong``, ``fwhm``, ``nbad``, ...,
        ``isdiffpos``).
    cutouts : numpy.ndarray, optional
        ``(n, 3, size, size)`` science / reference / difference cutouts [DN] (the ``CUTOUTS`` HDU); odd
        ``size`` >= 31. Without them the table-only model scores (less accurate).

    Returns
    -------
    numpy.ndarray
        float32 scores in [0, 1], shape ``(n,)`` (1 = real, 0 = bogus; threshold 0.5).

    Raises
    ------
    ztfsds.errors.InputError
        Missing columns, bad cutout shape, or the packaged model file missing or of another version.
    """
    t = _check_table(candidates)
    model = _model()["full" if cutouts is not None else "table"]
    x = rb_features(t, cutouts)
    if not len(t):
        return np.zeros(0, np.float32)
    return np.clip(mlp_forward(model, x), 0.0, 1.0).astype(np.float32)
