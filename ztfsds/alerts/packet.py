"""Alert packets in the ZTF Avro schema (4.02): candidate records, history records and the packet.

Pure functions of our products (no database): the lead's runner reads the candidates table and headers
of a quadrant, the 30-day history from the database, and calls

* `candidate_records`: the schema's ``candidate`` record for every row of a ``candidates`` table
  (`ztfsds.subtract.runner.run_subtract`), from the science and difference headers, with the contextual
  associations (`ztfsds.alerts.associations`) and history counts merged in;
* `prv_candidate_from_candidate` (an earlier detection) and `upper_limit_record` /
  `upper_limit_from_headers` (an earlier non-detection: ``candid`` and ``magpsf`` null, ``diffmaglim``
  the image's limit) for ``prv_candidates``;
* `fp_hist_record` / `fp_hists_from_forced` for ``fp_hists`` (forced photometry at the candidate position
  on earlier difference images, from a `ztfsds.photom.forced` table);
* `make_alert`: the packet (``schemavsn``, ``publisher``, ``objectId``, ``candid``, ``candidate``,
  ``prv_candidates``, ``fp_hists`` and the three gzipped-FITS cutouts, `ztfsds.alerts.cutout`).

Conventions (checked against 107 real packets, schemas 1.7-3.5):

* ``xpos``, ``ypos`` are 1-based (FITS/SExtractor) pixel coordinates: our tables are 0-based, so 1 is
  added; ``mindtoedge = min(xpos, ypos, NAXIS1 + 0.5 - xpos, NAXIS2 + 0.5 - ypos)`` exactly as in the
  real packets.
* ``distnr`` is in **pixels** in ``candidate`` (the schema says so, and in real packets it is the
  separation to (``ranr``, ``decnr``) divided by 1.012"/px) but in arcsec in ``fp_hist``.
* Absent associations use ZTF's sentinels: -999 (``distnr``, ``ranr``, ``decnr``, ``magnr``... when the
  reference has no source within 30", PS1 and Gaia fields, ``ssdistnr``, ``ssmagnr``) and ``'null'``
  (``ssnamenr``); fields we do not measure (``sky``, ``classtar``, ``dsnrms``...) are null.
* ``jd`` is the exposure start (``OBSJD``); ``pid``, ``candid``, ``rfid`` follow the real arithmetic
  (`ztfsds.products.ids`).
* A negative candidate (``isdiffpos = 'f'``) carries the reference-minus-science difference cutout
  (``..._targ_refmsci.fits.gz``), in which it is positive, as IPAC's do.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from astropy.table import Table

from ..errors import AlertPacketError, MissingKeywordError
from ..products import ids
from .cutout import cutout_bytes, cutout_filenames
from .schema import SCHEMA_VERSION, field_names, required_fields

__all__ = ["candidate_records", "image_context", "make_alert", "prv_candidate_from_candidate",
           "upper_limit_record", "upper_limit_from_headers", "fp_hist_record", "fp_hists_from_forced",
           "cutout_bytes", "PUBLISHER", "SENTINEL", "REFERENCE_RADIUS", "DEFAULT_PIXSCALE"]

#: ``publisher`` of our packets (real ones say ``'ZTF (www.ztf.caltech.edu)'``).
PUBLISHER = "ztfsds"

#: ZTF's value of an absent association (no source within the search radius).
SENTINEL = -999.0

#: Radius of the nearest reference-source association (``distnr``, ``magnr``...) [arcsec].
REFERENCE_RADIUS = 30.0

#: Pixel scale used when a header has no PIXSCALE [arcsec/px].
DEFAULT_PIXSCALE = 1.012

# Largest seeratio written: IPAC caps it at 2.0 (the value recurs in real packets).
_SEERATIO_MAX = 2.0

_FILTER_IDS = {"zg": 1, "zr": 2, "zi": 3, "ztf_g": 1, "ztf_r": 2, "ztf_i": 3, "g": 1, "r": 2, "i": 3}

# candidates-table column -> candidate field, copied as they are
_COPIED = ("tblid", "isdiffpos", "magpsf", "sigmapsf", "chipsf", "magap", "sigmagap", "magapbig", "sigmagapbig",
           "magdiff", "aimage", "bimage", "elong", "fwhm", "nbad", "nneg", "sumrat", "scorr", "rb", "drb",
           "sky", "classtar", "dsnrms", "ssnrms", "dsdiff")
_NEAREST = ("distnr", "magnr", "sigmagnr", "chinr", "sharpnr")


def _num(value):
    """A finite float, or None."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _get(header, key, default=None):
    if header is None:
        return default
    value = header.get(key, default)
    return default if value is None else value


