"""ZTF identifier arithmetic, as the real archive and alert stream use it.

All relations were checked against the ids in real ZTF alert packets (schemas 2.0-3.5) and a real
science-image header (ZTF_REFERENCE.md section 3.4):

- ``nid``: UT night = days since 2017-01-01 (UT date of the exposure).
- ``filefracday``: ``YYYYMMDD`` + 6 digits of the UT fraction of day at exposure start.
- ``expid = nid * 10**5 + floor(fracday * 10**5)``.
- ``pid = expid * 10**4 + rcid * 100 + pipeline`` (pipeline id 15 for the realtime pipeline).
- ``dbrid = expid * 100 + rcid`` (raw quadrant-image id, header ``DBRID``).
- ``candid = pid * 10**6 + 10000 + 5000 * (isdiffpos == 't') + tblid`` (2019 onwards; 2018 data used
  other prefixes, which `parse_candid` still decodes into pid and the 6-digit code).
- ``rfid = field * 10**6 + 120000 + fid * 100 + rcid`` (the reference-image id seen in alerts).
- ``fcqfid = field * 10**4 + ccdid * 100 + qid * 10 + fid``.
- ``objectId = 'ZTF' + yy + 7 lowercase letters`` (a base-26 running number per year).
- public-release lightcurve ``oid = field * 10**12 + fid * 10**11 + ccdid * 10**9 + qid * 10**8 + n``
  (inferred from DR files; the running number n is below 10**8).

Times are Julian dates on the UTC scale (alert ``jd``, header ``OBSJD``: exposure start) or
`astropy.time.Time` objects.
"""

from __future__ import annotations

import datetime as _dt
import math
import re

