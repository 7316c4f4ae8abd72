"""``ztfsds archive serve``: the archive as a read-only HTTP service (FastAPI + uvicorn) and a web page.

Every endpoint answers from the same public functions as the Python API (`search_images`,
`cone_search`, `search_alerts`, `get_packet_bytes`, `alert_cutouts`, `alert_history`,
`~ztfsds.match.query_lightcurves`...); the service adds parameter validation, access control and
serialisation only. `create_app` builds the ASGI application, `serve` runs it with uvicorn. FastAPI
publishes the OpenAPI description at ``/openapi.json`` (and a browsable one at ``/docs``).

==============================================  ===================================================
``GET /api/images``                             `search_images` (position, field, ccdid, qid, fid,
                                                time, seeing, maglim, INFOBITS) -> JSON rows
``GET /api/images/{pid}``                       one quadrant-image's metadata
``GET /api/images/{pid}/products/{suffix}``     a product file of that image (``sciimg``,
                                                ``mskimg``, ``psfcat``, ``scimrefdiffimg``...)
``GET /api/images/{pid}/cutout``                a cutout around (ra, dec): FITS with its WCS, or PNG
``GET /api/catalogs/{table}``                   `cone_search` of ``sources`` or ``candidates``
``GET /lightcurves``                            IRSA's lightcurve service (`query_lightcurves`):
                                                ``ID POS CIRCLE BAND BANDNAME MAG NUM_OBS TIME
                                                BAD_CATFLAGS_MASK COLLECTION FORMAT``; also at IRSA's
                                                path ``/cgi-bin/ZTF/nph_light_curves``
``GET /lightcurves/plot``                       the same query as a PNG (`plot_lightcurve`)
``GET /api/alerts``                             `search_alerts` (objectid, cone, time, mag, rb, drb)
``GET /api/alerts/{candid}``                    one packet: an Avro container in its writer schema
``GET /api/alerts/{candid}/cutouts/{kind}``     science / template / difference stamp, PNG or FITS
``GET /api/objects/{objectid}/history``         `alert_history`
``GET /api/status``                             version, engine, what this request may see
``GET /``                                       the web page (search by name or position)
==============================================  ===================================================

Access control
--------------
ZTF data belong to programs: ``programid`` 1 is the public (MSIP) survey, 2 the partnership, 3
Caltech, 0 engineering. A row, packet, epoch or image is **public** when its programid is in
``public_programids`` (default ``{1}``) or when it is older than ``public_after_days`` (default 365
days: proprietary data become public a year after they were taken; None keeps them proprietary).
Anything else is visible only to a request carrying ``Authorization: Bearer <token>`` whose token
grants that programid (`load_tokens`: a TOML or JSON file mapping token -> programids). A row of
unknown programid (NULL, -1) is public only by its age, one of unknown time only by its program. The rule applies to every endpoint:
searches drop the rows, single items answer 404 (the same answer as for an item that does not exist,
so that their existence does not leak), a public packet's ``prv_candidates`` and an object's history
lose their proprietary epochs (as the public alert stream's do), lightcurves lose their proprietary
epochs (and ``NUM_OBS`` / ``MAG`` are then judged on the visible epochs only). An unknown token, or an
``Authorization`` header that is not ``Bearer <token>``, is answered 401.

Errors
------
Malformed parameters get a 4xx answer with a JSON body ``{"detail": "<what is wrong>"}``: 422 for a
parameter of the wrong type or out of range (FastAPI's validation; ``detail`` then lists the errors and
``message`` says them in one line), 400 for an inconsistent query (a cone without radius, an unknown
lightcurve parameter), 404 for an unknown or invisible item, 401 for a bad token.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import hmac
import io
import json
import logging
import math
import tempfile
import threading
import warnings
import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Literal, Mapping, get_args

import numpy as np
from astropy.table import Table

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .._version import __version__
from ..errors import ArchiveError, ConfigError, ZTFSDSError
from ..match.lightcurve_api import parse_query, plot_lightcurve, query_lightcurves, write_lightcurves
from ..products import ProductKey, ProductStore
from .alertstore import alert_cutouts, alert_history, get_alerts, get_packet_bytes, search_alerts
from .db import connect
from .query import cone_search, search_images
from .schema import current_version

__all__ = ["create_app", "serve", "AccessPolicy", "Grant", "load_tokens", "PUBLIC_PROGRAMIDS", "PUBLIC_AFTER_DAYS",
           "IMAGE_PRODUCTS", "MAX_RADIUS_ARCSEC", "MAX_CUTOUT_ARCSEC"]

log = logging.getLogger(__name__)

#: Program ids that are public at once (1: the public MSIP survey).
PUBLIC_PROGRAMIDS = frozenset({1})
#: Age after which data of every program are public [days].
PUBLIC_AFTER_DAYS = 365.0
ImageProduct = Literal["sciimg", "mskimg", "sciimgpsf", "psfcat", "sexcat", "scimrefdiffimg", "diffimgpsf",
                       "diffimgvar", "diffimgmsk", "scorr", "candidates"]
CutoutProduct = Literal["sciimg", "scimrefdiffimg", "scorr", "diffimgvar"]
#: Product suffixes ``/api/images/{pid}/products/{suffix}`` serves (when the file exists).
IMAGE_PRODUCTS = get_args(ImageProduct)
#: Largest cone of the catalog and alert searches [arcsec].
MAX_RADIUS_ARCSEC = 1800.0
#: Largest image cutout side [arcsec].
MAX_CUTOUT_ARCSEC = 1800.0
_MAX_ROWS = 100_000
_MAX_PLOT_OBJECTS = 10
_JD_UNIX = 2440587.5
_INT64 = 2**63 - 1
_OBJECTID = r"^ZTF[0-9]{2}[a-z]{7}$"
_STATIC = ("index.html", "app.js", "style.css")
_MEDIA = {"VOTABLE": "application/x-votable+xml", "IPAC_TABLE": "text/plain; charset=utf-8",
          "CSV": "text/csv; charset=utf-8", "TSV": "text/tab-separated-values; charset=utf-8",
          "HTML": "text/html; charset=utf-8", "PARQUET": "application/vnd.apache.parquet"}
_EXTENSIONS = {"VOTABLE": "xml", "IPAC_TABLE": "tbl", "CSV": "csv", "TSV": "tsv", "HTML": "html",
               "PARQUET": "parquet"}


# -- access control -----------------------------------------------------------------------------------
def load_tokens(source) -> dict[str, frozenset[int]]:
    """Partner tokens and the program ids each may see.

    Parameters
    ----------
    source : path-like or mapping
        A mapping ``{token: programids}``, or a TOML file (``[tokens]`` table) or JSON file (an object,
        or one with a ``"tokens"`` object) mapping each token to a list of program ids::

            [tokens]
            "f3c1...9a" = [2]          # a partnership member
            "77b0...e2" = [2, 3]       # Caltech

    Returns
    -------
    dict
        token -> frozenset of program ids.

    Raises
    ------
    ztfsds.errors.ConfigError
        Unreadable file, a token shorter than 8 characters, or program ids that are not integers 0-99.
    """
    where = "tokens"
    if isinstance(source, Mapping):
        raw = source
    else:
        path = Path(source)
        where = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the token file: {exc}") from exc
        try:
            if path.suffix.lower() == ".json":
                raw = json.loads(text)
            else:
                try:
                    import tomllib
                except ModuleNotFoundError:  # pragma: no cover - Python 3.10
                    import tomli as tomllib
                raw = tomllib.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: not a valid token file ({exc})") from exc
        if isinstance(raw, dict) and isinstance(raw.get("tokens"), dict):
            raw = raw["tokens"]
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping token -> list of program ids")
    tokens: dict[str, frozenset[int]] = {}
    for token, programids in raw.items():
        if not isinstance(token, str) or len(token) < 8 or not token.isprintable() or " " in token:
            raise ConfigError(f"{where}: token {str(token)[:4]!r}...: tokens are printable strings of >= 8 "
                              "characters without spaces")
        values = [programids] if isinstance(programids, int) else programids
        if not isinstance(values, (list, tuple, set, frozenset)) or not all(
                isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 99 for p in values):
            raise ConfigError(f"{where}: token {token[:4]!r}...: program ids must be a list of integers 0-99, "
                              f"got {programids!r}")
        tokens[token] = frozenset(int(p) for p in values)
    return tokens


def _now_jd() -> float:
    return datetime.datetime.now(datetime.timezone.utc).timestamp() / 86400.0 + _JD_UNIX


@dataclass(frozen=True)
class AccessPolicy:
    """Who sees what (see the module notes).

    Attributes
    ----------
    tokens : dict
        Bearer token -> program ids it grants (`load_tokens`).
    public_programids : frozenset of int
        Programs public at once.
    public_after_days : float or None
        Age after which every program's data are public [days]; None: never.
    now_jd : float or None
        The present [JD] for the age rule (None: the clock; set it to replay the archive as of a date).
    """

    tokens: dict = dataclasses.field(default_factory=dict)
    public_programids: frozenset = PUBLIC_PROGRAMIDS
    public_after_days: float | None = PUBLIC_AFTER_DAYS
    now_jd: float | None = None

    def cutoff_jd(self) -> float | None:
        """Data taken before this [JD] are public (None: no age rule)."""
        if self.public_after_days is None:
            return None
        return (self.now_jd if self.now_jd is not None else _now_jd()) - float(self.public_after_days)

    def grant(self, token: str | None) -> "Grant":
        """The access of a request with this bearer token (None: anonymous).

        Raises
        ------
        PermissionError
            An unknown token.
        """
        allowed = set(self.public_programids)
        if token is not None:
            found = None
            for known, programids in self.tokens.items():  # constant-time comparison of every token
                if hmac.compare_digest(known.encode(), token.encode()):
                    found = programids
            if found is None:
                raise PermissionError("unknown bearer token")
            allowed |= found
        return Grant(frozenset(allowed), self.cutoff_jd(), token is not None)


def _floats(values) -> np.ndarray:
    """float64 array of a column, a list with None, or a masked column (NULL/masked -> NaN)."""
    if isinstance(values, (list, tuple)):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.ma.filled(np.ma.asarray(values).astype(np.float64), np.nan)


@dataclass(frozen=True)
class Grant:
    """What one request may see: program ids, and the time before which everything is public."""

    programids: frozenset
    cutoff_jd: float | None
    authenticated: bool = False

    def visible(self, programid, jd) -> np.ndarray:
        """Boolean mask of the rows a request may see (NULL / NaN / negative program ids are proprietary)."""
        programid, jd = _floats(programid), _floats(jd)
        ok = np.isin(programid, sorted(self.programids))
        if self.cutoff_jd is not None:
            with np.errstate(invalid="ignore"):
                ok |= jd < self.cutoff_jd
        return np.asarray(ok, dtype=bool)

    def sql(self, programid: str = "programid", jd: str = "jd") -> tuple[str, list]:
        """The same rule as an SQL condition and its parameters."""
        ids = sorted(self.programids)
        clause = f"{programid} IN ({', '.join('?' * len(ids))})" if ids else "1 = 0"
        params: list = list(ids)
        if self.cutoff_jd is not None:
            clause = f"({clause} OR {jd} < ?)"
            params.append(float(self.cutoff_jd))
        return clause, params


# -- serialisation ------------------------------------------------------------------------------------
def _json_value(value):
    if value is None or value is np.ma.masked:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _table_json(table: Table, columns: Iterable[str] | None = None) -> dict:
    """``{"count": n, "columns": [...], "rows": [{...}, ...]}`` with NaN/masked as null, blobs left out."""
    names = [c for c in (columns or table.colnames) if c in table.colnames and table[c].dtype.kind != "O"]
    lists = {}
    for name in names:
        col = table[name]
        mask = np.ma.getmaskarray(col) if getattr(col, "mask", None) is not None else None
        values = np.asarray(col).tolist()
        if mask is not None and mask.any():
            values = [None if m else v for v, m in zip(values, mask.tolist())]
        lists[name] = [_json_value(v) for v in values] if col.dtype.kind == "f" or mask is not None else values
    rows = [dict(zip(names, vals)) for vals in zip(*(lists[n] for n in names))] if names else []
    return {"count": len(table), "columns": names, "rows": rows}


def _png(image: np.ndarray, title: str | None = None, *, pixels: int = 256) -> bytes:
    """A stamp as a greyscale PNG (zscale stretch, NaN drawn black)."""
    from astropy.visualization import ZScaleInterval
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(data)
    if finite.sum() > 2 and np.ptp(data[finite]) > 0:
        vmin, vmax = ZScaleInterval().get_limits(data[finite])
    else:
        vmin, vmax = 0.0, 1.0
    fig = Figure(figsize=(pixels / 100.0, pixels / 100.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(np.where(finite, data, vmin), origin="lower", cmap="gray", vmin=vmin, vmax=vmax,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.text(0.03, 0.97, title, transform=ax.transAxes, color="yellow", fontsize=7, va="top")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# -- the application ----------------------------------------------------------------------------------
class _Connections:
    """One database connection per server thread (sqlite3 and psycopg connections are not for sharing)."""

    def __init__(self, url: str, store: ProductStore):
        self._url, self._store = url, store
        self._local = threading.local()
        self._all: list = []
        self._lock = threading.Lock()

    def get(self):
        db = getattr(self._local, "db", None)
        if db is None:
            db = connect(self._url, store=self._store)
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()


def _params(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        out.setdefault(key, []).append(value)
    return out


def _visible_epochs(table: Table, query: dict, access: Grant) -> Table:
    """A `query_lightcurves` result without the epochs a request may not see; objects that lost epochs must
    still pass ``NUM_OBS`` and ``MAG`` on their visible epochs."""
    if not len(table):
        return table
    mjd = np.asarray(table["mjd"], dtype=np.float64)
    t = np.where(np.isfinite(mjd), mjd, np.asarray(table["hjd"], dtype=np.float64) - 2400000.5)
    keep = access.visible(np.asarray(table["programid"], dtype=np.float64), t + 2400000.5)
    if keep.all():
        return table
    oid = np.asarray(table["oid"])
    for o in np.unique(oid[~keep]):
        mine = (oid == o) & keep
        mags = np.asarray(table["mag"], dtype=np.float64)[mine]
        fails = np.count_nonzero(mine) < max(query["nobs_min"], 1)
        if query["mag"] is not None and not fails:
            median = np.nanmedian(mags) if np.isfinite(mags).any() else np.nan
            fails = not (query["mag"][0] <= median <= query["mag"][1])
        if fails:
            keep &= oid != o
    return table[keep]


def _nearest_objects(table: Table, cone, n: int) -> Table:
    """At most ``n`` objects of a lightcurve table: the nearest to the cone centre, or the first ids."""
    oids, first = np.unique(np.asarray(table["oid"]), return_index=True)
    if len(oids) <= n:
        return table
    if cone is not None:
        ra0, dec0 = np.radians(cone[0]), np.radians(cone[1])
        ra, dec = np.radians(np.asarray(table["ra"])[first]), np.radians(np.asarray(table["dec"])[first])
        cosd = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
        oids = oids[np.argsort(-np.nan_to_num(cosd, nan=-2.0), kind="stable")]
    return table[np.isin(np.asarray(table["oid"]), oids[:n])]


def _static(name: str) -> bytes:
    return resources.files("ztfsds.archive").joinpath("static", name).read_bytes()


def _not_found(what: str) -> HTTPException:
    return HTTPException(404, f"{what} not found (or proprietary: send a partner token as 'Authorization: Bearer "
                              "<token>')")


_CUTOUT_KEYWORDS = ("OBSJD", "FIELDID", "CCDID", "QID", "FILTERID", "FILTER", "PROGRMID", "EXPTIME", "MAGZP",
                    "MAGZPUNC", "CLRCOEFF", "SEEING", "MAGLIM", "INFOBITS", "GAIN", "SATURATE", "DBPID", "EXPID")


def _image_cutout(path: Path, ra: float, dec: float, size_arcsec: float, pid: int):
    """(data, header) of a cutout of a FITS image around (ra, dec), with the cutout's WCS."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.nddata import Cutout2D, NoOverlapError
    from astropy.wcs import WCS, FITSFixedWarning

    with fits.open(path, memmap=False) as hdul:
        data = np.asarray(hdul[0].data, dtype=np.float32)
        header = hdul[0].header.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header)
        if not wcs.has_celestial or data.ndim != 2:
            raise HTTPException(400, f"image pid={pid} ({path.name}) has no celestial WCS")
        centre = SkyCoord(ra, dec, unit="deg")
        with np.errstate(invalid="ignore"):
            x, y = (float(v) for v in wcs.world_to_pixel(centre))
        off = f"position ra={ra}, dec={dec} is not on image pid={pid} ({path.name})"
        if not (math.isfinite(x) and math.isfinite(y)):       # the far side of the projection
            raise HTTPException(400, off)
        try:
            cut = Cutout2D(data, (x, y), size_arcsec * u.arcsec, wcs=wcs, mode="partial", fill_value=np.nan)
        except NoOverlapError:
            raise HTTPException(400, off) from None
        out = cut.wcs.to_header(relax=True)
    for key in _CUTOUT_KEYWORDS:
        if key in header:
            out[key] = (header[key], header.comments[key][:30])
    out["CUTRA"] = (ra, "[deg] requested centre")
    out["CUTDEC"] = (dec, "[deg] requested centre")
    out["ORIGIN"] = path.name[:68]
    return cut.data, out