def _fid(header) -> int:
    if "FILTERID" in header:
        return int(header["FILTERID"])
    code = str(header.get("FILTER", "")).strip().lower()
    if code in _FILTER_IDS:
        return _FILTER_IDS[code]
    raise MissingKeywordError(header.get("FILENAME"), "FILTERID")


def _pdiffimfilename(header) -> str | None:
    """The difference image's file name, from the science header's FILENAME (sci or raw name) or ids."""
    from ..products import ProductKey

    try:
        key = ProductKey.parse(str(header.get("FILENAME", "")))
    except Exception:  # not a ZTF name: rebuild from the identity keywords
        key = None
    try:
        qid = int(header["QID"]) if "QID" in header else (key.qid if key is not None else None)
        if key is not None and key.kind in ("sci", "raw") and qid is not None:
            return ProductKey(kind="sci", filtercode=key.filtercode, ccdid=key.ccdid, qid=qid, field=key.field,
                              filefracday=key.filefracday, suffix="scimrefdiffimg").filename
        code = {1: "zg", 2: "zr", 3: "zi"}[_fid(header)]
        return ProductKey(kind="sci", filtercode=code, ccdid=int(_get(header, "CCDID", header.get("CCD_ID"))),
                          qid=qid, field=int(header["FIELDID"]), filefracday=ids.filefracday(float(header["OBSJD"])),
                          suffix="scimrefdiffimg").filename
    except Exception:  # identity keywords missing: the field is nullable
        return None