__all__ = [
    "PIPELINE_ID",
    "NID_EPOCH",
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

#: Pipeline id of the realtime science pipeline (the last two digits of every real ``pid``).
PIPELINE_ID = 15
#: Night 0 of the ``nid`` count (UT date).
NID_EPOCH = _dt.date(2017, 1, 1)

_MJD_JD_OFFSET = 2400000.5
_MJD_NID_EPOCH = 57754  # MJD of 2017-01-01
_OBJECTID_RE = re.compile(r"^ZTF(\d{2})([a-z]{7})$")
_OBJECTID_MAX = 26**7


def _jd(time) -> float:
    """A UTC Julian date from a float JD or an astropy Time."""
    if hasattr(time, "utc"):
        return float(time.utc.jd)
    return float(time)


def _mjd_parts(time) -> tuple[int, float]:
    """Split a time into (integer UT MJD, fraction of UT day)."""
    # Work in MJD (smaller numbers, fraction well resolved) and guard the 1e-9 day rounding of the
    # float so that an exact day boundary never falls on the previous day.
    mjd = _jd(time) - _MJD_JD_OFFSET
    day = math.floor(mjd + 1e-10)
    return day, max(mjd - day, 0.0)


def nid(time) -> int:
    """Night id: UT days since 2017-01-01.

    Parameters
    ----------
    time : float or `~astropy.time.Time` or `datetime.date`
        Julian date (UTC) of the exposure, a Time, or a UT calendar date.

    Returns
    -------
    int

    Examples
    --------
    >>> from ztfsds.products import nid
    >>> nid(2459116.9317708)  # the real quadrant of 2020-09-24
    1362
    """
    if isinstance(time, _dt.date):
        return (time - NID_EPOCH).days
    return _mjd_parts(time)[0] - _MJD_NID_EPOCH


def night_date(nid_value: int) -> _dt.date:
    """The UT date of night ``nid``."""
    return NID_EPOCH + _dt.timedelta(days=int(nid_value))


def filefracday(time) -> str:
    """``YYYYMMDDdddddd``: UT date and 6 digits of the fraction of day (the exposure id of file names).

    Examples
    --------
    >>> from ztfsds.products import filefracday
    >>> filefracday(2459116.9317708)
    '20200924431770'
    """
    day, frac = _mjd_parts(time)
    date = night_date(day - _MJD_NID_EPOCH)
    return f"{date:%Y%m%d}{min(int(frac * 1e6 + 1e-6), 999999):06d}"


def expid(time) -> int:
    """Exposure id ``nid * 10**5 + floor(fracday * 10**5)`` for an exposure starting at ``time``.

    ``time`` may also be a ``filefracday`` string (``'20200924431759'``). ztfsds stamps file names and
    ``OBSJD`` with the same instant, so for its own products both give the header ``EXPID``. Real IPAC
    file names are stamped about a second before ``OBSJD`` (the sample quadrant: file 0.431759 d,
    OBSJD 0.4317708 d, EXPID 136243177), so for real files read ``EXPID`` from the header.

    Examples
    --------
    >>> from ztfsds.products import expid
    >>> expid('20200924431759')
    136243175
    """
    if isinstance(time, str):
        if not re.fullmatch(r"\d{14}", time):
            raise ValueError(f"not a filefracday 'YYYYMMDDdddddd': {time!r}")
        date = _dt.datetime.strptime(time[:8], "%Y%m%d").date()
        return nid(date) * 100000 + int(time[8:13])
    day, frac = _mjd_parts(time)
    return (day - _MJD_NID_EPOCH) * 100000 + min(int(frac * 1e5 + 1e-7), 99999)


def parse_expid(expid_value: int) -> tuple[int, float]:
    """Split an exposure id into (nid, fraction of UT day, to 1e-5 day)."""
    expid_value = int(expid_value)
    return expid_value // 100000, (expid_value % 100000) / 1e5


def _check_rcid(rcid: int) -> int:
    rcid = int(rcid)
    if not 0 <= rcid <= 63:
        raise ValueError(f"rcid must be 0..63, got {rcid}")
    return rcid


def pid(expid_value: int, rcid: int, pipeline: int = PIPELINE_ID) -> int:
    """Processed-image id ``expid * 10**4 + rcid * 100 + pipeline`` (header ``DBPID``).

    Examples
    --------
    >>> from ztfsds.products import pid
    >>> pid(136243177, 50)
    1362431775015
    """
    if not 0 <= int(pipeline) <= 99:
        raise ValueError(f"pipeline id must be 0..99, got {pipeline}")
    return int(expid_value) * 10000 + _check_rcid(rcid) * 100 + int(pipeline)


def parse_pid(pid_value: int) -> tuple[int, int, int]:
    """Split a pid into (expid, rcid, pipeline id)."""
    pid_value = int(pid_value)
    return pid_value // 10000, (pid_value // 100) % 100, pid_value % 100


def dbrid(expid_value: int, rcid: int) -> int:
    """Raw quadrant-image id ``expid * 100 + rcid`` (header ``DBRID``)."""
    return int(expid_value) * 100 + _check_rcid(rcid)


def candid(pid_value: int, tblid: int, isdiffpos: bool | str) -> int:
    """Candidate id ``pid * 10**6 + 10000 + 5000 * positive + tblid``.

    Parameters
    ----------
    pid_value : int
        Processed-image id of the science image.
    tblid : int
        Index of the candidate in the quadrant's candidate table (0..4999).
    isdiffpos : bool or {'t', 'f', '1', '0'}
        True for a positive (science brighter than reference) candidate.

    Examples
    --------
    >>> from ztfsds.products import candid
    >>> candid(1628364324215, 17, 'f')
    1628364324215010017
    """
    if isinstance(isdiffpos, str):
        if isdiffpos not in ("t", "f", "1", "0"):
            raise ValueError(f"isdiffpos must be 't', 'f', '1' or '0', got {isdiffpos!r}")
        positive = isdiffpos in ("t", "1")
    else:
        positive = bool(isdiffpos)
    tblid = int(tblid)
    if not 0 <= tblid < 5000:
        raise ValueError(f"tblid must be 0..4999, got {tblid}")
    return int(pid_value) * 10**6 + 10000 + 5000 * positive + tblid


def parse_candid(candid_value: int) -> tuple[int, int]:
    """Split a candid into (pid, 6-digit candidate code); for 2019+ codes, ``code - 10000 - 5000*pos``
    is the tblid."""
    candid_value = int(candid_value)
    return candid_value // 10**6, candid_value % 10**6


def rfid(field: int, fid: int, rcid: int) -> int:
    """Reference-image id ``field * 10**6 + 120000 + fid * 100 + rcid`` (as in real alerts)."""
    return int(field) * 10**6 + 120000 + int(fid) * 100 + _check_rcid(rcid)


def fcqfid(field: int, ccdid: int, qid: int, fid: int) -> int:
    """The field/CCD/quadrant/filter id used to group forced-photometry baselines.

    Examples
    --------
    >>> from ztfsds.products import fcqfid
    >>> fcqfid(506, 3, 3, 1)
    5060331
    """
    return int(field) * 10**4 + int(ccdid) * 100 + int(qid) * 10 + int(fid)


def parse_fcqfid(value: int) -> tuple[int, int, int, int]:
    """Split an fcqfid into (field, ccdid, qid, fid)."""
    value = int(value)
    return value // 10**4, (value // 100) % 100, (value // 10) % 10, value % 10


def objectid_from_number(year: int, number: int) -> str:
    """ZTF object id ``ZTF<yy><7 letters>`` for the ``number``-th object first detected in ``year``.

    The letters are ``number`` in base 26 (a=0), most significant first, so ids sort in the order
    they were assigned: 0 -> ``ZTF18aaaaaaa``, 1 -> ``ZTF18aaaaaab``.

    Examples
    --------
    >>> from ztfsds.products import objectid_from_number, objectid_to_number
    >>> objectid_from_number(2018, 27)
    'ZTF18aaaaabb'
    >>> objectid_to_number('ZTF18abmmoot')
    (2018, 17585847)
    """
    number = int(number)
    if not 0 <= number < _OBJECTID_MAX:
        raise ValueError(f"object number must be 0..{_OBJECTID_MAX - 1}, got {number}")
    letters = []
    for _ in range(7):
        number, r = divmod(number, 26)
        letters.append(chr(ord("a") + r))
    return f"ZTF{int(year) % 100:02d}{''.join(reversed(letters))}"


def objectid_to_number(object_id: str) -> tuple[int, int]:
    """Decode ``ZTF<yy><7 letters>`` into (year, running number); inverse of `objectid_from_number`."""
    match = _OBJECTID_RE.match(object_id)
    if match is None:
        raise ValueError(f"not a ZTF object id 'ZTFyyaaaaaaa': {object_id!r}")
    number = 0
    for ch in match.group(2):
        number = number * 26 + (ord(ch) - ord("a"))
    return 2000 + int(match.group(1)), number


def lightcurve_oid(field: int, fid: int, ccdid: int, qid: int, number: int) -> int:
    """Public-release lightcurve object id ``field*10**12 + fid*10**11 + ccdid*10**9 + qid*10**8 + n``."""
    if not 0 <= int(number) < 10**8:
        raise ValueError(f"running number must be 0..99999999, got {number}")
    return int(field) * 10**12 + int(fid) * 10**11 + int(ccdid) * 10**9 + int(qid) * 10**8 + int(number)
