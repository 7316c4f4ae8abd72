"""Make the training set of the rb real-bogus classifier and train it (`ztfsds.subtract.realbogus`).

Two steps, each re-runnable and seeded::

    python tools/train_rb.py generate --out /tmp/rbtrain   # simulate, subtract, label: 12 fields, ~12 min
                                                           # on 2 idle cores (~100 s of CPU per field)
    python tools/train_rb.py train --data /tmp/rbtrain     # fit (seconds); writes ztfsds/data/rb_model.npz
                                                           # and tests/data/rb_heldout.npz

``generate`` simulates the skies of `FIELDS` (seed, CCD, quadrant and star density vary; 512 x 512
quadrants; 10 history nights + ``--epochs`` exposures on the night), runs calib -> astrom -> photom on
every epoch, builds one reference per field from the history nights, and for each exposure of the night
injects ``--nfake`` point sources (`ztfsds.subtract.fakes.inject_point_sources`, the image's own PSF,
photon noise; S/N on the difference image log-uniform in 3-100, a quarter of them on or within 3 px of
reference-catalog sources, as transients in hosts are) and 30 cosmic-ray-like hits (1-6 unmasked pixels,
8-150 sigma: what a missed cosmic-ray mask leaves), then `ztfsds.subtract.run_subtract`. Labels:

* 1 (real): positive candidate within 1.5 px of an injected point source;
* 0 (bogus): farther than 6 px from every injected point source and every supernova, nuclear transient
  and variable star of the truth table, and 20 px from every asteroid: the injected hits, and the
  pipeline's own artefacts (bright-star residuals, ghosts, trails, edges, noise, failed subtractions);
* 2 (truth transient / variable within 1.5 px) and -1 (in between): kept in the files, not trained on.

Each field writes ``field_<k>.npz``: features (`ztfsds.subtract.realbogus.rb_features`), labels, the
candidate columns, the central 31 x 31 of the cutouts (float16) and the braai ``drb`` of every candidate.

``train`` keeps at most ``--max-bogus`` natural bogus per epoch (a failed subtraction leaves a thousand
residuals and would otherwise be the bogus class), holds out the last ``--holdout`` fields entirely (skies,
CCDs and PSFs the model never saw) for the acceptance numbers, fits a one-hidden-layer MLP (tanh, sigmoid
output, class-balanced cross-entropy + L2, full-batch Adam, seeded; the iterate with the best loss on a
seeded 20 % validation split of the training fields) for the full feature set and for the table features
alone, and prints false-positive / false-negative rates at 0.5 (ours and braai's).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NIGHT = "20200924"
SIZE = 512
FIELD = 655
# per simulated field: (seed, ccd, qid, density_scale)
FIELDS = [(101, 13, 3, 1.0), (202, 5, 1, 1.6), (303, 9, 2, 0.7), (404, 2, 4, 1.3), (505, 16, 3, 1.0),
          (606, 7, 2, 2.0), (707, 11, 1, 1.0), (808, 4, 4, 1.2), (909, 14, 2, 0.8), (1010, 3, 1, 1.5),
          (1111, 10, 3, 1.0), (1212, 6, 4, 1.1)]
# a 512 x 512 difference image with more candidates than this is a failed subtraction (ZTF would not
# issue its alerts); reported separately
FAILED_EPOCH = 500
CAND_COLS = ("scorr", "flux", "sigflux", "magpsf", "sigmapsf", "chipsf", "magap", "magapbig", "magdiff", "aimage",
             "bimage", "elong", "fwhm", "nbad", "nneg", "sumrat", "mindtoedge", "distnr", "magnr", "sigmagnr",
             "chinr", "sharpnr", "xpos", "ypos")


# ---- generation ---------------------------------------------------------------------------------------


def _inject(store, key, rng, nfake, refcat_xy, ncr=30):
    """Inject point sources and ``ncr`` cosmic-ray-like hits into the sciimg of ``key`` (rewritten); returns
    x, y, flux, snr_target of the point sources and the hits' (n, 2) positions."""
    from astropy.io import fits

    from ztfsds.photom.forced import psf_from_hdulist
    from ztfsds.products import read_image
    from ztfsds.subtract.fakes import inject_point_sources

    sci, hdr = read_image(store.path(key))
    with fits.open(store.path(key.with_suffix("sciimgpsf"))) as hdul:
        psf = psf_from_hdulist(hdul)
    # flux of a 5-sigma point source on the science image; D is ~5 % noisier (the reference's noise)
    f5 = 10 ** (-0.4 * (float(hdr["MAGLIM"]) - float(hdr["MAGZP"]))) * 1.05
    xs, ys = [], []
    tries = 0
    while len(xs) < nfake and tries < 50 * nfake:
        tries += 1
        if rng.random() < 0.25 and len(refcat_xy):
            j = rng.integers(len(refcat_xy))
            r, t = rng.uniform(0.0, 3.0), rng.uniform(0, 2 * np.pi)
            x, y = refcat_xy[j, 0] + r * np.cos(t), refcat_xy[j, 1] + r * np.sin(t)
        else:
            x, y = rng.uniform(4, SIZE - 5), rng.uniform(4, SIZE - 5)
        if not (4 <= x <= SIZE - 5 and 4 <= y <= SIZE - 5):
            continue
        if xs and np.min(np.hypot(np.array(xs) - x, np.array(ys) - y)) < 12:
            continue
        xs.append(x)
        ys.append(y)
    x, y = np.array(xs), np.array(ys)
    snr = 10 ** rng.uniform(math.log10(3.0), 2.0, len(x))
    flux = snr / 5.0 * f5
    new = inject_point_sources(sci, psf, x, y, flux, gain=float(hdr["GAIN"]), rng=rng)
    crx, cry = _add_hits(new, rng, ncr, np.column_stack([x, y]))
    store.write_fits(key, fits.PrimaryHDU(new, hdr))
    return x, y, flux, snr, np.column_stack([crx, cry])


