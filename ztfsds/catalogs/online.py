"""Online providers: Gaia DR3 from the ESA Gaia archive, Pan-STARRS1 DR1 from VizieR (astroquery).

Both fetch one cone per field (or per CCD: ``build_catalogs(..., ccds=[...])`` keeps each request
small; a whole low-latitude field is ~2 million Gaia sources) and return the canonical schema. When
the service cannot be reached or fails they raise `~ztfsds.errors.CatalogUnavailableError`, which
names the service and suggests the offline providers (``provider='sim'``, `LocalFileProvider`).

The Gaia archive is queried with astroquery's TAP client (`astroquery.utils.tap.core.TapPlus`)
rather than ``astroquery.gaia``: importing ``astroquery.gaia`` contacts the archive and prints its
status messages, which a library must not do.

Examples
--------
>>> from ztfsds.catalogs import GaiaArchiveProvider
>>> print(GaiaArchiveProvider(mag_limit=20.0).adql(10.0, 20.0, 0.5))  # doctest: +NORMALIZE_WHITESPACE
SELECT source_id, ra, dec, ra_error, dec_error, pmra, pmdec, pmra_error, pmdec_error, parallax,
parallax_error, phot_g_mean_mag, phot_bp_mean_mag, phot_rp_mean_mag, ref_epoch FROM gaiadr3.gaia_source
WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 10.0, 20.0, 0.5)) AND phot_g_mean_mag < 20.0
"""

from __future__ import annotations

import logging

from astropy import units as u
from astropy.table import Table

from ..errors import CatalogUnavailableError
from .providers import _check_kind
from .regions import DEFAULT_MARGIN, field_region
from .schema import get_schema

__all__ = ["GaiaArchiveProvider", "VizierPS1Provider"]

log = logging.getLogger(__name__)


def _network_errors() -> tuple:
    """Exception types that mean 'the service is unreachable or failed'."""
    errors = [OSError]  # socket, DNS, connection refused, requests' exceptions, HTTP errors
    try:
        from astroquery.exceptions import RemoteServiceError
        from astroquery.exceptions import TimeoutError as AstroqueryTimeout

        errors += [RemoteServiceError, AstroqueryTimeout]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


