"""The official ZTF alert Avro schema, shipped as package data.

`load_schema` parses the ``.avsc`` files of one schema version (``ztfsds/data/alert_schema/v<version>/``:
``cutout``, ``candidate``, ``prv_candidate``, ``fp_hist`` and ``alert``, copied unchanged from
ZwickyTransientFacility/ztf-avro-alert) with `fastavro.parse_schema`, the named types resolved, into the
top-level ``ztf.alert`` record that writers and readers take. `field_names` lists the fields of one
record of it (the 103 of ``candidate`` in 4.02, the 57 of ``prv_candidate``, the 29 of ``fp_hist``).

Version 4.02 is the one we write: every nullable union is ``["null", T]`` (Avro-spec compliant, unlike
the 3.x schemas) and ``fp_hists`` holds the forced photometry of the last 30 days. Packets written with
older schemas are read with the writer schema embedded in each file (`ztfsds.alerts.io.read_alerts`).
"""

from __future__ import annotations

import functools
import json

from .._resources import package_data
from ..errors import InputError

__all__ = ["SCHEMA_VERSION", "SCHEMA_VERSIONS", "load_schema", "field_names", "required_fields", "schema_path"]

#: The alert schema version ztfsds writes.
SCHEMA_VERSION = "4.02"

#: Versions shipped with the package.
SCHEMA_VERSIONS = ("4.02",)

# Parse order: every named type before the records that use it.
_PARTS = ("cutout", "candidate", "prv_candidate", "fp_hist", "alert")

_RECORDS = {"alert": "ztf.alert", "candidate": "ztf.alert.candidate", "prv_candidate": "ztf.alert.prv_candidate",
            "fp_hist": "ztf.alert.fp_hist", "cutout": "ztf.alert.cutout"}


def schema_path(version: str = SCHEMA_VERSION, part: str = "alert"):
    """The packaged ``.avsc`` file of one part (``'alert'``, ``'candidate'``, ...) of a schema version."""
    return package_data("alert_schema") / f"v{version}" / f"{part}.avsc"


def _inline(schema, definitions: dict, defined: set):
    """``schema`` with every reference to a named type replaced by its definition at its first use (the
    embedded writer schema of a container must be self-contained)."""
    if isinstance(schema, str):
        if schema in definitions and schema not in defined:
            defined.add(schema)
            return _inline(definitions[schema], definitions, defined)
        return schema
    if isinstance(schema, list):
        return [_inline(s, definitions, defined) for s in schema]
    if isinstance(schema, dict):
        out = dict(schema)
        if out.get("type") == "record":
            out["fields"] = [dict(f, type=_inline(f["type"], definitions, defined)) for f in out["fields"]]
        elif out.get("type") == "array":
            out["items"] = _inline(out["items"], definitions, defined)
        elif isinstance(out.get("type"), (dict, list)):
            out["type"] = _inline(out["type"], definitions, defined)
        return out
    return schema


@functools.lru_cache(maxsize=None)
def _parsed(version: str) -> dict:
    import fastavro

    if version not in SCHEMA_VERSIONS:
        raise InputError(None, f"alert schema version {version!r} is not shipped with ztfsds "
                               f"(available: {', '.join(SCHEMA_VERSIONS)})")
    definitions = {}
    for part in _PARTS:
        path = schema_path(version, part)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise InputError(path, f"alert schema {version} part {part!r} is missing from the package data") from None
        try:
            definitions[_RECORDS[part]] = json.loads(text)
        except ValueError as exc:
            raise InputError(path, f"not valid JSON: {exc}") from None
    full = _inline(definitions["ztf.alert"], definitions, {"ztf.alert"})
    try:
        return fastavro.parse_schema(full)
    except (ValueError, fastavro.schema.SchemaParseException) as exc:
        raise InputError(schema_path(version), f"not a valid Avro schema: {exc}") from None


def load_schema(version: str = SCHEMA_VERSION) -> dict:
    """The parsed ZTF alert schema (the top-level ``ztf.alert`` record, named types resolved).

    Parameters
    ----------
    version : str, optional
        Schema version (only ``'4.02'`` is shipped).

    Returns
    -------
    dict
        A `fastavro.parse_schema` result: pass it to ``fastavro.writer``, ``fastavro.schemaless_writer``,
        `ztfsds.alerts.io.write_alerts` ... The same object is returned on every call (do not modify it).

    Raises
    ------
    ztfsds.errors.InputError
        An unknown version, or a missing or invalid packaged ``.avsc`` file.

    Examples
    --------
    >>> from ztfsds.alerts.schema import load_schema
    >>> load_schema()["name"], load_schema()["version"]
    ('ztf.alert', '4.02')
    """
    return _parsed(str(version))


def _record(fullname: str, version: str) -> dict:
    """The parsed record ``fullname`` (``'ztf.alert.candidate'`` ...) of a schema version."""
    schema = load_schema(version)
    if schema["name"] == fullname:
        return schema
    return schema["__named_schemas"][fullname]


@functools.lru_cache(maxsize=None)
def field_names(record: str = "candidate", version: str = SCHEMA_VERSION) -> tuple[str, ...]:
    """The field names of one record of the alert schema, in schema order.

    Parameters
    ----------
    record : {'alert', 'candidate', 'prv_candidate', 'fp_hist', 'cutout'}
    version : str, optional

    Examples
    --------
    >>> from ztfsds.alerts.schema import field_names
    >>> len(field_names("candidate")), len(field_names("prv_candidate")), len(field_names("fp_hist"))
    (103, 57, 29)
    """
    if record not in _RECORDS:
        raise InputError(None, f"no record {record!r} in the alert schema (records: {', '.join(_RECORDS)})")
    rec = _record(_RECORDS[record], version)
    return tuple(f["name"] for f in rec["fields"])


@functools.lru_cache(maxsize=None)
def required_fields(record: str = "candidate", version: str = SCHEMA_VERSION) -> dict:
    """``{name: avro type}`` of the non-nullable fields of one record (they can never be None)."""
    rec = _record(_RECORDS[record], version)
    return {f["name"]: f["type"] for f in rec["fields"] if not isinstance(f["type"], list)}