def image_context(sci_header, diff_header=None, *, ref_header=None, programid: int = 1) -> dict:
    """The image-level fields of a quadrant's candidates, upper limits and forced photometry.

    Parameters
    ----------
    sci_header : `~astropy.io.fits.Header`
        Science image header: ``OBSJD``, ``FILTERID`` (or ``FILTER``), ``FIELDID``, ``CCDID``/``CCD_ID``,
        ``QID``, ``RCID``, ``DBPID`` (or ``EXPID``), ``EXPTIME``, ``MAGZP``, ``MAGZPUNC``, ``MAGZPRMS``,
        ``NMATCHES``, ``CLRCOEFF``, ``CLRCOUNC``, ``ZPCLRCOV``, ``ZPMED``, ``CLRMED``, ``CLRRMS``,
        ``SEEING`` [px], ``MEDSKY``, ``SKYSIG`` [DN], ``ASTRRMS1/2`` [deg], ``PROGRMPI``, ``TOOFLAG``.
    diff_header : `~astropy.io.fits.Header`, optional
        Difference image header: ``DIFFMLIM``, ``RFID``, ``NFRAMREF``, ``RFJDSTRT``, ``RFJDEND``,
        ``RBVERSN``, ``DRBVERSN`` (the science header is used where it is None).
    ref_header : `~astropy.io.fits.Header`, optional
        Reference image header (``RFID``, ``NFRAMES``, ``JDSTART``, ``JDEND``) for what the difference
        header lacks.
    programid : int, optional
        Program of the exposure (1 = public).

    Returns
    -------
    dict
        ``jd``, ``fid``, ``pid``, ``programid``, ``programpi``, ``nid``, ``rcid``, ``field``, ``diffmaglim``,
        ``pdiffimfilename``, ``magzpsci`` ... ``clrrms``, ``exptime``, ``rfid``, ``jdstartref``,
        ``jdendref``, ``nframesref``, ``rbversion``, ``drbversion``, ``tooflag`` and the fp_hist-only
        ``sciinpseeing``, ``scibckgnd``, ``scisigpix``, ``adpctdif1``, ``adpctdif2`` [arcsec], plus
        ``naxis1``, ``naxis2``, ``pixscale`` [arcsec/px].

    Raises
    ------
    ztfsds.errors.MissingKeywordError
        ``OBSJD``, ``FIELDID``, the filter or the quadrant identity is absent.
    """
    h, d = sci_header, diff_header if diff_header is not None else sci_header
    where = h.get("FILENAME")
    for key in ("OBSJD", "FIELDID"):
        if key not in h:
            raise MissingKeywordError(where, key)
    jd = float(h["OBSJD"])
    fid = _fid(h)
    field = int(h["FIELDID"])
    if "RCID" in h:
        rcid = int(h["RCID"])
    elif "QID" in h and ("CCDID" in h or "CCD_ID" in h):
        rcid = 4 * (int(_get(h, "CCDID", h.get("CCD_ID"))) - 1) + int(h["QID"]) - 1
    else:
        raise MissingKeywordError(where, "RCID")
    if "DBPID" in h and int(h["DBPID"]) > 0:
        pid = int(h["DBPID"])
    else:
        pid = ids.pid(int(h["EXPID"]) if "EXPID" in h else ids.expid(jd), rcid)
    rfid = int(_get(d, "RFID", 0) or 0)
    if rfid <= 0 and ref_header is not None:
        rfid = int(_get(ref_header, "RFID", 0) or 0)
    if rfid <= 0:
        rfid = ids.rfid(field, fid, rcid)

    def ref_value(diff_key, ref_key, default):
        value = _get(d, diff_key)
        if (value is None or value == 0) and ref_header is not None:
            value = _get(ref_header, ref_key)
        return default if value is None else value

    rbversion, drbversion = _get(d, "RBVERSN"), _get(d, "DRBVERSN")
    if rbversion is None or drbversion is None:
        from ..subtract.braai import DRBVERSION
        from ..subtract.realbogus import RB_VERSION

        rbversion = RB_VERSION if rbversion is None else rbversion
        drbversion = DRBVERSION if drbversion is None else drbversion
    rms1, rms2 = _num(_get(h, "ASTRRMS1")), _num(_get(h, "ASTRRMS2"))
    return {
        "jd": jd, "fid": fid, "pid": pid, "programid": int(programid),
        "programpi": None if _get(h, "PROGRMPI") is None else str(h["PROGRMPI"]).strip(),
        "nid": ids.nid(jd), "rcid": rcid, "field": field,
        "diffmaglim": _num(_get(d, "DIFFMLIM")), "pdiffimfilename": _pdiffimfilename(h),
        "magzpsci": _num(_get(h, "MAGZP")), "magzpsciunc": _num(_get(h, "MAGZPUNC")),
        "magzpscirms": _num(_get(h, "MAGZPRMS")), "nmatches": int(_get(h, "NMATCHES", 0)),
        "clrcoeff": _num(_get(h, "CLRCOEFF")), "clrcounc": _num(_get(h, "CLRCOUNC")),
        "zpclrcov": _num(_get(h, "ZPCLRCOV")), "zpmed": _num(_get(h, "ZPMED")), "clrmed": _num(_get(h, "CLRMED")),
        "clrrms": _num(_get(h, "CLRRMS")), "exptime": _num(_get(h, "EXPTIME")),
        "rfid": rfid, "jdstartref": float(ref_value("RFJDSTRT", "JDSTART", SENTINEL)),
        "jdendref": float(ref_value("RFJDEND", "JDEND", SENTINEL)),
        "nframesref": int(ref_value("NFRAMREF", "NFRAMES", 0)),
        "rbversion": str(rbversion), "drbversion": str(drbversion), "tooflag": int(_get(h, "TOOFLAG", 0)),
        "sciinpseeing": _num(_get(h, "SEEING")), "scibckgnd": _num(_get(h, "MEDSKY")),
        "scisigpix": _num(_get(h, "SKYSIG")),
        "adpctdif1": None if rms1 is None or rms1 <= 0 else rms1 * 3600.0,
        "adpctdif2": None if rms2 is None or rms2 <= 0 else rms2 * 3600.0,
        "naxis1": int(_get(h, "NAXIS1", 3072)), "naxis2": int(_get(h, "NAXIS2", 3080)),
        "pixscale": float(_get(h, "PIXSCALE", DEFAULT_PIXSCALE)),
    }


def _column(table, name, n, default=np.nan) -> list:
    """A column as a list of Python scalars (masked -> None), or ``default`` repeated."""
    if table is None or name not in table.colnames:
        return [default] * n
    col = table[name]
    values = np.asarray(col.filled(np.nan) if getattr(col, "mask", None) is not None and col.dtype.kind == "f"
                        else col)
    out = values.tolist()
    mask = getattr(col, "mask", None)
    if mask is not None and np.any(mask):
        out = [None if m else v for v, m in zip(out, np.asarray(mask).tolist())]
    return out


