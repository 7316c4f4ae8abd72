"""`ProductKey`: the identity of a ZTF product and its exact file name.

The four families of names (ZTF_REFERENCE.md section 3.1, DESIGN.md section 4)::

    sci  ztf_<YYYYMMDDdddddd>_<field:06d>_<fc>_c<ccd:02d>_<t>_q<q>_<suffix>.fits
    raw  ztf_<YYYYMMDDdddddd>_<field:06d>_<fc>_c<ccd:02d>_<t>.fits[.fz]
    ref  ztf_<field:06d>_<fc>_c<ccd:02d>_q<q>_<suffix>.fits
    cal  ztf_<YYYYMMDD>_<fc>_c<ccd:02d>_q<q>_<suffix>.fits       (fc = 'OO' for biases)
"""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

from ..errors import ProductNameError
from .ids import expid as _expid
from .ids import nid as _nid
from .ids import pid as _pid

__all__ = ["ProductKey", "IMGTYPES", "FILTERCODES", "EXTENSIONS"]

#: Image-type codes of raw and science products: science, bias, dark, dome flat, focus, guider.
IMGTYPES = {"o": "science", "b": "bias", "d": "dark", "f": "flat", "c": "focus", "g": "guider"}
#: Filter codes; 'OO' stands for "no filter" (bias and dark calibration products).
FILTERCODES = {"zg": 1, "zr": 2, "zi": 3, "OO": 0}
#: File extensions a product may have (longest first so '.fits.fz' wins over '.fits').
EXTENSIONS = (".fits.fz", ".fits.gz", ".fits", ".psf", ".txt", ".tar", ".json", ".parquet", ".png", ".html")

_EXT = "(?P<ext>" + "|".join(re.escape(e) for e in EXTENSIONS) + ")"
_FC = "(?P<filtercode>zg|zr|zi|OO)"
_PATTERNS = {
    "sci": re.compile(rf"^ztf_(?P<filefracday>\d{{14}})_(?P<field>\d{{6}})_{_FC}_c(?P<ccdid>\d{{2}})_"
                      rf"(?P<imgtype>[a-z])_q(?P<qid>[1-4])_(?P<suffix>[a-z][a-z0-9]*){_EXT}$"),
    "raw": re.compile(rf"^ztf_(?P<filefracday>\d{{14}})_(?P<field>\d{{6}})_{_FC}_c(?P<ccdid>\d{{2}})_"
                      rf"(?P<imgtype>[a-z]){_EXT}$"),
    "ref": re.compile(rf"^ztf_(?P<field>\d{{6}})_{_FC}_c(?P<ccdid>\d{{2}})_q(?P<qid>[1-4])_"
                      rf"(?P<suffix>[a-z][a-z0-9]*){_EXT}$"),
    "cal": re.compile(rf"^ztf_(?P<night>\d{{8}})_{_FC}_c(?P<ccdid>\d{{2}})_q(?P<qid>[1-4])_"
                      rf"(?P<suffix>[a-z][a-z0-9]*){_EXT}$"),
}


