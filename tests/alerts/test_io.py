"""Tar files of packets, reading every real schema version, compact packets."""

import io
import json
import os
import tarfile

import fastavro
import numpy as np
import pytest

from ztfsds.alerts import (
    candidate_records,
    make_alert,
    packet_bytes,
    prv_candidate_from_candidate,
    read_alerts,
    read_compact,
    upper_limit_from_headers,
    validate,
    write_alerts,
    write_compact,
)
from ztfsds.alerts.cutout import cutout_array
from ztfsds.alerts.io import iter_alert_files
from ztfsds.alerts.schema import load_schema
from ztfsds.errors import AlertPacketError, InputError

from .synth import ALERT_DATA, real_packet_paths


@pytest.fixture(scope="module")
def packets(quadrant):
    cands, sci, diff, stamps = quadrant
    recs = candidate_records(cands, sci, diff)
    prv = [prv_candidate_from_candidate(recs[k]) for k in range(4)] + [upper_limit_from_headers(sci, diff)] * 16
    return [make_alert(r, objectid="ZTF20aaaaaab", prv_candidates=prv, cutouts=stamps[i]) for i, r in enumerate(recs)]


def test_tar_per_quadrant_roundtrip(tmp_path, packets):
    path = write_alerts(packets, tmp_path / "alerts" / "20200924" / "ztf_20200924431759_000655_zr_c13_o_q3_alerts.tar")
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert names == [f"{p['candid']}.avro" for p in packets]
    back = list(read_alerts(path))
    assert [p["candid"] for p in back] == [p["candid"] for p in packets]
    assert back[7]["candidate"]["magpsf"] == pytest.approx(packets[7]["candidate"]["magpsf"], rel=1e-6)
    assert back[7]["cutoutScience"]["stampData"] == packets[7]["cutoutScience"]["stampData"]
    # gzipped tar, a directory, bytes of a tar and of one container read the same
    gz = write_alerts(packets[:3], tmp_path / "q.tar.gz")
    assert [p["candid"] for p in read_alerts(gz)] == [p["candid"] for p in packets[:3]]
    assert len(list(read_alerts(tmp_path))) == len(packets) + 3
    assert len(list(read_alerts(path.read_bytes()))) == len(packets)
    one = packet_bytes(packets[0])
    assert next(read_alerts(one))["candid"] == packets[0]["candid"]
    # containers given as bytes go in as they are
    again = write_alerts([one], tmp_path / "bytes.tar")
    assert next(read_alerts(again))["candid"] == packets[0]["candid"]
    names = [n for n, _ in iter_alert_files(path)]
    assert names[0].endswith(f".tar:{packets[0]['candid']}.avro")


def test_write_is_atomic(tmp_path, packets):
    path = write_alerts(packets[:2], tmp_path / "q.tar")
    before = path.read_bytes()
    bad = dict(packets[2], candidate=dict(packets[2]["candidate"], ra=None))
    with pytest.raises(AlertPacketError, match="ra"):
        write_alerts([packets[3], bad], path)
    assert path.read_bytes() == before                     # the old file is untouched
    assert sorted(os.listdir(tmp_path)) == ["q.tar"]       # no temporary left behind


