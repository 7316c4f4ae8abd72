"""Developer script: the real ZTF alert cutouts of the braai (drb) tests, ``braai_alerts.npz``.

Reads every ``*.avro`` alert packet under a folder (each with its own writer schema: ``fastavro.reader``),
decodes the three cutouts (gzipped FITS, ``stampData``) to float32 and keeps the 25 alerts below that carry
a ``drb`` (schema >= 3.3, ``drbversion = d6_m7``):

- every alert whose cutouts hold NaN pixels (4 in the shared data: off-chip or masked pixels);
- the schema-3.3 sample packet of ``ztf-avro-alert`` (candid 472263571115115000), a 2018 alert whose ``drb``
  no d6_m7 preprocessing reproduces (the model went live in mid-2019; the value was filled in later);
- the others drawn evenly in ``drb`` order, so that bogus, borderline and real scores are all there.

Stored (all 63 x 63 pixels, rows = FITS y, float32 DN as decoded): ``science``, ``template``,
``difference`` (n, 63, 63), ``drb`` (float32 as in the packet), ``candid`` (int64), ``has_nan`` (bool);
plus ``edge_science``, ``edge_template``, ``edge_difference`` and ``edge_candid``: one real triplet cut at
the CCD edge (smaller than 63 x 63, no ``drb``: schema 3.0) for the padding path. Needs fastavro and
astropy. Run once from the repository root:

    python tests/data/make_braai_fixture.py /work/shared/data
"""

import gzip
import io
import sys
import warnings
from pathlib import Path

import fastavro
import numpy as np
from astropy.io import fits

N_KEEP = 25
UNREPRODUCIBLE = 472263571115115000  # kept on purpose: see the module docstring
EDGE_FILE = "ztf-avro-alert/data/v3.0/472263571115115014.avro"  # 63 x 53 cutouts
CUTOUTS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")


def decode(stamp_data):
    """gzipped FITS bytes -> float32 array (some 2018 stamps have a non-standard SIMPLE card)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        with fits.open(io.BytesIO(gzip.decompress(stamp_data)), ignore_missing_simple=True) as hdul:
            return np.asarray(hdul[0].data, dtype=np.float32)


def read_alerts(root):
    for path in sorted(Path(root).rglob("*.avro")):
        with open(path, "rb") as fh:
            for rec in fastavro.reader(fh):
                yield path.relative_to(root).as_posix(), rec


def main(root):
    rows, edge = [], None
    for rel, rec in read_alerts(root):
        stamps = [decode(rec[k]["stampData"]) for k in CUTOUTS]
        if rel == EDGE_FILE:
            edge = (rec["candid"], stamps)
        drb = rec["candidate"].get("drb")
        if drb is None or any(s.shape != (63, 63) for s in stamps):
            continue
        rows.append((rec["candid"], float(drb), stamps, any(np.isnan(s).any() for s in stamps)))
    must = [r for r in rows if r[3] or r[0] == UNREPRODUCIBLE]
    must_ids = {r[0] for r in must}
    rest = sorted((r for r in rows if r[0] not in must_ids), key=lambda r: r[1])
    pick = np.round(np.linspace(0, len(rest) - 1, N_KEEP - len(must))).astype(int)
    keep = sorted(must + [rest[i] for i in pick], key=lambda r: r[0])
    out = {
        "science": np.stack([r[2][0] for r in keep]),
        "template": np.stack([r[2][1] for r in keep]),
        "difference": np.stack([r[2][2] for r in keep]),
        "drb": np.array([r[1] for r in keep], dtype=np.float32),
        "candid": np.array([r[0] for r in keep], dtype=np.int64),
        "has_nan": np.array([r[3] for r in keep]),
        "edge_science": edge[1][0],
        "edge_template": edge[1][1],
        "edge_difference": edge[1][2],
        "edge_candid": np.int64(edge[0]),
    }
    dest = Path(__file__).parent / "braai_alerts.npz"
    np.savez_compressed(dest, **out)
    print(dest, dest.stat().st_size, "bytes;", len(keep), "alerts of", len(rows), "with drb;",
          int(out["has_nan"].sum()), "with NaN pixels")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data")
