"""The rb real-bogus model (`ztfsds.subtract.realbogus`): loading, range, held-out rates, hand-made cases.

``tests/data/rb_heldout.npz`` is written by ``tools/train_rb.py train``: the features and labels of every
labelled candidate of the two simulated fields the model was not trained on (other skies, CCDs, star densities
and PSFs), and a few of their candidates as table columns + the central 31 x 31 of their cutouts (to check
that `rb_features` still computes what the model was trained on).
"""

from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from ztfsds.errors import InputError
from ztfsds.subtract import realbogus as rb
from ztfsds.subtract.realbogus import FEATURE_NAMES, RB_VERSION, TABLE_FEATURES, rb_features, rb_score

HELDOUT = Path(__file__).resolve().parents[1] / "data" / "rb_heldout.npz"
COLS = ("scorr", "flux", "sigflux", "magpsf", "sigmapsf", "chipsf", "magap", "magapbig", "magdiff", "aimage",
        "bimage", "elong", "fwhm", "nbad", "nneg", "sumrat", "mindtoedge", "distnr", "magnr", "sigmagnr", "chinr",
        "sharpnr", "xpos", "ypos")


@pytest.fixture(scope="module")
def heldout():
    with np.load(HELDOUT) as npz:
        return {k: npz[k] for k in npz.files}


def _raw(heldout):
    t = Table({c: heldout[f"raw_{c}"] for c in COLS})
    t["isdiffpos"] = np.where(heldout["raw_isdiffpos"], "t", "f")
    return t, heldout["raw_cutouts"].astype(np.float32)


def test_model_loads():
    m = rb._model()
    assert set(m) == {"full", "table"}
    assert m["full"]["w1"].shape[0] == len(FEATURE_NAMES) == 24
    assert m["table"]["w1"].shape[0] == len(TABLE_FEATURES)
    assert RB_VERSION.startswith("zsds_rb")
    assert rb._model() is m  # read once


def test_missing_or_wrong_model_is_clear(tmp_path):
    with pytest.raises(InputError, match="missing"):
        rb.load_model(tmp_path / "rb_model.npz")
    np.savez(tmp_path / "old.npz", rbversion=np.array("t8_f5_c3"))
    with pytest.raises(InputError, match="t8_f5_c3"):
        rb.load_model(tmp_path / "old.npz")


def test_heldout_rates(heldout):
    """Acceptance: FPR and FNR each <= 3 % at 0.5 on the held-out fields (the full model)."""
    x, y = heldout["features"].astype(np.float64), heldout["label"]
    s = rb.mlp_forward(rb._model()["full"], x)
    fpr, fnr = np.mean(s[y == 0] >= 0.5), np.mean(s[y == 1] < 0.5)
    print(f"\nheld-out: {np.sum(y == 1)} real, {np.sum(y == 0)} bogus: FPR {fpr:.4f}, FNR {fnr:.4f}")
    assert np.sum(y == 1) >= 150 and np.sum(y == 0) >= 150
    assert fpr <= 0.03 and fnr <= 0.03
    # the table-only model is weaker but far better than chance
    st = rb.mlp_forward(rb._model()["table"], x[:, :len(TABLE_FEATURES)])
    assert np.mean(st[y == 0] >= 0.5) <= 0.10 and np.mean(st[y == 1] < 0.5) <= 0.10


def test_features_reproduced_and_scores_in_range(heldout):
    t, cut = _raw(heldout)
    feats = rb_features(t, cut)
    # float16 cutouts: a few 1e-3 of relative error in the cutout features at most
    np.testing.assert_allclose(feats, heldout["raw_features"], rtol=0.02, atol=0.02)
    s = rb_score(t, cut)
    assert s.dtype == np.float32 and s.shape == (len(t),)
    assert np.all((s >= 0) & (s <= 1))
    y = heldout["raw_label"]
    assert np.mean((s >= 0.5) == (y == 1)) >= 0.9
    st = rb_score(t)  # table-only model
    assert st.dtype == np.float32 and np.all((st >= 0) & (st <= 1))
    assert rb_score(t[:0], cut[:0]).shape == (0,)


def _case(diff, *, snr=None, ref_peak=0.0):
    """A one-row table + 63 x 63 cutouts for a hand-made difference stamp (noise sigma 1)."""
    rng = np.random.default_rng(1)
    n = 63
    sci_bkg = rng.normal(0.0, 1.0, (n, n))
    yy, xx = np.mgrid[:n, :n] - n // 2
    ref = rng.normal(0.0, 0.7, (n, n)) + ref_peak * np.exp(-0.5 * (xx**2 + yy**2) / 1.3**2)
    d = diff + rng.normal(0.0, 1.0, (n, n))
    cut = np.stack([sci_bkg + ref + diff, ref, d])[None].astype(np.float32)
    core = d[28:35, 28:35]
    w = np.clip(core, 0, None)
    gy, gx = np.mgrid[-3:4, -3:4]
    cx, cy = (w * gx).sum() / w.sum(), (w * gy).sum() / w.sum()
    x2, y2 = (w * (gx - cx) ** 2).sum() / w.sum(), (w * (gy - cy) ** 2).sum() / w.sum()
    a = b = np.sqrt(0.5 * (x2 + y2))
    flux = float(diff.sum())
    c5 = d[29:34, 29:34]
    t = Table({
        "scorr": [snr], "flux": [flux], "sigflux": [flux / snr], "magpsf": [25.0 - 2.5 * np.log10(flux)],
        "sigmapsf": [1.0857 / snr], "chipsf": [1.0], "magap": [25.0 - 2.5 * np.log10(flux)],
        "magapbig": [25.0 - 2.5 * np.log10(flux)], "magdiff": [0.0], "aimage": [a], "bimage": [b],
        "elong": [1.0], "fwhm": [2.3548 * a], "nbad": [0], "nneg": [int((c5 < 0).sum())],
        "sumrat": [c5.sum() / np.abs(c5).sum()], "mindtoedge": [200.0], "distnr": [np.nan], "magnr": [np.nan],
        "isdiffpos": ["t"]})
    return t, cut


def test_clean_psf_scores_high():
    n = 63
    yy, xx = np.mgrid[:n, :n] - n // 2
    g = np.exp(-0.5 * (xx**2 + yy**2) / 1.2**2)
    diff = 30.0 * g / g.max()  # peak S/N 30 on unit noise, sigma 1.2 px (FWHM 2.8 px)
    t, cut = _case(diff, snr=20.0)
    assert rb_score(t, cut)[0] > 0.8


def test_single_pixel_spike_scores_low():
    diff = np.zeros((63, 63))
    diff[31, 31] = 40.0  # a cosmic-ray-like hit
    t, cut = _case(diff, snr=8.0)
    t["fwhm"] = [0.8]
    t["aimage"] = t["bimage"] = [0.35]
    assert rb_score(t, cut)[0] < 0.2


def test_bad_inputs():
    t = Table({"scorr": [5.0]})
    with pytest.raises(InputError, match="lacks columns"):
        rb_score(t)
    n = 63
    yy, xx = np.mgrid[:n, :n] - n // 2
    tt, cut = _case(10 * np.exp(-0.5 * (xx**2 + yy**2) / 1.2**2), snr=10.0)
    with pytest.raises(InputError, match="cutouts have shape"):
        rb_score(tt, cut[:, :2])