def test_bad_inputs_are_clear(tmp_path):
    with pytest.raises(InputError, match="no such alert file"):
        list(read_alerts(tmp_path / "none.avro"))
    junk = tmp_path / "junk.avro"
    junk.write_bytes(b"not avro at all")
    with pytest.raises(AlertPacketError, match="junk.avro"):
        list(read_alerts(junk))
    with pytest.raises(AlertPacketError, match="neither"):
        list(read_alerts(b"garbage bytes"))
    full = (ALERT_DATA / "v3.3_1628364324215010017.avro").read_bytes()
    trunc = tmp_path / "trunc.avro"
    trunc.write_bytes(full[: len(full) // 2])
    with pytest.raises(AlertPacketError, match="trunc.avro"):
        list(read_alerts(trunc))


def test_real_packets_of_every_version_read_with_their_own_schema(tmp_path):
    versions = {}
    for path in real_packet_paths():
        packets = list(read_alerts(path))
        assert len(packets) == 1
        packet = packets[0]
        versions[path.name] = packet.get("schemavsn")
        assert packet["candid"] == int(path.stem.split("_")[1])
        for key in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
            image = cutout_array(packet[key]["stampData"])
            assert image.shape[0] <= 63 and image.shape[1] <= 63
    assert sorted(set(versions.values()) - {None}) == ["2.0", "3.0", "3.1", "3.2", "3.3", "3.5"]
    assert versions["v1.7_396522680015020000.avro"] is None           # 1.x packets have no schemavsn
    # the whole folder as one tar, read member by member with each embedded schema
    tar_path = tmp_path / "real.tar"
    with tarfile.open(tar_path, "w") as tar:
        for path in real_packet_paths():
            tar.add(path, arcname=path.name)
    assert len(list(read_alerts(tar_path))) == len(real_packet_paths()) == 9


def test_a_newer_reader_schema_cannot_read_every_older_packet():
    """Why read_alerts uses each file's writer schema: 3.5 -> 4.02 fails, 3.3 -> 4.02 works."""
    schema = load_schema()
    with open(ALERT_DATA / "v3.5_1661382530015060001.avro", "rb") as fh:
        with pytest.raises(Exception):
            next(fastavro.reader(fh, reader_schema=schema))
    with open(ALERT_DATA / "v3.3_1628364324215010017.avro", "rb") as fh:
        promoted = next(fastavro.reader(fh, reader_schema=schema))
    assert promoted["fp_hists"] is None and promoted["candid"] == 1628364324215010017
    validate(promoted, schema)


def test_a_4x_packet_reads_with_its_embedded_schema():
    """A packet written with the 4.01 writer schema real 2023 packets embed reads back through read_alerts."""
    v401 = fastavro.parse_schema(json.loads((ALERT_DATA / "ztf_alert_v4.01_6c9901fe9a.json").read_text()))
    with open(ALERT_DATA / "v3.3_1628364324215010017.avro", "rb") as fh:
        packet = next(fastavro.reader(fh, reader_schema=load_schema()))
    packet["schemavsn"] = "4.01"
    buf = io.BytesIO()
    fastavro.writer(buf, v401, [packet])
    back = next(read_alerts(buf.getvalue()))
    assert back["schemavsn"] == "4.01" and back["candidate"] == packet["candidate"]


def test_compact_packets(packets, capsys):
    schema = load_schema()
    full = packet_bytes(packets[0], schema)
    compact = write_compact(packets[0], schema)
    back = read_compact(compact, schema)
    assert back["cutoutScience"] is None and back["cutoutDifference"] is None
    assert back["candidate"]["candid"] == packets[0]["candid"] and len(back["prv_candidates"]) == 20
    ratio = len(full) / len(compact)
    # a real 3.3 packet promoted to 4.02 (24 history entries)
    real_path = ALERT_DATA / "v3.3_1628364324215010017.avro"
    with open(real_path, "rb") as fh:
        real = next(fastavro.reader(fh, reader_schema=schema))
    real_ratio = real_path.stat().st_size / len(write_compact(real, schema))
    with capsys.disabled():
        print(f"\ncompact packets: {len(full)} -> {len(compact)} bytes ({ratio:.1f}x smaller, 20 prv entries); "
              f"real packet {real_path.stat().st_size} -> {real_path.stat().st_size / real_ratio:.0f} bytes "
              f"({real_ratio:.1f}x)")
    assert 8.0 < ratio < 20.0
    assert 8.0 < real_ratio < 20.0
    with pytest.raises(AlertPacketError, match="does not decode|trailing"):
        read_compact(compact[:-40], schema)
    sizes = np.array([len(write_compact(p, schema)) for p in packets])
    assert sizes.max() < 8000


def test_fast_encoder_is_byte_identical_to_fastavro(packets):
    """The top level encoded by hand (upper limits encoded once) gives fastavro's exact bytes."""
    schema = load_schema()
    for packet in packets[:5] + [dict(packets[5], prv_candidates=None, fp_hists=[], cutoutTemplate=None)]:
        ours = packet_bytes(packet, schema)
        buf = io.BytesIO()
        fastavro.writer(buf, schema, [packet])
        ref = buf.getvalue()
        # same body; the 16-byte sync markers are random per writer
        header_len = ref.index(ref[-16:]) + 16
        assert ours[header_len:-16] == ref[header_len:-16]
        assert next(read_alerts(ours)) == next(fastavro.reader(io.BytesIO(ref)))