def _world(cands, sci_header, x0, y0):
    if "ra" in cands.colnames and "dec" in cands.colnames:
        return np.asarray(cands["ra"], float), np.asarray(cands["dec"], float)
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(sci_header)
    if not wcs.has_celestial:
        raise MissingKeywordError(sci_header.get("FILENAME"), "CTYPE1")
    ra, dec = wcs.all_pix2world(x0, y0, 0)
    return np.asarray(ra, float) % 360.0, np.asarray(dec, float)


def candidate_records(cands: Table, sci_header, diff_header, *, ref_header=None, associations: Table | None = None,
                      programid: int = 1) -> list[dict]:
    """The alert schema's ``candidate`` record of every row of a candidates table.

    Parameters
    ----------
    cands : `~astropy.table.Table`
        Our candidates (``run_subtract``'s ``candidates`` product): ``tblid``, ``xpos``, ``ypos`` (0-based
        [px]), ``isdiffpos``, ``scorr``, ``magpsf``, ``sigmapsf``, ``chipsf``, ``magap``, ``sigmagap``,
        ``magapbig``, ``sigmagapbig``, ``magdiff``, ``aimage``, ``bimage``, ``elong``, ``fwhm`` [px],
        ``nbad``, ``nneg``, ``sumrat``, ``distnr`` [px], ``magnr``, ``sigmagnr``, ``chinr``, ``sharpnr``,
        ``rb``, ``drb``; optional ``ra``, ``dec`` [deg] (else from the science WCS), ``ranr``, ``decnr``
        [deg] (the nearest reference source; -999 when absent), ``sky``, ``classtar``, ``dsnrms``,
        ``ssnrms``, ``dsdiff``.
    sci_header, diff_header : `~astropy.io.fits.Header`
        See `image_context`; the science header also gives the WCS, ``PIXSCALE`` and ``SEEING``.
    ref_header : `~astropy.io.fits.Header`, optional
        Reference header (for reference metadata the difference header lacks).
    associations : `~astropy.table.Table`, optional
        One row per candidate, in the same order, with any candidate fields to set: the PS1 / Gaia /
        solar-system columns of `ztfsds.alerts.associations` (``hstack`` them), ``ndethist``,
        ``ncovhist``, ``jdstarthist``, ``jdendhist`` from the database, ``ranr``/``decnr``/``distnr``...
        of `~ztfsds.alerts.associations.reference_neighbours`. Masked values become null.
    programid : int, optional

    Returns
    -------
    list of dict
        One record per row with all 103 fields of schema 4.02, in table order. Without associations,
        ``ndethist = ncovhist = 1``, ``jdstarthist = jdendhist = jd`` and ``nmtchps = 0``.

    Raises
    ------
    ztfsds.errors.MissingKeywordError
        A header lacks a keyword the records need (``OBSJD``, ``FIELDID``, the WCS ...).
    ztfsds.errors.AlertPacketError
        ``associations`` has another length than ``cands``.
    """
    n = len(cands)
    if associations is not None and len(associations) != n:
        raise AlertPacketError(None, f"associations have {len(associations)} rows for {n} candidates")
    ctx = image_context(sci_header, diff_header, ref_header=ref_header, programid=programid)
    if n == 0:
        return []
    x0 = np.asarray(cands["xpos"], float)
    y0 = np.asarray(cands["ypos"], float)
    ra, dec = _world(cands, sci_header, x0, y0)
    xpos, ypos = x0 + 1.0, y0 + 1.0
    mindtoedge = np.minimum.reduce([xpos, ypos, ctx["naxis1"] + 0.5 - xpos, ctx["naxis2"] + 0.5 - ypos])
    cols = {name: _column(cands, name, n) for name in _COPIED}
    fwhm = np.asarray([np.nan if v is None else v for v in cols["fwhm"]], float)
    magap = np.asarray([np.nan if v is None else v for v in cols["magap"]], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        a_rat = np.asarray([np.nan if v is None else v for v in cols["aimage"]], float) / fwhm
        b_rat = np.asarray([np.nan if v is None else v for v in cols["bimage"]], float) / fwhm
        seeing = ctx["sciinpseeing"]
        seeratio = np.minimum((seeing if seeing and seeing > 0 else np.nan) / fwhm, _SEERATIO_MAX)
    diffmaglim = ctx["diffmaglim"]
    magfromlim = (diffmaglim - magap) if diffmaglim is not None else np.full(n, np.nan)
    # nearest reference-catalog source: ZTF's -999 when none lies within 30 arcsec
    near = {name: np.asarray(_column(cands, name, n), float) for name in _NEAREST}
    ranr = np.asarray(_column(cands, "ranr", n), float)
    decnr = np.asarray(_column(cands, "decnr", n), float)
    none_near = ~np.isfinite(near["distnr"]) | (near["distnr"] * ctx["pixscale"] > REFERENCE_RADIUS)
    for name in _NEAREST:
        near[name] = np.where(none_near, SENTINEL, near[name])
    ranr = np.where(none_near | ~np.isfinite(ranr), SENTINEL, ranr)
    decnr = np.where(none_near | ~np.isfinite(decnr), SENTINEL, decnr)

    base = {name: None for name in field_names("candidate")}
    base.update({k: ctx[k] for k in base.keys() & ctx.keys()})
    base.update(ndethist=1, ncovhist=1, jdstarthist=ctx["jd"], jdendhist=ctx["jd"], nmtchps=0)
    pid = ctx["pid"]
    computed = {
        "ra": ra.tolist(), "dec": dec.tolist(), "xpos": xpos.tolist(), "ypos": ypos.tolist(),
        "mindtoedge": mindtoedge.tolist(), "aimagerat": a_rat.tolist(), "bimagerat": b_rat.tolist(),
        "seeratio": seeratio.tolist(), "magfromlim": np.asarray(magfromlim, float).tolist(),
        "ranr": ranr.tolist(), "decnr": decnr.tolist(), **{k: v.tolist() for k, v in near.items()},
    }
    override = {}
    if associations is not None:
        fields = set(base)
        for name in associations.colnames:
            if name in fields:
                override[name] = _column(associations, name, n)
    records = []
    for i in range(n):
        rec = dict(base)
        for name, values in cols.items():
            rec[name] = values[i]
        for name, values in computed.items():
            rec[name] = values[i]
        for name, values in override.items():
            rec[name] = values[i]
        isdiffpos = rec["isdiffpos"]
        isdiffpos = (isdiffpos.decode() if isinstance(isdiffpos, bytes) else str(isdiffpos)).strip()
        rec["isdiffpos"] = isdiffpos
        tblid = int(rec["tblid"])
        rec["tblid"] = tblid
        rec["candid"] = ids.candid(pid, tblid, isdiffpos)
        records.append(_finish(rec, "candidate"))
    return records


_INT_TYPES = ("int", "long")


def _clean(rec: dict, required: dict) -> None:
    """Non-finite floats -> None (nullable) or -999 (required); numpy scalars -> Python; ints as ints."""
    for key, value in rec.items():
        if value is None:
            if key in required:
                rec[key] = _required_default(key, required[key])
            continue
        if isinstance(value, float) or isinstance(value, np.floating):
            value = float(value)
            if not math.isfinite(value):
                value = SENTINEL if key in required else None
            elif required.get(key) in _INT_TYPES:
                value = int(round(value))
            rec[key] = value
        elif isinstance(value, (np.integer, np.bool_)):
            rec[key] = int(value)
        elif isinstance(value, bytes):
            rec[key] = value.decode()
        elif isinstance(value, np.str_):
            rec[key] = str(value)


def _required_default(key, avro_type):
    if avro_type in _INT_TYPES:
        return -999 if key not in ("ndethist", "ncovhist", "nmtchps", "nmatches", "nframesref") else 0
    if avro_type in ("float", "double"):
        return SENTINEL
    return ""


_INT_FIELDS_CACHE: dict = {}


def _int_fields(record: str) -> set:
    if record not in _INT_FIELDS_CACHE:
        from .schema import _record, _RECORDS

        ints = set()
        for f in _record(_RECORDS[record], SCHEMA_VERSION)["fields"]:
            types = f["type"] if isinstance(f["type"], list) else [f["type"]]
            if any(t in _INT_TYPES for t in types):
                ints.add(f["name"])
        _INT_FIELDS_CACHE[record] = ints
    return _INT_FIELDS_CACHE[record]


def _finish(rec: dict, record: str) -> dict:
    required = required_fields(record)
    _clean(rec, required)
    for key in _int_fields(record):
        if isinstance(rec.get(key), float):
            rec[key] = int(round(rec[key]))
    return rec


def prv_candidate_from_candidate(candidate: dict) -> dict:
    """The ``prv_candidate`` record of an earlier detection (its candidate record, 57 fields kept).

    Parameters
    ----------
    candidate : dict
        A ``candidate`` record (from `candidate_records`, the database, or a real packet).

    Returns
    -------
    dict
    """
    rec = {name: candidate.get(name) for name in field_names("prv_candidate")}
    return _finish(rec, "prv_candidate")


def upper_limit_record(jd: float, fid: int, pid: int, diffmaglim: float | None, *, programid: int = 1,
                       rbversion: str = "", **fields) -> dict:
    """The ``prv_candidate`` record of an earlier non-detection (an upper limit).

    Parameters
    ----------
    jd : float
        Exposure start [JD].
    fid, pid : int
        Filter and processed-image id of the image.
    diffmaglim : float or None
        5-sigma limit of its difference image [mag].
    programid : int, optional
    rbversion : str, optional
        Required by the schema (real upper limits carry the image's model version).
    **fields
        Other image-level ``prv_candidate`` fields (``field``, ``rcid``, ``nid``, ``pdiffimfilename``,
        ``programpi``, ``magzpsci``, ``magzpsciunc``, ``magzpscirms``, ``clrcoeff``, ``clrcounc``).

    Returns
    -------
    dict
        All 57 fields; ``candid``, ``isdiffpos``, ``ra``, ``dec``, ``magpsf``, ``sigmapsf``, ``ranr``,
        ``decnr`` and every measurement null.

    Raises
    ------
    ztfsds.errors.AlertPacketError
        A keyword is not a ``prv_candidate`` field.
    """
    names = field_names("prv_candidate")
    unknown = set(fields) - set(names)
    if unknown:
        raise AlertPacketError(None, f"not prv_candidate fields: {sorted(unknown)}")
    rec = dict.fromkeys(names)
    rec.update(fields)
    rec.update(jd=float(jd), fid=int(fid), pid=int(pid), diffmaglim=_num(diffmaglim), programid=int(programid),
               rbversion=str(rbversion))
    return _finish(rec, "prv_candidate")


_UL_CONTEXT = ("field", "rcid", "nid", "pdiffimfilename", "programpi", "magzpsci", "magzpsciunc", "magzpscirms",
               "clrcoeff", "clrcounc")


def upper_limit_from_headers(sci_header, diff_header=None, *, ref_header=None, programid: int = 1) -> dict:
    """The upper-limit ``prv_candidate`` record of one earlier image, from its headers (see `image_context`)."""
    ctx = image_context(sci_header, diff_header, ref_header=ref_header, programid=programid)
    return upper_limit_record(ctx["jd"], ctx["fid"], ctx["pid"], ctx["diffmaglim"], programid=programid,
                              rbversion=ctx["rbversion"], **{k: ctx[k] for k in _UL_CONTEXT})


def fp_hist_record(*, jd: float, fid: int, pid: int, rfid: int, programid: int = 1, ranr: float = SENTINEL,
                   decnr: float = SENTINEL, **fields) -> dict:
    """One ``fp_hist`` record (forced photometry on one earlier difference image).

    Parameters
    ----------
    jd : float
        Exposure start [JD].
    fid, pid, rfid : int
        Filter, processed-image id and reference id of the image.
    programid : int, optional
    ranr, decnr : float, optional
        Nearest reference-catalog source [deg] (required by the schema; -999 when unknown).
    **fields
        Other ``fp_hist`` fields: ``field``, ``rcid``, ``sciinpseeing`` [px], ``scibckgnd``, ``scisigpix``
        [DN], ``magzpsci``, ``magzpsciunc``, ``magzpscirms``, ``clrcoeff``, ``clrcounc``, ``exptime`` [s],
        ``adpctdif1``, ``adpctdif2`` [arcsec], ``diffmaglim`` [mag], ``forcediffimflux``,
        ``forcediffimfluxunc`` [DN at ``magzpsci``], ``procstatus`` (str), ``distnr`` [arcsec],
        ``magnr``, ``sigmagnr``, ``chinr``, ``sharpnr``.

    Returns
    -------
    dict
        All 29 fields (absent ones null).

    Raises
    ------
    ztfsds.errors.AlertPacketError
        A keyword is not an ``fp_hist`` field.
    """
    names = field_names("fp_hist")
    unknown = set(fields) - set(names)
    if unknown:
        raise AlertPacketError(None, f"not fp_hist fields: {sorted(unknown)}")
    rec = dict.fromkeys(names)
    rec.update(fields)
    rec.update(jd=float(jd), fid=int(fid), pid=int(pid), rfid=int(rfid), programid=int(programid),
               ranr=float(ranr), decnr=float(decnr))
    if rec.get("procstatus") is not None:
        rec["procstatus"] = str(rec["procstatus"])
    return _finish(rec, "fp_hist")


# ZFPS column -> fp_hist field
_ZFPS_MAP = {"field": "field", "pid": "pid", "rfid": "rfid", "sciinpseeing": "sciinpseeing", "scibckgnd": "scibckgnd",
             "scisigpix": "scisigpix", "zpmaginpsci": "magzpsci", "zpmaginpsciunc": "magzpsciunc",
             "zpmaginpscirms": "magzpscirms", "clrcoeff": "clrcoeff", "clrcoeffunc": "clrcounc", "exptime": "exptime",
             "adpctdif1": "adpctdif1", "adpctdif2": "adpctdif2", "diffmaglim": "diffmaglim", "programid": "programid",
             "jd": "jd", "forcediffimflux": "forcediffimflux", "forcediffimfluxunc": "forcediffimfluxunc",
             "procstatus": "procstatus", "dnearestrefsrc": "distnr", "nearestrefmag": "magnr",
             "nearestrefmagunc": "sigmagnr", "nearestrefchi": "chinr", "nearestrefsharp": "sharpnr",
             "ranr": "ranr", "decnr": "decnr"}
_ZFPS_NULL = -99999.0
_KEEP_NULL = ("forcediffimflux", "forcediffimfluxunc")  # ZTF writes -99999 there on failure


def fp_hists_from_forced(forced: Table, *, ranr: float = SENTINEL, decnr: float = SENTINEL,
                         programid: int | None = None) -> list[dict]:
    """``fp_hist`` records from a forced-photometry table with ZFPS columns (`ztfsds.photom.forced`).

    Parameters
    ----------
    forced : `~astropy.table.Table` or list of dict
        One row per earlier difference image at the candidate's position: ``field``, ``ccdid``, ``qid``,
        ``filter`` (``'ZTF_g'``...), ``pid``, ``rfid``, ``jd``, ``zpmaginpsci``..., ``forcediffimflux``,
        ``forcediffimfluxunc`` [DN], ``procstatus``, ``dnearestrefsrc`` [arcsec], ``nearestrefmag``...
        (`~ztfsds.photom.forced.ZFPS_COLUMNS`); optional ``ranr``, ``decnr``. The service's null
        (-99999, or NaN as `~ztfsds.photom.forced.read_forced_photometry` gives it) becomes null, except in
        the fluxes, where ZTF writes -99999 (with ``procstatus`` saying why).
    ranr, decnr : float, optional
        The candidate's nearest reference source [deg], for rows without their own.
    programid : int, optional
        Overrides the table's ``programid``.

    Returns
    -------
    list of dict
        Sorted by ``jd``.
    """
    names = set(field_names("fp_hist"))
    rows = []
    if isinstance(forced, Table):
        cols = forced.colnames
    else:  # rows as dicts (the service's per-image rows)
        forced = list(forced)
        cols = list(forced[0]) if forced else []
    for row in forced:
        rec = {}
        for src, dst in _ZFPS_MAP.items():
            if src not in cols:
                continue
            value = row[src]
            if np.ma.is_masked(value):
                value = None
            elif isinstance(value, (float, np.floating)) and float(value) == _ZFPS_NULL and dst not in _KEEP_NULL:
                value = None
            elif isinstance(value, (int, np.integer)) and int(value) == int(_ZFPS_NULL) and dst not in _KEEP_NULL:
                value = None
            elif isinstance(value, (str, np.str_)) and str(value).strip().lower() == "null":
                value = None
            rec[dst] = value
        for key in _KEEP_NULL:
            if key in rec and _num(rec[key]) is None:
                rec[key] = _ZFPS_NULL
        if "filter" in cols:
            rec["fid"] = _FILTER_IDS.get(str(row["filter"]).strip().lower())
        if "ccdid" in cols and "qid" in cols and "rcid" not in rec:
            rec["rcid"] = 4 * (int(row["ccdid"]) - 1) + int(row["qid"]) - 1
        if programid is not None:
            rec["programid"] = programid
        rec.setdefault("ranr", ranr)
        rec.setdefault("decnr", decnr)
        for key in ("ranr", "decnr"):
            if rec[key] is None:
                rec[key] = SENTINEL
        missing = [k for k in ("jd", "fid", "pid", "rfid") if rec.get(k) is None]
        if missing:
            raise AlertPacketError(None, f"forced-photometry row {len(rows)} lacks {missing} (fp_hist needs them)")
        rec.setdefault("programid", 1)
        rows.append(fp_hist_record(**{k: v for k, v in rec.items() if k in names}))
    rows.sort(key=lambda r: r["jd"])
    return rows


def _cutout(value, name: str, header):
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, (bytes, bytearray)):
        return {"fileName": name, "stampData": bytes(value)}
    return {"fileName": name, "stampData": cutout_bytes(value, header=header)}


