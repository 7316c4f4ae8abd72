"""`build_catalogs`: fetch the calibrator catalogs of ZTF fields from a provider and store them.

For each field (and each of ``ccds``, or the whole field), each kind is fetched from its provider
and merged into ``<root>/catalogs/<kind>/`` (`ztfsds.catalogs.CatalogStore.write`): re-running a
build is harmless and overlapping fields add no duplicate sources. Each field is stored before the
next is fetched, so a long online build keeps what it has when interrupted.

Examples
--------
>>> import tempfile
>>> from ztfsds.sim import simulate_night
>>> from ztfsds.catalogs import build_catalogs, CatalogStore
>>> root = tempfile.mkdtemp()
>>> _ = simulate_night(root, fields=[655], ccds=[13], nexp=1, size=64, seed=3, nbias=1, nflat=1)
>>> paths = build_catalogs(root, [655])
>>> sorted(CatalogStore(root).kinds())
['gaia', 'ps1']
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from astropy.table import vstack

from .. import camera as _camera
from ..errors import ConfigError
from .online import GaiaArchiveProvider, VizierPS1Provider
from .providers import Provider, SimProvider
from .schema import KINDS, get_schema
from .store import as_catalog_store

__all__ = ["build_catalogs", "resolve_providers"]

log = logging.getLogger(__name__)


def resolve_providers(provider, kinds, root) -> dict:
    """The provider of each kind.

    Parameters
    ----------
    provider : {'sim', 'online'} or Provider or mapping of str to Provider
        ``'sim'``: `SimProvider` on the data root; ``'online'``: `GaiaArchiveProvider` for
        ``'gaia'`` and `VizierPS1Provider` for ``'ps1'``; a provider serving every kind asked for;
        or one provider per kind.
    kinds : sequence of str
        Catalog kinds.
    root : path-like
        Data root (for ``'sim'``).

    Returns
    -------
    dict of str to Provider
    """
    for kind in kinds:
        get_schema(kind)
    if isinstance(provider, str):
        if provider == "sim":
            sim = SimProvider(root)
            return {k: sim for k in kinds}
        if provider == "online":
            online = {"gaia": GaiaArchiveProvider(), "ps1": VizierPS1Provider()}
            return {k: online[k] for k in kinds}
        raise ConfigError(f"provider must be 'sim', 'online', a Provider or a mapping kind -> Provider; "
                          f"got {provider!r}")
    if isinstance(provider, Mapping):
        missing = [k for k in kinds if k not in provider]
        if missing:
            raise ConfigError(f"no provider given for kind(s) {missing}")
        chosen = {k: provider[k] for k in kinds}
    elif isinstance(provider, Provider):
        chosen = {k: provider for k in kinds}
    else:
        raise ConfigError(f"not a catalog provider: {provider!r} (needs name, kinds and fetch())")
    for kind, p in chosen.items():
        if not isinstance(p, Provider):
            raise ConfigError(f"not a catalog provider for {kind!r}: {p!r}")
        if kind not in p.kinds:
            raise ConfigError(f"provider {p.name!r} serves {tuple(p.kinds)}, not {kind!r}")
    return chosen


def build_catalogs(store, fields: Iterable[int], *, provider="sim", kinds: Iterable[str] = KINDS,
                   ccds: Iterable[int] | None = None, replace: bool = False) -> list[Path]:
    """Fetch the calibrator catalogs of ZTF fields and store them HEALPix-partitioned.

    Parameters
    ----------
    store : path-like or `~ztfsds.products.ProductStore` or `~ztfsds.catalogs.CatalogStore`
        The data root.
    fields : iterable of int
        ZTF field ids.
    provider : {'sim', 'online'} or Provider or mapping of str to Provider, optional
        Where the sources come from (see `resolve_providers`); default the simulator's exports
        under the same data root.
    kinds : iterable of {'gaia', 'ps1'}, optional
        Catalog kinds to build (default both).
    ccds : iterable of int, optional
        Fetch these CCDs of each field, one request each; None (default) fetches the whole field
        (for ``'sim'``: every CCD exported).
    replace : bool, optional
        Delete each kind's existing catalog first (default False: merge into it).

    Returns
    -------
    list of pathlib.Path
        Partition files created or rewritten, sorted.

    Raises
    ------
    ztfsds.errors.ProductNotFoundError
        ``'sim'``: the night has no export for a field or CCD asked for.
    ztfsds.errors.CatalogUnavailableError
        An online service is unreachable (fields stored before the failure are kept).
    ztfsds.errors.ConfigError
        An unknown field, CCD, kind or provider.
    """
    cat = as_catalog_store(store)
    kinds = tuple(kinds)
    fields = [int(f) for f in fields]
    for f in fields:
        _camera.field_center(f)  # a clear error for an unknown field, before any fetch
    ccd_list = None if ccds is None else [int(c) for c in ccds]
    for c in ccd_list or ():
        if c not in _camera.CCDIDS:
            raise ConfigError(f"ccd {c} must be 1..16")
    providers = resolve_providers(provider, kinds, cat.root)
    written = set()
    for kind in kinds:
        if replace:
            cat.remove(kind)
        p = providers[kind]
        for field in fields:
            parts = [p.fetch(kind, field, c) for c in (ccd_list or [None])]
            table = vstack(parts, join_type="exact") if len(parts) > 1 else parts[0]
            key = f"{field:06d}" + ("" if ccd_list is None else "_" + "_".join(f"c{c:02d}" for c in ccd_list))
            provenance = {"provider": p.name, "key": key, "field": field, "ccds": ccd_list, "detail": repr(p)}
            written.update(cat.write(kind, table, provenance=provenance))
            log.info("%s catalog: field %d from %s: %d sources", kind, field, p.name, len(table))
    return sorted(written)