def _add_hits(img, rng, n, avoid):
    """Add ``n`` unmasked cosmic-ray-like hits in place (single pixels, pairs, 3-6 px tracks; peak 8-150
    sigma of the sky): the artefacts a missed cosmic-ray mask leaves. Returns their x, y."""
    ny, nx = img.shape
    sub = img[::4, ::4]
    sigma = 1.4826 * float(np.median(np.abs(sub - np.median(sub))))
    xs, ys = [], []
    tries = 0
    while len(xs) < n and tries < 50 * n:
        tries += 1
        x, y = int(rng.integers(6, nx - 6)), int(rng.integers(6, ny - 6))
        pts = np.array(avoid.tolist() + [[a, b] for a, b in zip(xs, ys)]).reshape(-1, 2)
        if len(pts) and np.min(np.hypot(pts[:, 0] - x, pts[:, 1] - y)) < 12:
            continue
        kind = rng.random()
        length = 1 if kind < 0.4 else (2 if kind < 0.7 else int(rng.integers(3, 7)))
        angle = rng.uniform(0, np.pi)
        peak = sigma * 10 ** rng.uniform(math.log10(8.0), math.log10(150.0))
        for t in range(length):
            px = int(round(x + (t - (length - 1) / 2) * math.cos(angle)))
            py = int(round(y + (t - (length - 1) / 2) * math.sin(angle)))
            img[py, px] += np.float32(peak * rng.uniform(0.5, 1.0))
        xs.append(x)
        ys.append(y)
    return np.array(xs, float), np.array(ys, float)


def _truth_xy(store, raw_key, qid, wcs):
    """Pixel positions on the sciimg of the truth's transients/variables and asteroids."""
    from astropy.table import Table

    from ztfsds.sim import truth_path

    t = Table.read(truth_path(store, raw_key), hdu=f"Q{qid}")
    kind = np.asarray(t["kind"]).astype(str)
    x, y = wcs.all_world2pix(np.asarray(t["ra"], float), np.asarray(t["dec"], float), 0)
    var = np.isin(kind, ("supernova", "nuclear", "variable"))
    ast = kind == "asteroid"
    return np.column_stack([x[var], y[var]]), np.column_stack([x[ast], y[ast]])


def _nearest(px, py, pts):
    if not len(pts) or not len(px):
        return np.full(len(px), np.inf)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pts).query(np.column_stack([px, py]))
    return d