class GaiaArchiveProvider:
    """Gaia DR3 sources from the ESA Gaia archive (TAP, ADQL cone per field or CCD).

    Parameters
    ----------
    table : str, optional
        Archive table (default ``gaiadr3.gaia_source``).
    mag_limit : float, optional
        Faint limit in G [mag] (default 21).
    url : str, optional
        TAP service.
    margin : `~astropy.units.Quantity`, optional
        Margin of the field regions.
    """

    name = "gaia-archive"
    kinds = ("gaia",)
    URL = "https://gea.esac.esa.int/tap-server/tap"
    COLUMNS = ("source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec", "pmra_error", "pmdec_error",
               "parallax", "parallax_error", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag", "ref_epoch")

    def __init__(self, *, table: str = "gaiadr3.gaia_source", mag_limit: float = 21.0, url: str = URL,
                 margin=DEFAULT_MARGIN):
        self.table = table
        self.mag_limit = float(mag_limit)
        self.url = url
        self.margin = margin

    def __repr__(self) -> str:
        return f"GaiaArchiveProvider(table={self.table!r}, mag_limit={self.mag_limit})"

    def adql(self, ra: float, dec: float, radius: float) -> str:
        """The ADQL query of a cone (centre and radius in degrees)."""
        return (f"SELECT {', '.join(self.COLUMNS)} FROM {self.table} "
                f"WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra!r}, {dec!r}, {radius!r})) "
                f"AND phot_g_mean_mag < {self.mag_limit!r}")

    def fetch(self, kind: str, field: int, ccdid: int | None = None) -> Table:
        """Gaia DR3 sources of a field (or CCD), in the canonical ``'gaia'`` schema.

        Raises
        ------
        ztfsds.errors.CatalogUnavailableError
            The archive cannot be reached or the query failed.
        """
        _check_kind(self, kind)
        schema = get_schema(kind)
        center, radius = field_region(field, ccdid, margin=self.margin)
        query = self.adql(float(center.ra.deg), float(center.dec.deg), float(radius.to_value(u.deg)))
        service = f"Gaia archive ({self.url})"
        try:
            from astroquery.utils.tap.core import TapPlus

            job = TapPlus(url=self.url, verbose=False).launch_job_async(query, verbose=False)
            result = job.get_results()
        except _network_errors() as exc:
            raise CatalogUnavailableError(service, f"unreachable, or the query for field {field} failed: "
                                                   f"{type(exc).__name__}: {exc}") from exc
        log.info("%s: %d sources for field %d%s", service, len(result), field,
                 "" if ccdid is None else f" CCD {ccdid}")
        return schema.conform(Table(result), source=service)


class VizierPS1Provider:
    """Pan-STARRS1 DR1 mean PSF magnitudes from VizieR (catalog II/349/ps1, a cone per field or CCD).

    ``sgscore`` is not in II/349 and is left NaN.

    Parameters
    ----------
    catalog : str, optional
        VizieR catalog (default ``II/349/ps1``).
    mag_limit : float, optional
        Faint limit in r [mag] (default 22).
    timeout : float, optional
        Seconds to wait for VizieR.
    margin : `~astropy.units.Quantity`, optional
        Margin of the field regions.
    """

    name = "vizier-ps1"
    kinds = ("ps1",)
    CATALOG = "II/349/ps1"
    #: VizieR column -> canonical column.
    COLUMNS = {"objID": "objid", "RAJ2000": "ra", "DEJ2000": "dec", "gmag": "gmag", "e_gmag": "e_gmag",
               "rmag": "rmag", "e_rmag": "e_rmag", "imag": "imag", "e_imag": "e_imag", "zmag": "zmag",
               "e_zmag": "e_zmag", "ymag": "ymag", "e_ymag": "e_ymag"}

    def __init__(self, *, catalog: str = CATALOG, mag_limit: float = 22.0, timeout: float = 300.0,
                 margin=DEFAULT_MARGIN):
        self.catalog = catalog
        self.mag_limit = float(mag_limit)
        self.timeout = float(timeout)
        self.margin = margin

    def __repr__(self) -> str:
        return f"VizierPS1Provider(catalog={self.catalog!r}, mag_limit={self.mag_limit})"

    def fetch(self, kind: str, field: int, ccdid: int | None = None) -> Table:
        """PS1 sources of a field (or CCD), in the canonical ``'ps1'`` schema.

        Raises
        ------
        ztfsds.errors.CatalogUnavailableError
            VizieR cannot be reached or the query failed.
        """
        _check_kind(self, kind)
        schema = get_schema(kind)
        center, radius = field_region(field, ccdid, margin=self.margin)
        service = f"VizieR {self.catalog}"
        try:
            from astroquery.vizier import Vizier

            vizier = Vizier(columns=list(self.COLUMNS), column_filters={"rmag": f"<{self.mag_limit}"},
                            row_limit=-1, timeout=self.timeout)
            result = vizier.query_region(center, radius=radius, catalog=self.catalog)
        except _network_errors() as exc:
            raise CatalogUnavailableError(service, f"unreachable, or the query for field {field} failed: "
                                                   f"{type(exc).__name__}: {exc}") from exc
        if len(result) == 0:
            log.info("%s: no sources for field %d", service, field)
            return schema.empty()
        table = Table(result[0])
        present = [k for k in self.COLUMNS if k in table.colnames]
        table = table[present]
        table.rename_columns(present, [self.COLUMNS[k] for k in present])
        log.info("%s: %d sources for field %d%s", service, len(table), field, "" if ccdid is None else f" CCD {ccdid}")
        return schema.conform(table, source=service)
