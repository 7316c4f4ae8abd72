"""Developer script: cut the 400 x 400 test image of the source-extraction tests from the real quadrant.

Writes ``ztf_20200924431759_000655_zr_c13_o_q3_cutout.fits.gz``: the sciimg pixels (float32, DN) in the
primary HDU and the mskimg pixels (int16 MaskBits) in HDU ``MSKIMG``, rows 2000-2399 and columns
1700-2099 (0-based) of the IPAC quadrant (a saturated star, masked pixels and ~300 sources), with the
quadrant's GAIN, SATURATE, SEEING, MAGZP and PIXSCALE. Run once from the repository root:

    python tests/data/make_extract_cutout.py /work/shared/data/ztfimg-pypi-0.19.0
"""

import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

STEM = "ztf_20200924431759_000655_zr_c13_o_q3"
Y0, X0, SIZE = 2000, 1700, 400


def main(folder):
    folder = Path(folder)
    cut = (slice(Y0, Y0 + SIZE), slice(X0, X0 + SIZE))
    with fits.open(folder / f"{STEM}_sciimg.fits") as hdul:
        sci = hdul[0].data[cut].astype(np.float32)
        src = hdul[0].header
    with fits.open(folder / f"{STEM}_mskimg.fits") as hdul:
        msk = hdul[0].data[cut].astype(np.int16)
    hdr = fits.Header()
    hdr["ORIGIN"] = (f"{STEM}_sciimg.fits", "IPAC product")
    hdr["CUTX0"] = (X0, "0-based column of pixel [0, 0] in the quadrant")
    hdr["CUTY0"] = (Y0, "0-based row of pixel [0, 0] in the quadrant")
    for key in ("GAIN", "SATURATE", "SEEING", "MAGZP", "PIXSCALE"):
        hdr[key] = (src[key], src.comments[key][:40])
    out = Path(__file__).parent / f"{STEM}_cutout.fits.gz"
    fits.HDUList([fits.PrimaryHDU(sci, header=hdr), fits.ImageHDU(msk, name="MSKIMG")]).writeto(out, overwrite=True)
    print(out, out.stat().st_size, "bytes")


if __name__ == "__main__":
    main(sys.argv[1])