def make_alert(candidate: dict, *, objectid: str, prv_candidates: list[dict] | None = None,
               fp_hists: list[dict] | None = None, cutouts=None, cutout_headers=None,
               schemavsn: str = SCHEMA_VERSION, publisher: str = PUBLISHER) -> dict:
    """One alert packet (a dict in the 4.02 ``ztf.alert`` schema).

    Parameters
    ----------
    candidate : dict
        The ``candidate`` record (`candidate_records`).
    objectid : str
        ``ZTFyyaaaaaaa`` (`ztfsds.products.objectid_from_number`, from the positional association).
    prv_candidates : list of dict, optional
        Earlier detections (`prv_candidate_from_candidate`) and upper limits (`upper_limit_record`) of
        the last 30 days; sorted by ``jd`` here. None or empty: null.
    fp_hists : list of dict, optional
        ``fp_hist`` records (`fp_hist_record`); sorted by ``jd``. None or empty: null.
    cutouts : (sci, ref, diff), optional
        The three stamps [DN] as arrays (gzipped-FITS here; ``diff`` is D = science - reference as the
        pipeline makes it: for a negative candidate the packet holds -D, reference minus science, as
        IPAC's do), as ready ``stampData`` bytes, or as ``{fileName, stampData}`` dicts; None entries or
        None: null cutouts.
    cutout_headers : (dict, dict, dict), optional
        Extra FITS cards per cutout (`ztfsds.alerts.cutout.cutout_bytes`).
    schemavsn : str, optional
    publisher : str, optional

    Returns
    -------
    dict
    """
    candid = int(candidate["candid"])
    negative = str(candidate.get("isdiffpos", "t")) in ("f", "0")
    names = cutout_filenames(candid, int(candidate["pid"]), str(candidate.get("isdiffpos", "t")))
    if cutouts is None:
        cutouts = (None, None, None)
    if len(cutouts) != 3:
        raise AlertPacketError(None, f"candid {candid}: cutouts must be (science, template, difference)")
    headers = cutout_headers if cutout_headers is not None else (None, None, None)
    sci, ref, diff = cutouts
    if negative and diff is not None and not isinstance(diff, (bytes, bytearray, dict)):
        diff = -np.asarray(diff, np.float32)
    prv = sorted(prv_candidates, key=lambda r: r["jd"]) if prv_candidates else None
    fph = sorted(fp_hists, key=lambda r: r["jd"]) if fp_hists else None
    return {
        "schemavsn": str(schemavsn), "publisher": str(publisher), "objectId": str(objectid), "candid": candid,
        "candidate": candidate, "prv_candidates": prv, "fp_hists": fph,
        "cutoutScience": _cutout(sci, names[0], headers[0]),
        "cutoutTemplate": _cutout(ref, names[1], headers[1]),
        "cutoutDifference": _cutout(diff, names[2], headers[2]),
    }
