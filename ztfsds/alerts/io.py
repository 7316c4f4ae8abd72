"""Alert packets on disk and on the wire: Avro containers, per-quadrant tar files, compact packets.

* `packet_bytes`: one packet as an Avro Object Container File with the schema embedded (codec null), as
  IPAC writes each alert and as each Kafka message carries it; anyone with fastavro (or any Avro
  library) reads it without knowing the schema beforehand.
* `write_alerts`: all packets of a quadrant in ONE tar file, members ``<candid>.avro`` (like the nightly
  tarballs of the public archive), written atomically (temp file + rename); ``.tar.gz`` compresses it
  (little gain: the cutouts are gzipped already).
* `read_alerts`: packets from an ``.avro`` file, a tar / tar.gz, a directory of either, or bytes; each
  decoded with its own writer schema (a newer reader schema cannot read some older packets:
  3.3 -> 3.4, 3.5 -> 4.02 and 3.1 -> 3.3 fail).
* `write_compact` / `read_compact`: schemaless Avro (no header, no schema: the reader must know it) with
  the cutouts removed (null), 10-20x smaller; the cutouts are served by the archive instead.
* `validate`: a packet against a schema, with an error naming the offending field.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path
from typing import Iterator

from ..errors import AlertPacketError, InputError
from ..products import atomic_write
from .schema import load_schema

__all__ = ["packet_bytes", "encode_alerts", "write_alerts", "read_alerts", "iter_alert_files", "write_compact", "read_compact",
           "compact_packet", "validate", "CUTOUT_FIELDS"]

#: The cutout fields of a packet (null in compact packets).
CUTOUT_FIELDS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")


def _schema(schema):
    return load_schema() if schema is None else schema


def _fail(packet, schema, exc, where=None) -> AlertPacketError:
    """An AlertPacketError naming the field at fault (found by validation) for a failed write."""
    try:
        validate(packet, schema)
    except AlertPacketError as err:
        return err
    candid = packet.get("candid") if isinstance(packet, dict) else None
    return AlertPacketError(where, f"packet candid={candid} could not be serialised: {exc}")


_LAYOUT = ("schemavsn", "publisher", "objectId", "candid", "candidate", "prv_candidates", "fp_hists",
           "cutoutScience", "cutoutTemplate", "cutoutDifference")


class _Container:
    """Avro Object Container Files of single packets, the header (magic, embedded schema, codec null, sync
    marker) built once per schema: fastavro.writer re-encodes the 25 kB schema JSON for every file.

    For the ZTF 4.x layout the top level is encoded here and only the flat records (candidate, each
    prv_candidate and fp_hist) by fastavro: fastavro picks the branch of a ``["null", array]`` union by
    validating the whole array first, which doubled the cost of a packet with a 30-day history.
    """

    def __init__(self, schema: dict):
        import fastavro

        buf = io.BytesIO()
        fastavro.writer(buf, schema, [], codec="null")
        self.header = buf.getvalue()
        self.sync = self.header[-16:]
        self.schema = schema
        self._buf = io.BytesIO()
        named = schema.get("__named_schemas", {})
        fields = [f["name"] for f in schema.get("fields", ())]
        self._fast = tuple(fields) == _LAYOUT and all(
            f"ztf.alert.{n}" in named for n in ("candidate", "prv_candidate", "fp_hist"))
        self._limits: dict = {}
        if self._fast:
            self._candidate = named["ztf.alert.candidate"]
            self._prv = named["ztf.alert.prv_candidate"]
            self._fp = named["ztf.alert.fp_hist"]

    def _record(self, record_schema, datum) -> bytes:
        import fastavro

        buf = self._buf
        buf.seek(0)
        buf.truncate()
        fastavro.schemaless_writer(buf, record_schema, datum)
        return buf.getvalue()

    def _array(self, record_schema, items, parts, *, limits=False) -> None:
        if items is None:
            parts.append(b"\x00")
            return
        parts.append(b"\x02")
        if len(items):
            parts.append(_zigzag(len(items)))
            for item in items:
                if limits and item.get("candid") is None:
                    # an upper limit is image-level: every candidate of a quadrant shares those of the
                    # same earlier images, so each is encoded once
                    key = tuple(item.items())
                    data = self._limits.get(key)
                    if data is None:
                        if len(self._limits) > 100_000:
                            self._limits.clear()
                        data = self._limits[key] = self._record(record_schema, item)
                    parts.append(data)
                else:
                    parts.append(self._record(record_schema, item))
        parts.append(b"\x00")

    def _body(self, packet: dict) -> bytes:
        if not self._fast:
            return self._record(self.schema, packet)
        parts = [_string(packet["schemavsn"]), _string(packet["publisher"]), _string(packet["objectId"]),
                 _zigzag(int(packet["candid"])), self._record(self._candidate, packet["candidate"])]
        self._array(self._prv, packet.get("prv_candidates"), parts, limits=True)
        self._array(self._fp, packet.get("fp_hists"), parts)
        for key in _LAYOUT[7:]:
            cut = packet.get(key)
            if cut is None:
                parts.append(b"\x00")
            else:
                data = cut["stampData"]
                parts += [b"\x02", _string(cut["fileName"]), _zigzag(len(data)), bytes(data)]
        return b"".join(parts)

    def encode(self, packet: dict, where=None) -> bytes:
        try:
            data = self._body(packet)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise _fail(packet, self.schema, exc, where) from None
        return b"".join((self.header, _zigzag(1), _zigzag(len(data)), data, self.sync))


def _string(value) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    data = value.encode("utf-8")
    return _zigzag(len(data)) + data


def _zigzag(n: int) -> bytes:
    """An Avro long (zig-zag varint)."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_CONTAINERS: dict = {}