def generate_field(k: int, out: Path, epochs: int, nfake: int) -> Path:
    """Simulate, process, inject, subtract and label one field; writes ``out/field_<k>.npz``."""
    import tempfile

    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs import WCS

    from ztfsds.astrom import run_astrom
    from ztfsds.calib import build_library, run_calib
    from ztfsds.catalogs import build_catalogs
    from ztfsds.config import Config, RefimgParams
    from ztfsds.photom import run_photom
    from ztfsds.products import ProductKey, ProductStore, read_header
    from ztfsds.refimg import build_reference
    from ztfsds.sim import simulate_night
    from ztfsds.subtract import run_subtract
    from ztfsds.subtract.braai import braai_score
    from ztfsds.subtract.realbogus import rb_features

    seed, ccd, qid, density = FIELDS[k]
    t0 = time.perf_counter()
    config = Config(refimg=RefimgParams(min_epochs=4))
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix=f"rb{k}_") as tmp:
        result = simulate_night(tmp, fields=[FIELD], ccds=[ccd], nexp=epochs, filters=["zr"], size=SIZE, seed=seed,
                                history_nights=10, nbias=3, nflat=3, density_scale=density)
        store = ProductStore(tmp)
        build_library(store, NIGHT)
        build_catalogs(store, [FIELD], ccds=[ccd])
        history, tonight = [], []
        for raw in result.science:
            rk = ProductKey.parse(raw.name)
            (tonight if rk.night == NIGHT else history).append(raw)

        def process(raw):
            statuses = run_calib(raw, store)
            key = ProductKey.parse(raw.name).quadrant(qid, "sciimg")
            if not all(s.ok for s in statuses) or not run_astrom(key, store).ok:
                return None
            run_photom(key, store)
            return key if "MAGLIM" in read_header(store.path(key)) else None

        for raw in history:
            process(raw)
        status = build_reference(store, FIELD, ccd, qid, "zr", config)
        if not status.ok:
            raise RuntimeError(f"field {k}: {status}")
        refcat = Table.read(store.path(ProductKey.parse(result.science[0].name).quadrant(qid, "sciimg")
                                       .reference("refpsfcat")), hdu="PSFCAT")
        rows = []
        for raw in tonight:
            key = process(raw)
            if key is None:
                continue
            hdr = read_header(store.path(key))
            wcs = WCS(hdr)
            rx, ry = wcs.all_world2pix(np.asarray(refcat["ra"]), np.asarray(refcat["dec"]), 0)
            bright = np.asarray(refcat["mag"], float) < 21.5
            xy = np.column_stack([rx, ry])[bright & np.isfinite(rx)]
            fx, fy, fflux, fsnr, cr_xy = _inject(store, key, rng, nfake, xy)
            if not run_subtract(key, store, config).ok:
                continue
            with fits.open(store.path(key.with_suffix("candidates"))) as hdul:
                cands = Table(hdul["CANDIDATES"].data)
                cut = np.asarray(hdul["CUTOUTS"].data, np.float32)
            if not len(cands):
                continue
            cx, cy = np.asarray(cands["xpos"], float), np.asarray(cands["ypos"], float)
            pos = np.char.strip(np.asarray(cands["isdiffpos"]).astype(str)) == "t"
            d_inj = _nearest(cx, cy, np.column_stack([fx, fy]))
            var_xy, ast_xy = _truth_xy(store, ProductKey.parse(raw.name), qid, wcs)
            d_var = _nearest(cx, cy, var_xy)
            d_ast = _nearest(cx, cy, ast_xy)
            d_cr = _nearest(cx, cy, cr_xy)
            label = np.full(len(cands), -1, np.int8)
            label[(d_inj > 6) & (d_var > 6) & (d_ast > 20)] = 0  # artefacts, injected hits included
            label[(d_var < 1.5) & (d_inj > 6)] = 2
            label[(d_inj < 1.5) & pos] = 1
            # S/N target of the matched injection (NaN for others)
            snr_t = np.full(len(cands), np.nan)
            if len(fx):
                from scipy.spatial import cKDTree

                _, j = cKDTree(np.column_stack([fx, fy])).query(np.column_stack([cx, cy]))
                snr_t = np.where(label == 1, fsnr[j], np.nan)
            feats = rb_features(cands, cut)
            drb = braai_score(cut[:, 0], cut[:, 1], cut[:, 2])
            # the central 31 x 31 of the cutouts, float16: enough to recompute the features
            c = cut.shape[-1] // 2
            small = np.clip(cut[:, :, c - 15:c + 16, c - 15:c + 16], -6e4, 6e4).astype(np.float16)
            rows.append(dict(features=feats, label=label, drb=drb, snr_target=snr_t, hit=d_cr < 2,
                             isdiffpos=pos, cutouts31=small, epoch=np.full(len(cands), len(rows), np.int16),
                             **{c_: np.asarray(cands[c_], float) for c_ in CAND_COLS},
                             ninj=np.full(len(cands), len(fx), np.int32)))
            logging.info("field %d epoch %d: %d candidates, %d real of %d injected, %d bogus (%d injected hits), "
                         "%d truth", k, len(rows), len(cands), (label == 1).sum(), len(fx), (label == 0).sum(),
                         ((label == 0) & (d_cr < 2)).sum(), (label == 2).sum())
    merged = {name: np.concatenate([r[name] for r in rows]) for name in rows[0]}
    merged["ninjected"] = np.array([r["ninj"][0] for r in rows])
    del merged["ninj"]
    path = out / f"field_{k}.npz"
    np.savez_compressed(path, field=k, seed=seed, **merged)
    logging.info("field %d done in %.0f s -> %s", k, time.perf_counter() - t0, path)
    return path