@dataclasses.dataclass(frozen=True, order=True)
class ProductKey:
    """Identity of one ZTF product, convertible to and from its file name.

    Parameters
    ----------
    kind : {'sci', 'raw', 'ref', 'cal'}
        Product family: per-exposure quadrant products, raw CCD files, reference products,
        calibration products.
    filtercode : {'zg', 'zr', 'zi', 'OO'}
        Filter ('OO' for bias/dark calibration products).
    ccdid : int
        CCD, 1-16.
    qid : int or None
        Readout quadrant, 1-4 (None for raw CCD files).
    field : int or None
        ZTF field id (None for calibration products).
    filefracday : str or None
        ``YYYYMMDDdddddd`` exposure id of sci and raw products.
    night : str or None
        ``YYYYMMDD`` of calibration products (derived from ``filefracday`` otherwise).
    imgtype : str
        Image-type code (see `IMGTYPES`), 'o' for science exposures.
    suffix : str
        Product suffix: 'sciimg', 'mskimg', 'psfcat', 'refimg', 'bias', ... ('' for raw files).
    ext : str
        File extension, '.fits' by default.

    Examples
    --------
    >>> from ztfsds.products import ProductKey
    >>> key = ProductKey.parse("ztf_20180317184502_000600_zr_c08_o_q3_sciimg.fits")
    >>> key.field, key.ccdid, key.qid, key.rcid, key.expid
    (600, 8, 3, 30, 44018450)
    >>> key.with_suffix("mskimg").filename
    'ztf_20180317184502_000600_zr_c08_o_q3_mskimg.fits'
    >>> key.reference("refimg").filename
    'ztf_000600_zr_c08_q3_refimg.fits'
    """

    kind: str
    filtercode: str
    ccdid: int
    qid: int | None = None
    field: int | None = None
    filefracday: str | None = None
    night: str | None = None
    imgtype: str = "o"
    suffix: str = ""
    ext: str = ".fits"

    KINDS: ClassVar[tuple[str, ...]] = ("sci", "raw", "ref", "cal")

    def __post_init__(self):
        def bad(msg):
            raise ProductNameError(f"invalid ProductKey ({msg}): {self!r}")

        if self.kind not in self.KINDS:
            bad(f"kind must be one of {self.KINDS}")
        if self.filtercode not in FILTERCODES:
            bad(f"filtercode must be one of {tuple(FILTERCODES)}")
        if not 1 <= int(self.ccdid) <= 16:
            bad("ccdid must be 1..16")
        if self.qid is not None and not 1 <= int(self.qid) <= 4:
            bad("qid must be 1..4")
        if self.ext not in EXTENSIONS:
            bad(f"ext must be one of {EXTENSIONS}")
        if self.kind in ("sci", "raw"):
            if self.filefracday is None or not re.fullmatch(r"\d{14}", self.filefracday):
                bad("sci/raw products need a 14-digit filefracday")
            if self.field is None:
                bad("sci/raw products need a field")
            if self.imgtype not in IMGTYPES:
                bad(f"imgtype must be one of {tuple(IMGTYPES)}")
            # the night is always the date part of the exposure id
            object.__setattr__(self, "night", self.filefracday[:8])
        if self.kind == "raw" and (self.qid is not None or self.suffix):
            bad("raw CCD files have no quadrant and no suffix")
        if self.kind in ("sci", "ref", "cal") and (self.qid is None or not self.suffix):
            bad(f"{self.kind} products need a quadrant and a suffix")
        if self.kind == "ref" and (self.field is None or self.filefracday is not None):
            bad("reference products have a field and no exposure id")
        if self.kind == "cal" and (self.night is None or not re.fullmatch(r"\d{8}", self.night)):
            bad("calibration products need an 8-digit night YYYYMMDD")
        if self.field is not None and not 0 <= int(self.field) <= 999999:
            bad("field must be 0..999999")

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def parse(cls, name: str) -> "ProductKey":
        """Parse a ZTF product file name (a bare name or a path).

        Raises
        ------
        ztfsds.errors.ProductNameError
            The name follows none of the ZTF patterns.
        """
        base = str(name).replace("\\", "/").rsplit("/", 1)[-1]
        for kind, pattern in _PATTERNS.items():
            m = pattern.match(base)
            if m is None:
                continue
            g = m.groupdict()
            return cls(kind=kind, filtercode=g["filtercode"], ccdid=int(g["ccdid"]),
                       qid=int(g["qid"]) if g.get("qid") else None,
                       field=int(g["field"]) if g.get("field") else None,
                       filefracday=g.get("filefracday"), night=g.get("night"),
                       imgtype=g.get("imgtype") or "o", suffix=g.get("suffix") or "", ext=g["ext"])
        raise ProductNameError(f"not a ZTF product file name: {base!r}")

    @classmethod
    def science(cls, filefracday: str, field: int, filtercode: str, ccdid: int, qid: int,
                suffix: str = "sciimg", *, imgtype: str = "o", ext: str = ".fits") -> "ProductKey":
        """Key of a per-exposure quadrant product (sciimg, mskimg, psfcat, ...)."""
        return cls("sci", filtercode, ccdid, qid, field, filefracday, None, imgtype, suffix, ext)

    @classmethod
    def raw(cls, filefracday: str, field: int, filtercode: str, ccdid: int, *, imgtype: str = "o",
            ext: str = ".fits") -> "ProductKey":
        """Key of a raw CCD file (4 amplifiers + overscans)."""
        return cls("raw", filtercode, ccdid, None, field, filefracday, None, imgtype, "", ext)

    @classmethod
    def calibration(cls, night: str, filtercode: str, ccdid: int, qid: int, suffix: str,
                    ext: str = ".fits") -> "ProductKey":
        """Key of a calibration product (``bias``, ``biasunc``, ``hifreqflat``, ...) of a night."""
        return cls("cal", filtercode, ccdid, qid, None, None, night, "o", suffix, ext)

    # -- derived keys ---------------------------------------------------------------------------
    def with_suffix(self, suffix: str, ext: str | None = None) -> "ProductKey":
        """The sibling product with another suffix (``sciimg`` -> ``mskimg``)."""
        return dataclasses.replace(self, suffix=suffix, ext=self.ext if ext is None else ext)

    def quadrant(self, qid: int, suffix: str = "sciimg", ext: str = ".fits") -> "ProductKey":
        """The science-quadrant product of a raw CCD key."""
        if self.kind not in ("raw", "sci"):
            raise ProductNameError(f"{self.filename}: only raw/sci keys have quadrant products")
        return dataclasses.replace(self, kind="sci", qid=qid, suffix=suffix, ext=ext)

    def reference(self, suffix: str = "refimg", ext: str = ".fits") -> "ProductKey":
        """The reference product for this key's field, filter, CCD and quadrant."""
        if self.qid is None or self.field is None:
            raise ProductNameError(f"{self.filename}: a reference needs a field and a quadrant")
        return ProductKey("ref", self.filtercode, self.ccdid, self.qid, self.field, None, None, "o",
                          suffix, ext)

    # -- names and ids --------------------------------------------------------------------------
    @property
    def filename(self) -> str:
        """The exact ZTF file name."""
        cc = f"c{self.ccdid:02d}"
        if self.kind == "sci":
            stem = (f"ztf_{self.filefracday}_{self.field:06d}_{self.filtercode}_{cc}_{self.imgtype}"
                    f"_q{self.qid}_{self.suffix}")
        elif self.kind == "raw":
            stem = f"ztf_{self.filefracday}_{self.field:06d}_{self.filtercode}_{cc}_{self.imgtype}"
        elif self.kind == "ref":
            stem = f"ztf_{self.field:06d}_{self.filtercode}_{cc}_q{self.qid}_{self.suffix}"
        else:
            stem = f"ztf_{self.night}_{self.filtercode}_{cc}_q{self.qid}_{self.suffix}"
        return stem + self.ext

    def __str__(self) -> str:
        return self.filename

    @property
    def fid(self) -> int:
        """Filter id (1 g, 2 r, 3 i; 0 for 'OO')."""
        return FILTERCODES[self.filtercode]

    @property
    def rcid(self) -> int:
        """Readout-channel id 0-63 (``4 * (ccdid - 1) + qid - 1``)."""
        if self.qid is None:
            raise ProductNameError(f"{self.filename}: a raw CCD file has no single rcid")
        return 4 * (self.ccdid - 1) + self.qid - 1

    @property
    def expid(self) -> int:
        """Exposure id (``nid * 10**5 + floor(fracday * 10**5)``) of sci and raw products.

        Exact for products ztfsds writes; real IPAC names are stamped ~1 s before ``OBSJD`` and their
        header ``EXPID`` can be larger by one (see `ztfsds.products.expid`).
        """
        if self.filefracday is None:
            raise ProductNameError(f"{self.filename}: not a per-exposure product")
        return _expid(self.filefracday)

    @property
    def nid(self) -> int:
        """Night id (UT days since 2017-01-01)."""
        import datetime as dt

        return _nid(dt.datetime.strptime(self.night, "%Y%m%d").date())

    def pid(self, pipeline: int = 15) -> int:
        """Processed-image id of this quadrant-exposure."""
        return _pid(self.expid, self.rcid, pipeline)