def _container(schema: dict) -> _Container:
    key = id(schema)
    entry = _CONTAINERS.get(key)
    if entry is None or entry.schema is not schema:
        entry = _CONTAINERS[key] = _Container(schema)
    return entry


def packet_bytes(packet: dict, schema: dict | None = None) -> bytes:
    """One packet as an Avro Object Container File (schema embedded, codec null).

    Parameters
    ----------
    packet : dict
        An alert (`ztfsds.alerts.packet.make_alert`).
    schema : dict, optional
        Parsed writer schema (default: `~ztfsds.alerts.schema.load_schema`).

    Returns
    -------
    bytes

    Raises
    ------
    ztfsds.errors.AlertPacketError
        The packet does not fit the schema (the message names the field).
    """
    return _container(_schema(schema)).encode(packet)


def encode_alerts(packets, schema: dict | None = None) -> list[tuple[int, bytes, bytes]]:
    """Encode packets once for the tar, Kafka and the archive: ``(candid, container, body)`` each.

    ``container`` is the Avro Object Container File of `packet_bytes`; ``body`` the same packet as
    schemaless Avro (what `ztfsds.archive.ingest_alerts` stores, with ``schema=``).

    Raises
    ------
    ztfsds.errors.AlertPacketError
        A packet does not fit the schema.
    """
    container = _container(_schema(schema))
    out = []
    for packet in packets:
        try:
            body = container._body(packet)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise _fail(packet, container.schema, exc) from None
        data = b"".join((container.header, _zigzag(1), _zigzag(len(body)), body, container.sync))
        out.append((int(packet["candid"]), data, body))
    return out


def write_alerts(packets, path: str | os.PathLike, schema: dict | None = None) -> Path:
    """Write the packets of one quadrant into one tar file of ``<candid>.avro`` members, atomically.

    Parameters
    ----------
    packets : iterable of dict, bytes or (int, bytes)
        Alert packets (dicts are serialised with `packet_bytes`; bytes are taken as ready containers;
        ``(candid, container bytes)`` pairs, e.g. from `encode_alerts`, are written as they are).
    path : path-like
        The tar file (``.tar``, or ``.tar.gz`` / ``.tgz`` for a gzipped one); its directory is created.
        An existing file is replaced only once the new one is complete.
    schema : dict, optional
        Parsed writer schema (default: the 4.02 schema).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ztfsds.errors.AlertPacketError
        A packet does not fit the schema (nothing is written).
    """
    import fastavro

    path = Path(path)
    schema = _schema(schema)
    container = _container(schema)
    mode = "w:gz" if path.name.endswith((".tar.gz", ".tgz")) else "w"
    now = int(time.time())
    with atomic_write(path, fsync=True) as tmp:
        with tarfile.open(tmp, mode, format=tarfile.PAX_FORMAT) as tar:
            for packet in packets:
                if isinstance(packet, tuple):
                    candid, data = int(packet[0]), bytes(packet[1])
                elif isinstance(packet, (bytes, bytearray)):
                    data = bytes(packet)
                    with io.BytesIO(data) as fh:
                        candid = next(fastavro.reader(fh))["candid"]
                else:
                    data = container.encode(packet, path)
                    candid = packet["candid"]
                info = tarfile.TarInfo(f"{int(candid)}.avro")
                info.size = len(data)
                info.mtime = now
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return path


def _records(fh, name) -> Iterator[dict]:
    import fastavro

    try:
        reader = fastavro.reader(fh)
        yield from reader
    except (ValueError, EOFError, StopIteration, TypeError, KeyError) as exc:
        raise AlertPacketError(name, f"not a readable Avro alert file: {exc}") from None


def _is_tar_name(name: str) -> bool:
    return name.endswith((".tar", ".tar.gz", ".tgz"))


