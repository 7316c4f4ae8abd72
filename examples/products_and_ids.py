"""Product names, the data root and ZTF ids: decode what a ZTF file name and an alert's ids mean.

Run: python examples/products_and_ids.py
"""

import tempfile

import numpy as np
from astropy.io import fits

from ztfsds.config import Config
from ztfsds.products import (
    InfoBits,
    MaskBits,
    ProductKey,
    ProductStore,
    parse_candid,
    parse_pid,
)

# A real science quadrant's name, and its siblings in the archive layout
key = ProductKey.parse("ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits")
print(f"field {key.field}, filter {key.filtercode} (fid {key.fid}), CCD {key.ccdid}, quadrant {key.qid}, "
      f"rcid {key.rcid}, night {key.night} (nid {key.nid})")
store = ProductStore(tempfile.mkdtemp(prefix="ztfsds-example-"))
for suffix in ("sciimg", "mskimg", "psfcat"):
    print("  ", store.relpath(key.with_suffix(suffix)))
print("  ", store.relpath(key.reference()))

# An alert's candid -> the processed image it came from
candid = 1628364324215010017  # a real alert (ZTF18abmmoot)
pid, code = parse_candid(candid)
expid, rcid, pipeline = parse_pid(pid)
print(f"candid {candid}: pid {pid}, exposure {expid}, rcid {rcid}, "
      f"{'positive' if code >= 15000 else 'negative'} candidate #{code % 5000}")

# Write a product with the configuration recorded in its header, atomically
header = Config().to_header(fits.Header(), stages=("calib",))
header["INFOBITS"] = int(InfoBits.ASTROM_FAILED)
path = store.write_fits(key, np.zeros((16, 16), np.float32), header)
back = store.read_header(key, required=["INFOBITS", "CALHASH"])
print(f"wrote {path.name}: INFOBITS {back['INFOBITS']} = {InfoBits.describe(back['INFOBITS'])}, "
      f"CALHASH {back['CALHASH']}")
mask = np.array([0, 2, 256, 2048 | 2], dtype=np.int16)
print("bad pixels:", (mask & MaskBits.BAD) != 0)