def generate(args):
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [k for k in range(args.fields) if args.force or not (args.out / f"field_{k}.npz").exists()]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(generate_field, k, args.out, args.epochs, args.nfake): k for k in todo}
        for fut in futures:
            try:
                print(fut.result(), flush=True)
            except Exception as exc:  # one bad field must not lose the others
                logging.error("field %d failed: %r", futures[fut], exc)


# ---- training -----------------------------------------------------------------------------------------


def fit_mlp(x, y, *, hidden=24, l2=1e-3, lr=0.01, epochs=3000, seed=0, x_val=None, y_val=None, log_every=500):
    """Full-batch Adam on the class-balanced cross-entropy of a tanh MLP; returns the model dict (the
    iterate with the lowest validation loss when validation data are given)."""
    from scipy.special import expit

    rng = np.random.default_rng(seed)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale
    n, nf = z.shape
    w_pos = 0.5 / max(y.mean(), 1e-9)
    w_neg = 0.5 / max(1 - y.mean(), 1e-9)
    sw = np.where(y == 1, w_pos, w_neg) / n
    params = {"w1": rng.normal(0, 1 / math.sqrt(nf), (nf, hidden)), "b1": np.zeros(hidden),
              "w2": rng.normal(0, 1 / math.sqrt(hidden), hidden), "b2": np.zeros(())}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(val) for k, val in params.items()}
    b1_, b2_, eps = 0.9, 0.999, 1e-8

    def loss_of(p, zz, yy, ww):
        h = np.tanh(zz @ p["w1"] + p["b1"])
        q = np.clip(expit(h @ p["w2"] + p["b2"]), 1e-7, 1 - 1e-7)
        return -np.sum(ww * (yy * np.log(q) + (1 - yy) * np.log(1 - q)))

    if x_val is not None:
        zv = (x_val - mean) / scale
        swv = np.where(y_val == 1, 0.5 / max(y_val.mean(), 1e-9), 0.5 / max(1 - y_val.mean(), 1e-9)) / len(y_val)
    best, best_loss = None, np.inf
    for it in range(1, epochs + 1):
        h = np.tanh(z @ params["w1"] + params["b1"])
        q = expit(h @ params["w2"] + params["b2"])
        g_out = sw * (q - y)
        grads = {"w2": h.T @ g_out + l2 * params["w2"], "b2": np.asarray(g_out.sum())}
        g_h = np.outer(g_out, params["w2"]) * (1 - h**2)
        grads["w1"] = z.T @ g_h + l2 * params["w1"]
        grads["b1"] = g_h.sum(axis=0)
        for key in params:
            m[key] = b1_ * m[key] + (1 - b1_) * grads[key]
            v[key] = b2_ * v[key] + (1 - b2_) * grads[key] ** 2
            mh, vh = m[key] / (1 - b1_**it), v[key] / (1 - b2_**it)
            params[key] = params[key] - lr * mh / (np.sqrt(vh) + eps)
        if x_val is not None and (it % 20 == 0 or it == epochs):
            lv = loss_of(params, zv, y_val, swv)
            if lv < best_loss:
                best_loss, best = lv, {k: val.copy() for k, val in params.items()}
            if it % log_every == 0:
                logging.info("iter %d: train %.4f val %.4f", it, loss_of(params, z, y, sw), lv)
    model = best if best is not None else params
    return {"mean": mean, "scale": scale, **model}


