"""braai: the deep real-bogus score (``drb``) of ZTF alerts, in numpy.

braai (Duev et al. 2019, MNRAS 489, 3582; MIT licence, ``ztfsds/data/braai_LICENSE``) is a small VGG-like
CNN that scores a difference-image candidate from its three 63 x 63 cutouts (science, reference, difference)
between 0 (bogus) and 1 (real). Model ``d6_m7`` gave the ``drb`` of every ZTF alert from mid-2019 on
(``drbversion = d6_m7``); its authors quote 1.7 % false negatives and 1.7 % false positives at a threshold of
0.66. This module runs the published weights without TensorFlow and reproduces the ``drb`` stored in real
alerts to about 1e-7.

Preprocessing (`prepare_triplet`), as braai's own code does for models up to d6_m7:

1. NaN -> 0 (``np.nan_to_num``: off-chip or masked pixels);
2. each cutout normalised row by row to unit L2 norm (``keras.utils.normalize(x, axis=-1, order=2)``: every
   row of pixels divided by its own norm, all-zero rows left at 0);
3. cutouts smaller than 63 x 63 (candidates near a CCD edge) padded after the last row and column with
   1e-9 (braai pads after normalising);
4. stacked as (63, 63, 3): science, reference, difference.

Network (Keras ``Sequential`` "VGG6", channels last, all float32): conv 3x3 16 ReLU -> conv 3x3 16 ReLU ->
max-pool 2 -> conv 3x3 32 ReLU -> conv 3x3 32 ReLU -> max-pool 4 -> flatten (6 x 6 x 32) -> dense 256
ReLU -> dense 1 sigmoid; convolutions unpadded ('valid'), stride 1; the three dropout layers are the
identity at inference. Weights: ``ztfsds/data/braai_d6_m7.npz``, made once from the published Keras files by
``tools/convert_braai.py``, loaded on first use.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.special import expit

from ztfsds._resources import package_data, read_npz
from ztfsds.errors import InputError

__all__ = ["DRBVERSION", "STAMP_SIZE", "PAD_VALUE", "braai_score", "prepare_triplet", "score_triplets"]

DRBVERSION = "d6_m7"
"""The braai model this module runs (the ``drbversion`` of ZTF alerts)."""
STAMP_SIZE = 63
"""Cutout side the network takes, pixels."""
PAD_VALUE = np.float32(1e-9)
"""Value braai gives the pixels it adds to cutouts smaller than 63 x 63."""

_WEIGHTS_FILE = f"braai_{DRBVERSION}.npz"
_CONVS = ("conv1", "conv2", "conv3", "conv4")
_LAYERS = (
    "Conv2D:conv1", "Conv2D:conv2", "MaxPooling2D:max_pooling2d", "Dropout:dropout",
    "Conv2D:conv3", "Conv2D:conv4", "MaxPooling2D:max_pooling2d_1", "Dropout:dropout_1",
    "Flatten:flatten", "Dense:fc_1", "Dropout:dropout_2", "Dense:fc_out",
)
_SHAPES = {
    "conv1_kernel": (3, 3, 3, 16), "conv2_kernel": (3, 3, 16, 16), "conv3_kernel": (3, 3, 16, 32),
    "conv4_kernel": (3, 3, 32, 32), "fc_1_kernel": (6 * 6 * 32, 256), "fc_out_kernel": (256, 1),
}
# triplets per pass through the network: bounds the memory of the conv activations (~0.25 MB per triplet)
_CHUNK = 32


def _weights_path():
    return package_data(_WEIGHTS_FILE)


def _load_model(path) -> dict:
    """Read and check the converted weights; `InputError` naming the file if absent or not d6_m7."""
    w = read_npz(path, what="braai weights file",
                 missing=f"the braai {DRBVERSION} weights are missing: the ztfsds installation is incomplete "
                         "(package data ztfsds/data); reinstall ztfsds, or remake the file with "
                         "tools/convert_braai.py from the published Keras model")
    layers = tuple(str(s) for s in w.get("layers", ()))
    version = str(w["drbversion"]) if "drbversion" in w else None
    if version != DRBVERSION or layers != _LAYERS:
        raise InputError(path, f"braai weights are {version!r} with layers {layers}, expected {DRBVERSION} "
                               f"with layers {_LAYERS}")
    for key, shape in _SHAPES.items():
        bias = key.replace("kernel", "bias")
        if key not in w or w[key].shape != shape or bias not in w or w[bias].shape != shape[-1:]:
            raise InputError(path, f"braai weights {key!r}/{bias!r} missing or not of shape {shape}")
    return {k: w[k].astype(np.float32) for k in w if k.endswith(("_kernel", "_bias"))}


@functools.lru_cache(maxsize=1)
def _model() -> dict:
    return _load_model(_weights_path())


# ---- preprocessing ----------------------------------------------------------------------------------


def _as_stamps(name, stamps):
    """-> (list of 2-D float32 arrays or one (n, h, w) float32 array, single); checks sizes."""
    if isinstance(stamps, np.ndarray) or not isinstance(stamps, (list, tuple)):
        arr = np.array(stamps, dtype=np.float32)  # a copy: the NaN replacement below works in place
        if arr.ndim not in (2, 3):
            raise InputError(None, f"{name} cutouts have shape {arr.shape}: expected (ny, nx) or (n, ny, nx)")
        single = arr.ndim == 2
        items = arr[None] if single else arr
        shapes = {items.shape[1:]}
    else:
        single = False
        items = [np.array(s, dtype=np.float32) for s in stamps]
        if any(s.ndim != 2 for s in items):
            raise InputError(None, f"{name} cutouts must each be 2-D (ny, nx)")
        shapes = {s.shape for s in items}
    for ny, nx in shapes:
        if not (1 <= ny <= STAMP_SIZE and 1 <= nx <= STAMP_SIZE):
            raise InputError(None, f"{name} cutouts are {ny} x {nx} pixels: braai takes cutouts of 1 to "
                                   f"{STAMP_SIZE} pixels a side")
    return items, single


def _normalise_pad(stamps: np.ndarray) -> np.ndarray:
    """(n, h, w) float32, modified in place -> (n, 63, 63): NaN -> 0, rows to unit L2 norm, 1e-9 padding."""
    np.nan_to_num(stamps, copy=False)
    # exactly keras.utils.normalize(x, axis=-1, order=2), in float32 as braai ran it on the FITS pixels;
    # overflow only for inf pixels (nan_to_num makes them 3.4e38): their rows come out 0 as in braai
    with np.errstate(over="ignore", invalid="ignore"):
        l2 = np.linalg.norm(stamps, 2, axis=-1)
        l2[l2 == 0] = 1
        stamps /= l2[..., None]
    n, ny, nx = stamps.shape
    if (ny, nx) == (STAMP_SIZE, STAMP_SIZE):
        return stamps
    out = np.full((n, STAMP_SIZE, STAMP_SIZE), PAD_VALUE, dtype=np.float32)
    out[:, :ny, :nx] = stamps
    return out


def _prepare_channel(items, n_expected=None) -> np.ndarray:
    if isinstance(items, np.ndarray):
        return _normalise_pad(items)
    out = np.empty((len(items), STAMP_SIZE, STAMP_SIZE), dtype=np.float32)
    by_shape = {}
    for i, s in enumerate(items):
        by_shape.setdefault(s.shape, []).append(i)
    for idx in by_shape.values():  # one vectorised pass per distinct cutout size (few: edge cutouts)
        out[idx] = _normalise_pad(np.stack([items[i] for i in idx]))
    return out


def prepare_triplet(sci, ref, diff) -> np.ndarray:
    """Stack science, reference and difference cutouts into braai's normalised network input.

    Parameters
    ----------
    sci, ref, diff : array-like
        The three cutouts (any linear unit, e.g. DN: the normalisation removes it): each one 2-D stamp
        (ny, nx), an (n, ny, nx) stack, or a sequence of n 2-D stamps of possibly different sizes. Stamps
        are at most 63 x 63 pixels (ZTF alert cutouts; smaller near a CCD edge). Converted to float32 (the
        cutouts' FITS type) before anything else.

    Returns
    -------
    triplet : `~numpy.ndarray`
        float32, (63, 63, 3) for single stamps or (n, 63, 63, 3); channels science, reference, difference;
        NaN pixels set to 0, every pixel row divided by its L2 norm, padding (after the last row and column)
        1e-9. See the module docstring.

    Raises
    ------
    ztfsds.errors.InputError
        A stamp is larger than 63 x 63 or not 2-D, or the three inputs hold different numbers of stamps.
    """
    chans = []
    for name, stamps in (("science", sci), ("reference", ref), ("difference", diff)):
        chans.append(_as_stamps(name, stamps))
    counts = {len(items) for items, _ in chans}
    if len(counts) != 1 or len({single for _, single in chans}) != 1:
        raise InputError(None, "science, reference and difference must hold the same number of cutouts, "
                               f"got {[len(items) for items, _ in chans]}")
    triplets = np.stack([_prepare_channel(items) for items, _ in chans], axis=-1)
    return triplets[0] if chans[0][1] else triplets


# ---- network ----------------------------------------------------------------------------------------


def _conv3x3_relu(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'valid' 3x3 convolution (Keras: cross-correlation), stride 1, + bias, ReLU; (n, h, w, c) float32.

    Nine shifted (n * h' * w', c) x (c, f) products summed: no im2col copy, and faster here than one large
    im2col product for the few channels of braai (3 to 32).
    """
    n, ny, nx, _ = x.shape
    my, mx = ny - 2, nx - 2
    y = x[:, :my, :mx, :] @ kernel[0, 0]
    for i in range(3):
        for j in range(3):
            if i or j:
                y += x[:, i:i + my, j:j + mx, :] @ kernel[i, j]
    y += bias
    return np.maximum(y, 0, out=y)


def _max_pool(x: np.ndarray, p: int) -> np.ndarray:
    """p x p max-pooling, stride p, 'valid' (trailing rows/columns that do not fill a window dropped)."""
    n, ny, nx, c = x.shape
    my, mx = ny // p * p, nx // p * p
    out = x[:, 0:my:p, 0:mx:p, :].copy()
    for i in range(p):
        for j in range(p):
            if i or j:
                np.maximum(out, x[:, i:my:p, j:mx:p, :], out=out)
    return out


def _logits(x: np.ndarray, w: dict) -> np.ndarray:
    h = _conv3x3_relu(x, w["conv1_kernel"], w["conv1_bias"])
    h = _conv3x3_relu(h, w["conv2_kernel"], w["conv2_bias"])
    h = _max_pool(h, 2)  # dropout: identity at inference
    h = _conv3x3_relu(h, w["conv3_kernel"], w["conv3_bias"])
    h = _conv3x3_relu(h, w["conv4_kernel"], w["conv4_bias"])
    h = _max_pool(h, 4).reshape(len(h), -1)  # Keras Flatten of channels-last: (row, column, channel) order
    h = h @ w["fc_1_kernel"]
    h += w["fc_1_bias"]
    np.maximum(h, 0, out=h)
    return (h @ w["fc_out_kernel"] + w["fc_out_bias"])[:, 0]


def score_triplets(triplets) -> np.ndarray:
    """Run the braai network on prepared triplets.

    Parameters
    ----------
    triplets : array-like
        (n, 63, 63, 3) or (63, 63, 3), as made by `prepare_triplet`.

    Returns
    -------
    drb : `~numpy.ndarray`
        float32 real-bogus scores in [0, 1] (1 = real), shape (n,), or shape () for one triplet.
    """
    x = np.asarray(triplets, dtype=np.float32)
    single = x.ndim == 3
    x = x[None] if single else x
    if x.ndim != 4 or x.shape[1:] != (STAMP_SIZE, STAMP_SIZE, 3):
        raise InputError(None, f"braai triplets have shape {np.shape(triplets)}: expected (n, 63, 63, 3)")
    w = _model()
    z = np.concatenate([_logits(x[s:s + _CHUNK], w) for s in range(0, len(x), _CHUNK)] or
                       [np.empty(0, np.float32)])
    drb = expit(z).astype(np.float32)
    return drb[0] if single else drb


def braai_score(sci, ref, diff) -> np.ndarray:
    """The braai d6_m7 real-bogus score (the ZTF alert ``drb``) of difference-image candidates.

    Parameters
    ----------
    sci, ref, diff : array-like
        Science, reference and difference cutouts centred on the candidates (any linear unit, e.g. DN),
        as ZTF alerts carry them (``cutoutScience``, ``cutoutTemplate``, ``cutoutDifference``): one 2-D
        stamp each, (n, ny, nx) stacks, or sequences of 2-D stamps; at most 63 x 63 pixels, NaN allowed.
        See `prepare_triplet`.

    Returns
    -------
    drb : `~numpy.ndarray`
        float32 scores in [0, 1] (dimensionless; 1 = real, 0 = bogus), shape (n,), or shape () for single
        stamps. The ZTF alerts' ``drb`` is reproduced to ~1e-7.

    Raises
    ------
    ztfsds.errors.InputError
        Bad cutout shapes (see `prepare_triplet`), or the packaged weights file is missing or damaged.

    Examples
    --------
    >>> import numpy as np
    >>> from ztfsds.subtract.braai import braai_score
    >>> rng = np.random.default_rng(0)
    >>> stamps = rng.normal(100.0, 5.0, size=(3, 4, 63, 63)).astype(np.float32)
    >>> braai_score(*stamps).shape
    (4,)
    """
    return score_triplets(prepare_triplet(sci, ref, diff))
