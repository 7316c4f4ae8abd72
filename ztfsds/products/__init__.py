"""Product identity, naming, storage and bit conventions (the ZTF archive's rules).

- `ProductKey`: what a product is (exposure, field, filter, CCD, quadrant, image type, suffix) and its
  file name, parsed from and formatted to the exact ZTF names
  (``ztf_20180317184502_000600_zr_c08_o_q3_sciimg.fits``).
- `ProductStore`: the data-root layout (``raw/``, ``cal/``, ``sci/YYYY/MMDD/dddddd/``, ``ref/...``,
  ``alerts/``, ``match/``, ``reports/``) and atomic reads and writes of products in it.
- `read_image`, `write_fits`, `atomic_write`: FITS I/O that never leaves a half-written product and that
  names the file and the problem when an input is bad.
- `MaskBits` and `InfoBits`: the mskimg pixel bits and the sciimg INFOBITS quality word.
- Identifier arithmetic: ``nid``, ``expid``, ``pid``, ``rcid``, ``candid``, ``objectId``, ``fcqfid``...
"""

from .bits import InfoBits, MaskBits, bits_legend_cards
from .fitsio import atomic_write, read_header, read_image, table_hdulist, write_fits
from .ids import (
    PIPELINE_ID,
    candid,
    dbrid,
    expid,
    fcqfid,
    filefracday,
    lightcurve_oid,
    night_date,
    nid,
    objectid_from_number,
    objectid_to_number,
    parse_candid,
    parse_expid,
    parse_fcqfid,
    parse_pid,
    pid,
    rfid,
)
from .naming import IMGTYPES, ProductKey
from .status import ProductStatus
from .store import ProductStore

__all__ = [
    "table_hdulist",
    "ProductKey",
    "IMGTYPES",
    "ProductStore",
    "ProductStatus",
    "read_image",
    "read_header",
    "write_fits",
    "atomic_write",
    "MaskBits",
    "InfoBits",
    "bits_legend_cards",
    "PIPELINE_ID",
    "nid",
    "night_date",
    "filefracday",
    "expid",
    "parse_expid",
    "pid",
    "parse_pid",
    "dbrid",
    "candid",
    "parse_candid",
    "rfid",
    "fcqfid",
    "parse_fcqfid",
    "objectid_from_number",
    "objectid_to_number",
    "lightcurve_oid",
]