def create_app(store_or_root, *, database_url: str | None = None, tokens=None,
               public_after_days: float | None = PUBLIC_AFTER_DAYS,
               public_programids: Iterable[int] = PUBLIC_PROGRAMIDS, now_jd: float | None = None) -> FastAPI:
    """The archive's HTTP service as a FastAPI application.

    Parameters
    ----------
    store_or_root : `~ztfsds.products.ProductStore` or path-like
        Data root: products, ``match/lightcurves/<collection>`` and (by default) the SQLite database.
    database_url : str, optional
        ``postgresql://...`` or ``sqlite:///...`` (default: the data root's embedded SQLite file).
    tokens : mapping or path-like, optional
        Partner tokens (see `load_tokens`); None: only public data are served.
    public_after_days : float or None, optional
        Age after which every program's data are public [days] (default 365); None: never.
    public_programids : iterable of int, optional
        Programs public at once (default ``{1}``).
    now_jd : float, optional
        The present for the age rule [JD] (default: the clock).

    Returns
    -------
    fastapi.FastAPI

    Raises
    ------
    ztfsds.errors.ArchiveError
        The database cannot be opened or holds no archive schema.
    ztfsds.errors.ConfigError
        A bad token file.
    """
    store = store_or_root if isinstance(store_or_root, ProductStore) else ProductStore(store_or_root)
    if public_after_days is not None and not (math.isfinite(float(public_after_days)) and public_after_days >= 0):
        raise ConfigError(f"public_after_days = {public_after_days!r}: must be a number of days >= 0 or None")
    policy = AccessPolicy(tokens=load_tokens(tokens) if tokens is not None else {},
                          public_programids=frozenset(int(p) for p in public_programids),
                          public_after_days=None if public_after_days is None else float(public_after_days),
                          now_jd=now_jd)
    connections = _Connections(database_url or "", store)
    first = connections.get()
    try:
        version = current_version(first)
    except ZTFSDSError:
        connections.close()
        raise
    if version == 0:
        connections.close()
        raise ArchiveError(f"{first.url}: no archive tables (ingest products first)")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        connections.close()

    app = FastAPI(title="ztfsds archive", version=__version__, lifespan=lifespan,
                  description="Read-only access to the ztfsds archive: images, catalogs, lightcurves (with the "
                              "parameters of IRSA's ZTF lightcurve service) and alerts. Data of proprietary "
                              "programs that are not yet public need `Authorization: Bearer <token>`.")
    app.state.policy = policy
    app.state.store = store
    bearer = HTTPBearer(auto_error=False, description="A partner token: data of proprietary programs.")

    def db():
        return connections.get()

    # -- errors ----------------------------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc):
        errors = json.loads(json.dumps(exc.errors(), default=str))
        parts = []
        for e in errors:
            loc = [str(x) for x in e.get("loc", ()) if x not in ("query", "path", "header")]
            given = e.get("input")
            shown = f" (got {str(given)[:60]!r})" if isinstance(given, (str, int, float)) else ""
            parts.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}{shown}")
        return JSONResponse(status_code=422, content={"detail": errors, "message": "; ".join(parts)})

    @app.exception_handler(ZTFSDSError)
    async def _ztfsds_error(request, exc):
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    # -- access ----------------------------------------------------------------------------------
    def grant(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Grant:
        if request.headers.get("authorization") is None:
            return policy.grant(None)
        if credentials is None or not credentials.credentials:
            raise HTTPException(401, "the Authorization header must be 'Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        try:
            return policy.grant(credentials.credentials)
        except PermissionError:
            raise HTTPException(401, "unknown bearer token", headers={"WWW-Authenticate": "Bearer"}) from None

    access_dep = Depends(grant)

    def image_row(pid: int, access: Grant) -> dict:
        rows = db().query_table("SELECT * FROM quadimages WHERE pid = ?", (int(pid),))
        if not len(rows) or not access.visible(rows["programid"], rows["jd"])[0]:
            raise _not_found(f"image pid={pid}")
        return _table_json(rows)["rows"][0]

    def alert_row(candid: int, access: Grant) -> dict:
        rows = db().query_table("SELECT candid, objectid, programid, jd FROM alert_packets WHERE candid = ?",
                                (int(candid),))
        if not len(rows) or not access.visible(rows["programid"], rows["jd"])[0]:
            raise _not_found(f"alert candid={candid}")
        return _table_json(rows)["rows"][0]

    def position(ra, dec, radius=None, *, need_radius=False):
        given = [v is not None for v in ((ra, dec, radius) if need_radius else (ra, dec))]
        if any(given) and not all(given):
            raise HTTPException(400, "a position needs ra and dec" + (" and radius_arcsec" if need_radius else ""))
        return all(given)

    # -- service ---------------------------------------------------------------------------------
    @app.get("/api/status", tags=["service"], summary="Version, database engine and what this request may see")
    def status(access: Grant = access_dep):
        database = db()
        return {"service": "ztfsds archive", "version": __version__, "engine": database.engine,
                "schema_version": current_version(database), "authenticated": access.authenticated,
                "programids": sorted(access.programids), "public_before_jd": access.cutoff_jd}

    # -- images ----------------------------------------------------------------------------------
    @app.get("/api/images", tags=["images"], summary="Search quadrant images (search_images)")
    def images(access: Grant = access_dep,
               ra: float | None = Query(None, ge=-360, le=720, allow_inf_nan=False,
                                        description="RA [deg]: images whose footprint contains (ra, dec)"),
               dec: float | None = Query(None, ge=-90, le=90, allow_inf_nan=False, description="Dec [deg]"),
               field: int | None = Query(None, ge=0, le=99999, description="ZTF field"),
               ccdid: int | None = Query(None, ge=1, le=16, description="CCD (1-16)"),
               qid: int | None = Query(None, ge=1, le=4, description="readout quadrant (1-4)"),
               fid: int | None = Query(None, ge=1, le=3, description="filter id: 1 g, 2 r, 3 i"),
               jd_min: float | None = Query(None, ge=0, le=1e8, allow_inf_nan=False, description="[JD]"),
               jd_max: float | None = Query(None, ge=0, le=1e8, allow_inf_nan=False, description="[JD]"),
               max_seeing: float | None = Query(None, ge=0, le=1e4, allow_inf_nan=False,
                                                description="seeing FWHM at most [px]"),
               min_maglim: float | None = Query(None, ge=-50, le=50, allow_inf_nan=False,
                                                description="limiting magnitude at least [mag]"),
               infobits_mask: int | None = Query(None, ge=0, le=2**62,
                                                 description="only images with none of these INFOBITS"),
               status: int | None = Query(None, ge=-2**31, le=2**31, description="image status (1 usable)"),
               programid: int | None = Query(None, ge=0, le=99, description="program id"),
               limit: int = Query(1000, ge=1, le=_MAX_ROWS, description="at most this many rows")):
        position(ra, dec)
        rows = search_images(db(), ra=ra, dec=dec, field=field, ccdid=ccdid, qid=qid, fid=fid, jd_min=jd_min,
                             jd_max=jd_max, max_seeing=max_seeing, min_maglim=min_maglim,
                             infobits_mask=infobits_mask, status=status, programid=programid)
        rows = rows[access.visible(rows["programid"], rows["jd"])][:limit]
        return JSONResponse(_table_json(rows))

    @app.get("/api/images/{pid}", tags=["images"], summary="One quadrant image's metadata")
    def image(pid: int = PathParam(..., ge=0, le=_INT64), access: Grant = access_dep):
        return JSONResponse(image_row(pid, access))

    @app.get("/api/images/{pid}/products/{suffix}", tags=["images"], summary="A product file of an image (FITS)",
             response_class=FileResponse, responses={200: {"content": {"application/fits": {}}}})
    def image_product(suffix: ImageProduct, pid: int = PathParam(..., ge=0, le=_INT64),
                      access: Grant = access_dep):
        row = image_row(pid, access)
        try:
            key = ProductKey.parse(row["sciimg"]).with_suffix(suffix)
        except ZTFSDSError:
            raise HTTPException(404, f"image pid={pid} has no product file name") from None
        path = store.path(key)
        if not path.is_file():
            raise HTTPException(404, f"image pid={pid}: no {suffix} product ({key.filename})")
        return FileResponse(path, media_type="application/fits", filename=path.name)

    @app.get("/api/images/{pid}/cutout", tags=["images"], summary="A cutout of an image around (ra, dec)",
             response_class=Response, responses={200: {"content": {"application/fits": {}, "image/png": {}}}})
    def image_cutout(pid: int = PathParam(..., ge=0, le=_INT64),
                     ra: float = Query(..., ge=-360, le=720, allow_inf_nan=False, description="[deg]"),
                     dec: float = Query(..., ge=-90, le=90, allow_inf_nan=False, description="[deg]"),
                     size_arcsec: float = Query(60.0, gt=0, le=MAX_CUTOUT_ARCSEC, allow_inf_nan=False,
                                                description="side of the square cutout [arcsec]"),
                     product: CutoutProduct = Query("sciimg", description="image product to cut"),
                     format: Literal["fits", "png"] = Query("fits", description="FITS (with WCS) or PNG"),
                     access: Grant = access_dep):
        row = image_row(pid, access)
        try:
            key = ProductKey.parse(row["sciimg"]).with_suffix(product)
        except ZTFSDSError:
            raise HTTPException(404, f"image pid={pid} has no product file name") from None
        path = store.path(key)
        if not path.is_file():
            raise HTTPException(404, f"image pid={pid}: no {product} product ({key.filename})")
        data, header = _image_cutout(path, ra % 360.0, dec, size_arcsec, pid)
        if format == "png":
            return Response(_png(data, f"pid {pid} {row['filtercode']}"), media_type="image/png")
        from astropy.io import fits

        buf = io.BytesIO()
        fits.PrimaryHDU(data, header).writeto(buf)
        name = f"{key.filename.rsplit('.', 1)[0]}_cutout.fits"
        return Response(buf.getvalue(), media_type="application/fits",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    # -- catalogs --------------------------------------------------------------------------------
    @app.get("/api/catalogs/{table}", tags=["catalogs"], summary="Cone search of PSF-catalog sources or candidates")
    def catalog(table: Literal["sources", "candidates"],
                ra: float = Query(..., ge=-360, le=720, allow_inf_nan=False, description="[deg]"),
                dec: float = Query(..., ge=-90, le=90, allow_inf_nan=False, description="[deg]"),
                radius_arcsec: float = Query(..., gt=0, le=MAX_RADIUS_ARCSEC, allow_inf_nan=False,
                                             description="[arcsec]"),
                limit: int = Query(10000, ge=1, le=_MAX_ROWS, description="at most this many rows (the nearest)"),
                access: Grant = access_dep):
        clause, params = access.sql()
        if table == "sources":       # a source's program and time are its image's
            where = (f"pid IN (SELECT pid FROM quadimages WHERE {clause})", params)
        else:
            where = (clause, params)
        rows = cone_search(db(), table, ra, dec, radius_arcsec, where=where, limit=limit)
        return JSONResponse(_table_json(rows))

    # -- lightcurves -----------------------------------------------------------------------------
    def lightcurves(request: Request, access: Grant):
        params = _params(request)
        query = parse_query(params)
        try:
            table = query_lightcurves(params, store=store)
        except OverflowError:       # parse_query lets through ids beyond 64 bits; the catalog reader does not
            raise HTTPException(400, "ID: object ids are integers below 2**63") from None
        return _visible_epochs(table, query, access), query

    def lc_params(ID: list[str] | None = Query(None, description="object id(s) (oid): repeat or separate by commas"),
                  POS: str | None = Query(None, description="CIRCLE ra dec radius [deg], radius <= 0.1667"),
                  CIRCLE: str | None = Query(None, description="ra dec radius [deg] (as POS)"),
                  BAND: str | None = Query(None, description="lambda_min lambda_max [m]"),
                  BANDNAME: str | None = Query(None, description="g, r, i (comma separated)"),
                  MAG: str | None = Query(None, description="min max: median magnitude range"),
                  NUM_OBS: str | None = Query(None, description="minimum number of epochs"),
                  NOBS_MIN: str | None = Query(None, description="as NUM_OBS"),
                  TIME: str | None = Query(None, description="mjd_min mjd_max (-Inf/Inf allowed)"),
                  BAD_CATFLAGS_MASK: str | None = Query(None, description="drop epochs with these catflags"),
                  COLLECTION: str | None = Query(None, description="catalog (default: the latest)")):
        """The IRSA parameters, for the OpenAPI description (the raw query string is what is parsed)."""

    @app.get("/lightcurves", tags=["lightcurves"], response_class=Response, dependencies=[Depends(lc_params)],
             summary="Lightcurves with the parameters and columns of IRSA's ZTF lightcurve service",
             responses={200: {"content": {m.split(";")[0]: {} for m in _MEDIA.values()}}})
    def lightcurve_table(request: Request, access: Grant = access_dep,
                         FORMAT: str | None = Query(None, description="VOTABLE (default), IPAC_TABLE, CSV, TSV, "
                                                                      "HTML, PARQUET")):
        table, query = lightcurves(request, access)
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)    # astropy's VOTable/ipac writers on NaN/units
            write_lightcurves(table, buf, query["format"])
        fmt = query["format"]
        return Response(buf.getvalue(), media_type=_MEDIA[fmt],
                        headers={"Content-Disposition": f'inline; filename="lightcurves.{_EXTENSIONS[fmt]}"'})

    app.add_api_route("/cgi-bin/ZTF/nph_light_curves", lightcurve_table, methods=["GET"], tags=["lightcurves"],
                      response_class=Response, dependencies=[Depends(lc_params)],
                      summary="The same at IRSA's path (a client of IRSA's service needs only a new host)",
                      operation_id="irsa_nph_light_curves")

    @app.get("/lightcurves/plot", tags=["lightcurves"], response_class=Response, dependencies=[Depends(lc_params)],
             summary=f"The lightcurves of a query as a PNG (at most {_MAX_PLOT_OBJECTS} objects: the nearest)",
             responses={200: {"content": {"image/png": {}}}})
    def lightcurve_plot(request: Request, access: Grant = access_dep,
                        FORMAT: str | None = Query(None, description="ignored")):
        table, query = lightcurves(request, access)
        table = _nearest_objects(table, query["cone"], _MAX_PLOT_OBJECTS)
        with tempfile.TemporaryDirectory(prefix="ztfsds-plot-") as tmp:
            data = plot_lightcurve(table, Path(tmp) / "lightcurve.png").read_bytes()
        return Response(data, media_type="image/png")

    # -- alerts ----------------------------------------------------------------------------------
    @app.get("/api/alerts", tags=["alerts"], summary="Search the alert archive (search_alerts)")
    def alerts(access: Grant = access_dep,
               objectid: str | None = Query(None, pattern=_OBJECTID, description="ZTF object id (ZTF18abcdefg)"),
               ra: float | None = Query(None, ge=-360, le=720, allow_inf_nan=False, description="[deg]"),
               dec: float | None = Query(None, ge=-90, le=90, allow_inf_nan=False, description="[deg]"),
               radius_arcsec: float | None = Query(None, gt=0, le=MAX_RADIUS_ARCSEC, allow_inf_nan=False,
                                                   description="cone radius [arcsec]"),
               jd_min: float | None = Query(None, ge=0, le=1e8, allow_inf_nan=False, description="[JD]"),
               jd_max: float | None = Query(None, ge=0, le=1e8, allow_inf_nan=False, description="[JD]"),
               mag_min: float | None = Query(None, ge=-50, le=50, allow_inf_nan=False, description="magpsf [mag]"),
               mag_max: float | None = Query(None, ge=-50, le=50, allow_inf_nan=False, description="magpsf [mag]"),
               rb_min: float | None = Query(None, ge=-1, le=2, allow_inf_nan=False, description="minimum rb"),
               drb_min: float | None = Query(None, ge=-1, le=2, allow_inf_nan=False, description="minimum drb"),
               fid: int | None = Query(None, ge=1, le=3, description="filter id"),
               programid: int | None = Query(None, ge=0, le=99, description="program id"),
               limit: int = Query(1000, ge=1, le=_MAX_ROWS, description="at most this many rows")):
        cone = position(ra, dec, radius_arcsec, need_radius=True)
        if objectid is None and not cone and jd_min is None and jd_max is None:
            raise HTTPException(400, "give objectid, a cone (ra, dec, radius_arcsec) or a time range (jd_min, jd_max)")
        rows = search_alerts(db(), objectid=objectid, ra=ra, dec=dec, radius_arcsec=radius_arcsec, jd_min=jd_min,
                             jd_max=jd_max, mag_min=mag_min, mag_max=mag_max, rb_min=rb_min, drb_min=drb_min,
                             fid=fid, programid=programid)
        rows = rows[access.visible(rows["programid"], rows["jd"])][:limit]
        return JSONResponse(_table_json(rows))

    @app.get("/api/alerts/{candid}", tags=["alerts"], response_class=Response,
             summary="One alert packet: an Avro container file in its writer schema",
             responses={200: {"content": {"application/avro": {}}}})
    def alert_packet(candid: int = PathParam(..., ge=0, le=_INT64), access: Grant = access_dep):
        import fastavro

        alert_row(candid, access)
        data = get_packet_bytes(db(), candid)
        reader = fastavro.reader(io.BytesIO(data))
        schema_json = reader.metadata["avro.schema"]
        record = next(reader)
        changed = False
        for key in ("prv_candidates", "fp_hists"):   # the public stream's histories hold public epochs only
            entries = record.get(key)
            if entries:
                seen = access.visible([e.get("programid") for e in entries], [e.get("jd") for e in entries])
                if not seen.all():
                    record[key] = [e for e, ok in zip(entries, seen.tolist()) if ok]
                    changed = True
        if changed:
            buf = io.BytesIO()
            fastavro.writer(buf, json.loads(schema_json), [record], codec="null")
            data = buf.getvalue()
        return Response(data, media_type="application/avro",
                        headers={"Content-Disposition": f'attachment; filename="{int(candid)}.avro"'})

    @app.get("/api/alerts/{candid}/cutouts/{kind}", tags=["alerts"], response_class=Response,
             summary="A cutout of an alert: PNG, or the packet's FITS stamp",
             responses={200: {"content": {"image/png": {}, "application/fits": {}}}})
    def alert_cutout(kind: Literal["science", "template", "difference"],
                     candid: int = PathParam(..., ge=0, le=_INT64),
                     format: Literal["png", "fits"] = Query("png", description="PNG or the packet's FITS stamp"),
                     access: Grant = access_dep):
        row = alert_row(candid, access)
        if format == "fits":
            stamp = (get_alerts(db(), [candid])[0].get(f"cutout{kind.capitalize()}") or {}).get("stampData")
            if not stamp:
                raise HTTPException(404, f"alert candid={candid} has no {kind} cutout")
            if stamp[:2] == b"\x1f\x8b":
                stamp = gzip.decompress(stamp)
            return Response(stamp, media_type="application/fits",
                            headers={"Content-Disposition": f'attachment; filename="{int(candid)}_{kind}.fits"'})
        stamps = alert_cutouts(db(), candid)
        if kind not in stamps:
            raise HTTPException(404, f"alert candid={candid} has no {kind} cutout")
        return Response(_png(stamps[kind], f"{row['objectid']} {kind}"), media_type="image/png")

    @app.get("/api/objects/{objectid}/history", tags=["alerts"],
             summary="Every detection and upper limit of an object in the stored packets (alert_history)")
    def object_history(objectid: str = PathParam(..., pattern=_OBJECTID, description="ZTF object id"),
                       access: Grant = access_dep):
        rows = alert_history(db(), objectid)
        rows = rows[access.visible(rows["programid"], rows["jd"])]
        return JSONResponse(_table_json(rows))

    # -- the web page ----------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(_static("index.html"))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in _STATIC:
            raise HTTPException(404, f"no static file {name!r}")
        media = {"js": "text/javascript", "css": "text/css", "html": "text/html"}[name.rsplit(".", 1)[1]]
        return Response(_static(name), media_type=f"{media}; charset=utf-8")

    return app


def serve(root, host: str = "127.0.0.1", port: int = 8000, *, database_url: str | None = None, tokens=None,
          public_after_days: float | None = PUBLIC_AFTER_DAYS, public_programids: Iterable[int] = PUBLIC_PROGRAMIDS,
          log_level: str = "info") -> None:
    """Run the archive service with uvicorn until interrupted (``ztfsds archive serve``).

    Parameters
    ----------
    root : path-like
        Data root.
    host : str, optional
        Interface to listen on (``0.0.0.0``: every interface).
    port : int, optional
        TCP port.
    database_url : str, optional
        See `create_app`.
    tokens : mapping or path-like, optional
        Partner tokens (see `load_tokens`).
    public_after_days : float or None, optional
        See `create_app`.
    public_programids : iterable of int, optional
        See `create_app`.
    log_level : str, optional
        uvicorn's log level.
    """
    import uvicorn

    app = create_app(root, database_url=database_url, tokens=tokens, public_after_days=public_after_days,
                     public_programids=public_programids)
    uvicorn.run(app, host=host, port=int(port), log_level=log_level, ws="none")