def iter_alert_files(source) -> Iterator[tuple[str, dict]]:
    """``(name, packet)`` for every packet of a source (see `read_alerts`); ``name`` is the file or tar
    member it came from."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if data[:4] == b"Obj\x01":
            for rec in _records(io.BytesIO(data), "<bytes>"):
                yield "<bytes>", rec
            return
        try:
            tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
        except tarfile.TarError:
            raise AlertPacketError(None, "bytes are neither an Avro container nor a tar file") from None
        yield from _tar_records(tar, "<bytes>")
        return
    path = Path(source)
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and (child.suffix == ".avro" or _is_tar_name(child.name)):
                yield from iter_alert_files(child)
        return
    if not path.exists():
        raise InputError(path, "no such alert file or directory")
    if _is_tar_name(path.name) or (path.suffix != ".avro" and tarfile.is_tarfile(path)):
        try:
            tar = tarfile.open(path, "r:*")
        except (tarfile.TarError, OSError) as exc:
            raise AlertPacketError(path, f"not a readable tar file: {exc}") from None
        yield from _tar_records(tar, str(path))
        return
    with open(path, "rb") as fh:
        for rec in _records(fh, path):
            yield str(path), rec


def _tar_records(tar, where) -> Iterator[tuple[str, dict]]:
    with tar:
        try:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".avro"):
                    continue
                fh = tar.extractfile(member)
                name = f"{where}:{member.name}"
                data = fh.read()
                for rec in _records(io.BytesIO(data), name):
                    yield name, rec
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise AlertPacketError(where, f"truncated or corrupt tar file: {exc}") from None


def read_alerts(source) -> Iterator[dict]:
    """Every alert packet of a source, each decoded with the writer schema embedded in its own file.

    Parameters
    ----------
    source : path-like or bytes
        An ``.avro`` container (one or more packets), a ``.tar`` / ``.tar.gz`` / ``.tgz`` of ``.avro``
        members, a directory holding any of these (recursively, in name order), or the bytes of a
        container or tar file.

    Yields
    ------
    dict
        Packets as fastavro decodes them (bytes for ``stampData``).

    Raises
    ------
    ztfsds.errors.InputError
        The path does not exist.
    ztfsds.errors.AlertPacketError
        A file is not Avro / tar or is truncated (the message names the file or member).
    """
    for _, packet in iter_alert_files(source):
        yield packet


def compact_packet(packet: dict) -> dict:
    """A shallow copy of a packet with the three cutouts null."""
    out = dict(packet)
    for key in CUTOUT_FIELDS:
        out[key] = None
    return out


def write_compact(packet: dict, schema: dict | None = None) -> bytes:
    """A compact packet: schemaless Avro (no container header, no embedded schema), cutouts null.

    Parameters
    ----------
    packet : dict
        An alert packet.
    schema : dict, optional
        Parsed schema; the reader needs the same one (default: the 4.02 schema).

    Returns
    -------
    bytes

    Examples
    --------
    >>> from ztfsds.alerts.io import write_compact, read_compact
    >>> from ztfsds.alerts.packet import make_alert, upper_limit_record
    >>> from ztfsds.alerts.schema import field_names
    >>> cand = dict.fromkeys(field_names("candidate"))
    >>> cand.update(jd=2459000.5, fid=1, pid=1, programid=1, candid=1000, isdiffpos="t", ra=1.0, dec=2.0,
    ...             magpsf=18.0, sigmapsf=0.1, ranr=-999.0, decnr=-999.0, ndethist=1, ncovhist=1, nmtchps=0,
    ...             rfid=1, jdstartref=2458000.5, jdendref=2458100.5, nframesref=20, rbversion="x",
    ...             nmatches=100, drbversion="d6_m7")
    >>> data = write_compact(make_alert(cand, objectid="ZTF20aaaaaaa"))
    >>> read_compact(data)["candidate"]["magpsf"]
    18.0
    """
    import fastavro

    schema = _schema(schema)
    buf = io.BytesIO()
    compact = compact_packet(packet)
    try:
        fastavro.schemaless_writer(buf, schema, compact)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise _fail(compact, schema, exc) from None
    return buf.getvalue()


def read_compact(data: bytes, schema: dict | None = None) -> dict:
    """Decode a compact packet (`write_compact`) with the schema it was written with.

    Raises
    ------
    ztfsds.errors.AlertPacketError
        The bytes do not decode with ``schema`` (another schema, truncated data).
    """
    import fastavro

    schema = _schema(schema)
    try:
        fh = io.BytesIO(bytes(data))
        out = fastavro.schemaless_reader(fh, schema, None)
    except (ValueError, EOFError, TypeError, KeyError, IndexError, UnicodeDecodeError) as exc:
        raise AlertPacketError(None, f"compact packet does not decode with schema {schema.get('version')!r}: "
                                     f"{exc}") from None
    if fh.tell() != len(data):
        raise AlertPacketError(None, f"compact packet has {len(data) - fh.tell()} trailing bytes: written with "
                                     f"another schema than {schema.get('version')!r}?")
    return out


def validate(packet: dict, schema: dict | None = None) -> None:
    """Check a packet against a schema (fastavro.validation).

    Raises
    ------
    ztfsds.errors.AlertPacketError
        The packet does not validate; the message lists the offending fields.
    """
    from fastavro.validation import ValidationError
    from fastavro.validation import validate as _validate

    schema = _schema(schema)
    try:
        _validate(packet, schema, raise_errors=True)
    except ValidationError as exc:
        candid = packet.get("candid") if isinstance(packet, dict) else None
        raise AlertPacketError(None, f"packet candid={candid} does not follow alert schema "
                                     f"{schema.get('version')!r}: {exc}") from None
