"""Product runner of source matching: psfcats under a data root -> matchfile -> HATS lightcurves.

`run_match` gathers a quadrant-filter's ``refpsfcat`` and every epoch's ``psfcat`` (with its sciimg
header), matches them (`ztfsds.match.match_epochs`), refines the photometry
(`ztfsds.match.calibrate`), writes the matchfile ``<root>/match/ztf_<field>_<fc>_c<cc>_q<q>_match.pytable``
and replaces the quadrant-filter's rows in the lightcurve catalog ``<root>/match/lightcurves/<collection>``
(HATS). When a matchfile exists, only the epochs it does not hold yet are read and matched (the
monthly update); ``rebuild=True`` starts again from the reference.

With ``scheduler`` (a ``dask.distributed`` address or `~distributed.Client`), the epochs' catalogs are
read by Dask workers and the matching and calibration run as one Dask task; `run_match_all` maps whole
quadrant-filters over the workers and updates the lightcurve catalog once at the end (a catalog is one
directory: parallel writers would race).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..errors import ZTFSDSError
from ..products import ProductKey, ProductStatus, ProductStore
from .lightcurves import lightcurve_table, update_lightcurves
from .matchfile import MatchFile, matchfile_name, read_matchfile, write_matchfile
from .matching import match_epochs
from .params import MatchParams
from .relphot import calibrate

__all__ = ["run_match", "run_match_all", "build_matchfile", "epoch_keys", "load_epoch", "quadrant_filters",
           "matchfile_path", "lightcurve_catalog_path", "DEFAULT_COLLECTION"]

log = logging.getLogger(__name__)

#: Name of the lightcurve catalog (HATS directory under ``<root>/match/lightcurves/``) the runner writes.
DEFAULT_COLLECTION = "ztf"


def matchfile_path(store: ProductStore, field: int, ccdid: int, qid: int, filtercode: str) -> Path:
    """Where the matchfile of a quadrant-filter lives."""
    return store.match_dir / matchfile_name(field, filtercode, ccdid, qid)


def lightcurve_catalog_path(store: ProductStore, collection: str = DEFAULT_COLLECTION) -> Path:
    """Directory of a HATS lightcurve catalog under the data root."""
    return store.match_dir / "lightcurves" / collection


def epoch_keys(store: ProductStore, field: int, ccdid: int, qid: int, filtercode: str) -> list[ProductKey]:
    """The ``psfcat`` products of one quadrant-filter present under the data root, in time order."""
    return [k for k in store.keys("sci", suffix="psfcat")
            if k.field == int(field) and k.ccdid == int(ccdid) and k.qid == int(qid) and k.filtercode == filtercode]


def quadrant_filters(store: ProductStore) -> list[tuple[int, int, int, str]]:
    """Every (field, ccdid, qid, filtercode) with a ``refpsfcat`` under the data root."""
    out = set()
    for key in store.keys("ref", suffix="refpsfcat"):
        out.add((key.field, key.ccdid, key.qid, key.filtercode))
    return sorted(out)


def load_epoch(root: str | os.PathLike, name: str) -> tuple[Table, fits.Header] | None:
    """An epoch's ``psfcat`` table and sciimg header (None when it has no photometric calibration).

    Parameters
    ----------
    root : path-like
        The data root.
    name : str
        The psfcat file name.
    """
    store = ProductStore(root)
    key = ProductKey.parse(name)
    header = store.read_header(key.with_suffix("sciimg"))
    magzp = header.get("MAGZP")
    if magzp is None or not np.isfinite(float(magzp)) or float(magzp) <= 0:
        log.warning("%s: no MAGZP (photometric calibration failed): epoch not matched", name)
        return None
    catalog = Table.read(store.path(key), hdu="PSFCAT")
    return catalog, header


def build_matchfile(epochs, *, reference: Table | None, previous: MatchFile | None, field: int, ccdid: int,
                    qid: int, filtercode: str, reference_image_id: int = 0,
                    params: MatchParams | None = None) -> MatchFile:
    """Match and calibrate: `match_epochs` then `calibrate` (the pure core of `run_match`).

    Parameters
    ----------
    epochs : list of (`~astropy.table.Table`, header)
        The new epochs' psfcats and headers.
    reference : `~astropy.table.Table` or None
        The refpsfcat (unused with ``previous``).
    previous : MatchFile or None
        The matchfile to update.
    field, ccdid, qid : int
        The quadrant.
    filtercode : str
        The filter.
    reference_image_id : int, optional
        ``referenceImageID`` of a new matchfile.
    params : MatchParams, optional
        Parameters.

    Returns
    -------
    MatchFile
        The calibrated matchfile.
    """
    matched = match_epochs(epochs, reference=reference, previous=previous, field=field, ccdid=ccdid, qid=qid,
                           filtercode=filtercode, reference_image_id=reference_image_id, params=params)
    return calibrate(matched, params)


def _client(scheduler):
    if scheduler is None:
        return None
    if hasattr(scheduler, "submit") and hasattr(scheduler, "gather"):
        return scheduler
    from distributed import Client

    return Client(scheduler)


def _match_quadrant(root: str, field: int, ccdid: int, qid: int, filtercode: str, params: MatchParams,
                    rebuild: bool, client=None):
    """Match one quadrant-filter and write its matchfile; (status, lightcurve table or None)."""
    start = time.perf_counter()
    store = ProductStore(root)
    out = matchfile_path(store, field, ccdid, qid, filtercode)
    name = out.name
    ref_key = ProductKey("ref", filtercode, int(ccdid), int(qid), int(field), None, None, "o", "refpsfcat", ".fits")
    try:
        previous = read_matchfile(out) if out.exists() and not rebuild else None
        reference = rfid = None
        if previous is None:
            if not store.exists(ref_key):
                raise ZTFSDSError(f"{store.path(ref_key)}: no reference catalog (build the reference first)")
            reference = Table.read(store.path(ref_key), hdu="PSFCAT")
            rfid = int(store.read_header(ref_key.with_suffix("refimg")).get("RFID", 0)) if store.exists(
                ref_key.with_suffix("refimg")) else 0
        known = set() if previous is None else set(int(e) for e in previous.exposures["expid"])
        keys = epoch_keys(store, field, ccdid, qid, filtercode)
        keys = [k for k in keys if k.expid not in known]
        if client is not None:
            loaded = client.gather(client.map(load_epoch, [str(root)] * len(keys), [k.filename for k in keys]))
        else:
            loaded = [load_epoch(root, k.filename) for k in keys]
        epochs = [e for e in loaded if e is not None]
        if previous is not None and not epochs:
            return ProductStatus("match", name, ok=True, message="no new epochs", outputs=[out],
                                 elapsed=time.perf_counter() - start), None
        kwargs = dict(reference=reference, previous=previous, field=int(field), ccdid=int(ccdid), qid=int(qid),
                      filtercode=filtercode, reference_image_id=rfid or 0, params=params)
        if client is not None:
            result = client.submit(build_matchfile, epochs, pure=False, **kwargs).result()
        else:
            result = build_matchfile(epochs, **kwargs)
        write_matchfile(result, out)
    except (ZTFSDSError, OSError) as exc:
        log.error("match %s: %s", name, exc)
        return ProductStatus("match", name, ok=False, message=str(exc), elapsed=time.perf_counter() - start), None
    nvar = int(np.count_nonzero(result.sources["variable"])) if "variable" in result.sources.colnames else 0
    message = (f"{len(epochs)} new epochs ({len(result.exposures)} in all), {len(result.sources)} objects, "
               f"{len(result.sourcedata)} detections, {nvar} variables")
    return ProductStatus("match", name, ok=True, message=message, outputs=[out],
                         elapsed=time.perf_counter() - start), lightcurve_table(result)


def run_match(store: ProductStore, field: int, ccdid: int, qid: int, filtercode: str, *, config=None,
              scheduler=None, rebuild: bool = False, collection: str = DEFAULT_COLLECTION,
              lightcurves: bool = True) -> ProductStatus:
    """Match, calibrate and write one quadrant-filter's matchfile and lightcurves.

    Parameters
    ----------
    store : `~ztfsds.products.ProductStore`
        Data root with the ``refpsfcat`` and the epochs' ``psfcat`` and ``sciimg`` products.
    field, ccdid, qid : int
        The quadrant.
    filtercode : str
        'zg', 'zr' or 'zi'.
    config : MatchParams, `~ztfsds.config.Config`, dict or None, optional
        Parameters (`MatchParams.from_config`).
    scheduler : str or `distributed.Client`, optional
        Run the reads and the matching on Dask.
    rebuild : bool, optional
        Ignore an existing matchfile and match every epoch again from the reference.
    collection : str, optional
        Lightcurve catalog name (directory under ``<root>/match/lightcurves``).
    lightcurves : bool, optional
        Update the HATS lightcurve catalog.

    Returns
    -------
    `~ztfsds.products.ProductStatus`
        ``ok`` when the matchfile was written (or had nothing new to add); outputs: matchfile, catalog.
    """
    params = MatchParams.from_config(config)
    client = _client(scheduler)
    status, table = _match_quadrant(str(store.root), field, ccdid, qid, filtercode, params, rebuild, client)
    if table is not None and lightcurves:
        path = lightcurve_catalog_path(store, collection)
        update_lightcurves(path, table, name=collection, max_rows=params.hats_max_rows,
                           max_order=params.hats_max_order)
        status.outputs.append(path)
    return status


def run_match_all(store: ProductStore, *, config=None, scheduler=None, rebuild: bool = False,
                  collection: str = DEFAULT_COLLECTION) -> list[ProductStatus]:
    """`run_match` for every quadrant-filter with a reference, then one lightcurve-catalog update.

    Parameters
    ----------
    store : `~ztfsds.products.ProductStore`
        The data root.
    config : optional
        As in `run_match`.
    scheduler : str or `distributed.Client`, optional
        Map the quadrant-filters over Dask workers.
    rebuild : bool, optional
        As in `run_match`.
    collection : str, optional
        Lightcurve catalog name.

    Returns
    -------
    list of `~ztfsds.products.ProductStatus`
        One per quadrant-filter.
    """
    params = MatchParams.from_config(config)
    client = _client(scheduler)
    quads = quadrant_filters(store)
    root = str(store.root)
    if client is not None:
        futures = [client.submit(_match_quadrant, root, f, c, q, fc, params, rebuild, pure=False)
                   for f, c, q, fc in quads]
        results = client.gather(futures)
    else:
        results = [_match_quadrant(root, f, c, q, fc, params, rebuild) for f, c, q, fc in quads]
    tables = [t for _, t in results if t is not None]
    if tables:
        import pyarrow as pa

        path = lightcurve_catalog_path(store, collection)
        update_lightcurves(path, pa.concat_tables(tables, promote_options="default"), name=collection,
                           max_rows=params.hats_max_rows, max_order=params.hats_max_order)
        for status, table in results:
            if table is not None:
                status.outputs.append(path)
    return [s for s, _ in results]