def rates(score, y, threshold=0.5):
    """(false-positive rate, false-negative rate) at ``threshold``."""
    fpr = float(np.mean(score[y == 0] >= threshold)) if np.any(y == 0) else float("nan")
    fnr = float(np.mean(score[y == 1] < threshold)) if np.any(y == 1) else float("nan")
    return fpr, fnr


def _cap(d, max_bogus, seed):
    """At most ``max_bogus`` natural bogus candidates per epoch (seeded choice; the rest relabelled -1; the
    injected hits are all kept): a failed
    subtraction (bad PSF match, a thousand residuals) must not make up the bogus class on its own."""
    rng = np.random.default_rng(seed + int(d["field"]))
    lab = d["label"].copy()
    hit = d["hit"] if "hit" in d else np.zeros(len(lab), bool)
    for e in np.unique(d["epoch"]):
        idx = np.flatnonzero((d["epoch"] == e) & (lab == 0) & ~hit)
        if len(idx) > max_bogus:
            lab[rng.choice(idx, len(idx) - max_bogus, replace=False)] = -1
    d["label_all"], d["label"] = d["label"], lab
    return d


def _epoch_counts(d):
    """Number of candidates of each candidate's epoch."""
    _, inv, counts = np.unique(d["epoch"], return_inverse=True, return_counts=True)
    return counts[inv]


