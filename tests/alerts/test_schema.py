"""The packaged 4.02 schema: identical to the official files, self-contained when embedded."""

import io
import json

import fastavro
import pytest

from ztfsds.alerts.schema import SCHEMA_VERSION, field_names, load_schema, required_fields, schema_path
from ztfsds.errors import InputError


def test_version_and_field_counts():
    schema = load_schema()
    assert SCHEMA_VERSION == "4.02"
    assert schema["name"] == "ztf.alert" and schema["version"] == "4.02"
    assert [f["name"] for f in schema["fields"]] == [
        "schemavsn", "publisher", "objectId", "candid", "candidate", "prv_candidates", "fp_hists",
        "cutoutScience", "cutoutTemplate", "cutoutDifference"]
    assert (len(field_names("candidate")), len(field_names("prv_candidate")), len(field_names("fp_hist")),
            len(field_names("cutout"))) == (103, 57, 29, 2)
    assert load_schema() is schema


def test_fields_and_types_match_the_official_files():
    for part in ("candidate", "prv_candidate", "fp_hist", "cutout"):
        official = json.loads(schema_path("4.02", part).read_text())
        assert list(field_names(part)) == [f["name"] for f in official["fields"]]
        assert required_fields(part) == {f["name"]: f["type"] for f in official["fields"]
                                         if not isinstance(f["type"], list)}
    # v4.02: every nullable union puts null first (Avro-spec compliant defaults)
    cand = json.loads(schema_path("4.02", "candidate").read_text())
    unions = [f for f in cand["fields"] if isinstance(f["type"], list)]
    assert len(unions) == 81 and all(f["type"][0] == "null" and f["default"] is None for f in unions)


def test_embedded_schema_is_self_contained():
    """A container written with the schema carries every named type: a reader without our package
    decodes it."""
    buf = io.BytesIO()
    fastavro.writer(buf, load_schema(), [])
    buf.seek(0)
    embedded = fastavro.reader(buf).writer_schema
    text = json.dumps(embedded)
    for name in ("candidate", "prv_candidate", "fp_hist", "cutout"):
        assert f'"name": "ztf.alert.{name}"' in text or f'"name": "{name}"' in text
    fastavro.parse_schema(embedded)  # parses with no named_schemas given


def test_unknown_version_is_a_clear_error():
    with pytest.raises(InputError, match="3.3.*not shipped"):
        load_schema("3.3")
    with pytest.raises(InputError, match="no record 'nope'"):
        field_names("nope")
