"""Alert distribution to Apache Kafka (the protocol the brokers consume), through confluent-kafka.

ZTF publishes each night's alerts on one topic per program, ``ztf_YYYYMMDD_programid1`` for the public
stream (`topic_name`); every message is one packet as an Avro container with its schema embedded
(`ztfsds.alerts.io.packet_bytes`), keyed here by its ``candid``.

confluent-kafka is optional and imported only when a `KafkaDistributor` is made. Without it, without a
broker answering within ``timeout``, or when deliveries fail, `~ztfsds.errors.AlertDistributionError`
says so; the quadrant's tar file (`ztfsds.alerts.io.write_alerts`, written first) still holds every
packet, so nothing is lost and the night can be re-sent later (`send_alerts` takes the packets read back
with `~ztfsds.alerts.io.read_alerts`).
"""

from __future__ import annotations

import datetime as _dt
import logging

from ..errors import AlertDistributionError
from ..products import ids
from .io import packet_bytes
from .schema import load_schema

__all__ = ["KafkaDistributor", "send_alerts", "topic_name"]

log = logging.getLogger(__name__)


def topic_name(night, programid: int = 1, *, prefix: str = "ztf") -> str:
    """The Kafka topic of one night and program, as ZTF names them.

    Parameters
    ----------
    night : float or `datetime.date` or str
        A JD during the night (UT date), a date, or ``'YYYYMMDD'``.
    programid : int, optional
        1 public, 2 partnership, 3 Caltech.
    prefix : str, optional

    Examples
    --------
    >>> from ztfsds.alerts.kafka import topic_name
    >>> topic_name(2459116.9317708), topic_name("20180601", 2)
    ('ztf_20200924_programid1', 'ztf_20180601_programid2')
    """
    if isinstance(night, str):
        day = night
    elif isinstance(night, _dt.date):
        day = f"{night:%Y%m%d}"
    else:
        day = f"{ids.night_date(ids.nid(float(night))):%Y%m%d}"
    return f"{prefix}_{day}_programid{int(programid)}"


class KafkaDistributor:
    """A Kafka producer of alert packets for one topic.

    Parameters
    ----------
    servers : str
        ``bootstrap.servers`` (``'host:9092[,host2:9092]'``).
    topic : str
        Topic (`topic_name`).
    timeout : float, optional
        Seconds to wait for the broker's metadata on connection and for the deliveries on `flush`.
    config : dict, optional
        More confluent-kafka producer settings (``'compression.type'``, security ...).
    schema : dict, optional
        Parsed schema for packets given as dicts (default: the 4.02 schema).

    Raises
    ------
    ztfsds.errors.AlertDistributionError
        confluent-kafka is not installed, or no broker answered within ``timeout``.
    """

    def __init__(self, servers: str, topic: str, *, timeout: float = 10.0, config: dict | None = None,
                 schema: dict | None = None):
        self.servers = str(servers)
        self.topic = str(topic)
        self.timeout = float(timeout)
        self.schema = schema
        self._errors: list[str] = []
        self.sent = 0
        try:
            import confluent_kafka
        except ImportError:
            raise AlertDistributionError(self.servers, self.topic,
                                         "the Kafka client confluent-kafka is not installed "
                                         "(pip install confluent-kafka)") from None
        self._kafka = confluent_kafka
        settings = {"bootstrap.servers": self.servers, "message.max.bytes": 10_000_000,
                    "socket.timeout.ms": int(self.timeout * 1000), "message.timeout.ms": int(self.timeout * 1000)}
        settings.update(config or {})
        try:
            self._producer = confluent_kafka.Producer(settings)
            # metadata request: fails fast when no broker is reachable
            self._producer.list_topics(timeout=self.timeout)
        except Exception as exc:  # KafkaException, or a configuration error (ValueError)
            raise AlertDistributionError(self.servers, self.topic,
                                         f"no Kafka broker answered within {self.timeout:g} s ({exc})") from None

    def _delivered(self, err, msg):
        if err is not None:
            self._errors.append(str(err))
        else:
            self.sent += 1

    def send(self, packets) -> int:
        """Queue packets (dicts, or container bytes) for the topic; returns how many were queued."""
        schema = self.schema if self.schema is not None else load_schema()
        n = 0
        for packet in packets:
            if isinstance(packet, (bytes, bytearray)):
                value, key = bytes(packet), None
            else:
                value, key = packet_bytes(packet, schema), str(packet["candid"]).encode()
            while True:
                try:
                    self._producer.produce(self.topic, value=value, key=key, on_delivery=self._delivered)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    self._producer.poll(0.5)
                except Exception as exc:
                    raise AlertDistributionError(self.servers, self.topic, f"produce failed: {exc}") from None
            self._producer.poll(0)
            n += 1
        return n

    def flush(self) -> int:
        """Wait for every queued packet to be delivered; returns the number delivered so far.

        Raises
        ------
        ztfsds.errors.AlertDistributionError
            Packets are still undelivered after ``timeout``, or a delivery failed.
        """
        left = self._producer.flush(self.timeout)
        if left:
            raise AlertDistributionError(self.servers, self.topic,
                                         f"{left} packet(s) not delivered within {self.timeout:g} s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise AlertDistributionError(self.servers, self.topic,
                                         f"{len(errors)} delivery failure(s), first: {errors[0]}")
        return self.sent

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.flush()


def send_alerts(packets, servers: str, topic: str, *, timeout: float = 10.0, config: dict | None = None,
                schema: dict | None = None) -> int:
    """Send packets to a Kafka topic and wait for their delivery.

    Parameters
    ----------
    packets : iterable of dict or bytes
        Alert packets, or their Avro containers (e.g. read from a quadrant's tar file).
    servers, topic, timeout, config, schema
        See `KafkaDistributor`.

    Returns
    -------
    int
        Packets delivered.

    Raises
    ------
    ztfsds.errors.AlertDistributionError
        No confluent-kafka, no broker, or failed deliveries (the tar copy is untouched).
    """
    with KafkaDistributor(servers, topic, timeout=timeout, config=config, schema=schema) as dist:
        dist.send(packets)
    log.info("sent %d alert packets to %s topic %s", dist.sent, servers, topic)
    return dist.sent