def train(args):
    from ztfsds.subtract import realbogus as rbm

    files = sorted(args.data.glob("field_*.npz"), key=lambda p: int(p.stem.split("_")[1]))
    data = [_cap(dict(np.load(p)), args.max_bogus, args.seed) for p in files]
    train_sets, held_sets = data[:-args.holdout], data[-args.holdout:]
    held = {k: np.concatenate([h[k] for h in held_sets]) for k in held_sets[0] if np.ndim(held_sets[0][k])}
    held["ncand_epoch"] = np.concatenate([_epoch_counts(h) for h in held_sets])
    nf = len(rbm.FEATURE_NAMES)
    ntab = len(rbm.TABLE_FEATURES)

    def stack(sets):
        x = np.concatenate([s["features"] for s in sets])
        y = np.concatenate([s["label"] for s in sets])
        keep = (y == 0) | (y == 1)
        return x[keep], y[keep].astype(float)

    x_all, y_all = stack(train_sets)
    nhit = sum(int(((s["label"] == 0) & s["hit"]).sum()) for s in train_sets if "hit" in s)
    print(f"candidates per field (real, bogus kept, bogus found): "
          f"{[(int((s['label'] == 1).sum()), int((s['label'] == 0).sum()), int((s['label_all'] == 0).sum())) for s in data]}"
          f"; injected hits among the training bogus: {nhit}")
    rng = np.random.default_rng(args.seed)
    val = rng.random(len(y_all)) < 0.2
    print(f"training fields {len(train_sets)}: {int((y_all == 1).sum())} real, {int((y_all == 0).sum())} bogus "
          f"(validation {val.sum()}); held-out field: {int((held['label'] == 1).sum())} real, "
          f"{int((held['label'] == 0).sum())} bogus, {int((held['label'] == 2).sum())} truth transients/variables")
    models = {}
    for name, cols in (("full", slice(0, nf)), ("table", slice(0, ntab))):
        models[name] = fit_mlp(x_all[~val][:, cols], y_all[~val], x_val=x_all[val][:, cols], y_val=y_all[val],
                               hidden=args.hidden, l2=args.l2, epochs=args.iterations, seed=args.seed)
    # held-out field
    hx, hy = held["features"], held["label"]
    keep = (hy == 0) | (hy == 1)
    for name, cols in (("full", slice(0, nf)), ("table", slice(0, ntab))):
        s = rbm.mlp_forward(models[name], hx[keep][:, cols])
        fpr, fnr = rates(s, hy[keep])
        print(f"held-out {name:5s} model: FPR {fpr:.4f} FNR {fnr:.4f} at 0.5")
        sv = rbm.mlp_forward(models[name], x_all[val][:, cols])
        print(f"validation {name:5s} model: FPR/FNR {rates(sv, y_all[val])}")
    s_full = rbm.mlp_forward(models["full"], hx)
    good = held["ncand_epoch"] <= FAILED_EPOCH
    print(f"held-out full model on epochs with <= {FAILED_EPOCH} candidates (not failed subtractions): "
          f"{int(((hy == 1) & good).sum())} real, {int(((hy == 0) & good).sum())} bogus: FPR/FNR "
          f"{rates(s_full[good], hy[good])}; on the failed ones: {rates(s_full[~good], hy[~good])}")
    snr = held["snr_target"]
    for lo, hi in ((3, 5), (5, 8), (8, 15), (15, 40), (40, 101)):
        sel = (hy == 1) & (snr >= lo) & (snr < hi)
        if sel.any():
            print(f"  real S/N {lo}-{hi}: n={sel.sum()}, FNR {np.mean(s_full[sel] < 0.5):.3f}")
    if "hit" in held:
        hit = (hy == 0) & held["hit"]
        print(f"  injected cosmic-ray-like hits (bogus): n={hit.sum()}, FPR {np.mean(s_full[hit] >= 0.5):.3f}; other "
              f"bogus n={((hy == 0) & ~held['hit']).sum()}, FPR {np.mean(s_full[(hy == 0) & ~held['hit']] >= 0.5):.3f}")
    tv = hy == 2
    if tv.any():
        print(f"  truth transients/variables (not trained on): n={tv.sum()}, rb >= 0.5: {np.mean(s_full[tv] >= 0.5):.3f}")
    # braai on all fields' candidates
    drb = np.concatenate([s["drb"] for s in data])
    lab = np.concatenate([s["label"] for s in data])
    print(f"braai d6_m7 on sim candidates: median drb real {np.median(drb[lab == 1]):.3f}, bogus "
          f"{np.median(drb[lab == 0]):.3f}; FPR/FNR at 0.5 {rates(drb, lab)}; held-out field "
          f"{rates(held['drb'], hy)}")
    out = {"rbversion": np.array(rbm.RB_VERSION)}
    for name, names in (("full", rbm.FEATURE_NAMES), ("table", rbm.TABLE_FEATURES)):
        out[f"{name}_features"] = np.array(names)
        for k, v in models[name].items():
            out[f"{name}_{k}"] = np.asarray(v, np.float64)
    model_path = ROOT / "ztfsds" / "data" / "rb_model.npz"
    np.savez_compressed(model_path, **out)
    print(f"wrote {model_path} ({model_path.stat().st_size} bytes)")
    # held-out file for the tests: every labelled row's features (float32) + a few raw rows to recompute them
    rows = np.flatnonzero(keep)
    # float16 cutouts of saturated stars overflow: pick among the rows whose cutouts have no inf
    rows = rows[np.isfinite(np.nan_to_num(held["cutouts31"][rows].astype(np.float32), nan=0.0)).all(axis=(1, 2, 3))]
    pick = np.concatenate([rng.choice(rows[hy[rows] == lab_], size=min(8, int((hy[rows] == lab_).sum())),
                                      replace=False) for lab_ in (0, 1)])
    heldout = {"features": hx[keep].astype(np.float32), "label": hy[keep].astype(np.int8),
               "failed_epoch": ~good[keep], "hit": held["hit"][keep],
               "drb": held["drb"][keep].astype(np.float32), "snr_target": held["snr_target"][keep].astype(np.float32),
               "raw_cutouts": held["cutouts31"][pick], "raw_isdiffpos": held["isdiffpos"][pick],
               "raw_features": hx[pick].astype(np.float32), "raw_label": hy[pick].astype(np.int8)}
    for c in CAND_COLS:
        heldout[f"raw_{c}"] = held[c][pick]
    hpath = ROOT / "tests" / "data" / "rb_heldout.npz"
    np.savez_compressed(hpath, **heldout)
    print(f"wrote {hpath} ({hpath.stat().st_size} bytes)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--fields", type=int, default=len(FIELDS))
    g.add_argument("--epochs", type=int, default=4)
    g.add_argument("--nfake", type=int, default=120)
    g.add_argument("--workers", type=int, default=2)
    g.add_argument("--force", action="store_true")
    t = sub.add_parser("train")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--hidden", type=int, default=16)
    t.add_argument("--l2", type=float, default=1e-3)
    t.add_argument("--iterations", type=int, default=3000)
    t.add_argument("--seed", type=int, default=7)
    t.add_argument("--holdout", type=int, default=2, help="last fields held out for the acceptance numbers")
    t.add_argument("--max-bogus", type=int, default=150, help="bogus candidates kept per epoch")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("ztfsds",):
        logging.getLogger(name).setLevel(logging.WARNING)
    generate(args) if args.cmd == "generate" else train(args)


if __name__ == "__main__":
    main()
