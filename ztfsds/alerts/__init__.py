"""Alerts: packets in the official ZTF Avro schema, associations, distribution.

* `ztfsds.alerts.schema`: the 4.02 schema shipped as package data (`load_schema`).
* `ztfsds.alerts.packet`: candidate / prv_candidate / fp_hist records from our products, `make_alert`.
* `ztfsds.alerts.cutout`: 63x63 gzipped-FITS cutouts (`cutout_bytes`, `cutout_array`).
* `ztfsds.alerts.associations`: PS1 / Gaia neighbours, known asteroids, reference sources, object ids.
* `ztfsds.alerts.io`: Avro containers, per-quadrant tar files, compact (schemaless) packets, validation.
* `ztfsds.alerts.kafka`: Kafka distribution through confluent-kafka (optional).
* `ztfsds.alerts.runner`: `run_alerts`, the product runner (database history, object ids, fp_hists,
  associations, the quadrant's tar, the alert archive, Kafka).

Everything but the runner is pure (no database); the history of an object (``prv_candidates``, ``ndethist``...)
is read by the caller and passed in.
"""

from .associations import (
    asteroids_from_sky,
    assign_object_ids,
    gaia_neighbours,
    match_objects,
    ps1_neighbours,
    reference_neighbours,
    solar_system,
)
from .cutout import cutout_array, cutout_bytes
from .io import packet_bytes, read_alerts, read_compact, validate, write_alerts, write_compact
from .kafka import KafkaDistributor, send_alerts, topic_name
from .packet import (
    candidate_records,
    fp_hist_record,
    fp_hists_from_forced,
    image_context,
    make_alert,
    prv_candidate_from_candidate,
    upper_limit_from_headers,
    upper_limit_record,
)
from .runner import alert_tar_path, read_compact_tar, run_alerts, select_alerts
from .schema import SCHEMA_VERSION, field_names, load_schema

__all__ = [
    "SCHEMA_VERSION",
    "load_schema",
    "field_names",
    "candidate_records",
    "image_context",
    "make_alert",
    "prv_candidate_from_candidate",
    "upper_limit_record",
    "upper_limit_from_headers",
    "fp_hist_record",
    "fp_hists_from_forced",
    "cutout_bytes",
    "cutout_array",
    "ps1_neighbours",
    "gaia_neighbours",
    "solar_system",
    "asteroids_from_sky",
    "reference_neighbours",
    "match_objects",
    "assign_object_ids",
    "packet_bytes",
    "write_alerts",
    "read_alerts",
    "write_compact",
    "read_compact",
    "validate",
    "KafkaDistributor",
    "send_alerts",
    "topic_name",
    "run_alerts",
    "select_alerts",
    "alert_tar_path",
    "read_compact_tar",
]
