"""Kafka distribution without a broker: clear errors, and the producer path on a stand-in client."""

import io
import sys
import types

import fastavro
import pytest

from ztfsds.alerts import KafkaDistributor, candidate_records, make_alert, send_alerts, topic_name
from ztfsds.errors import AlertDistributionError


class FakeKafkaException(Exception):
    pass


def fake_module(*, reachable=True, fail_delivery=False):
    """A stand-in for confluent_kafka recording what is produced."""
    sent = []

    class Producer:
        def __init__(self, config):
            self.config = config
            self.pending = []

        def list_topics(self, timeout=None):
            if not reachable:
                raise FakeKafkaException("KafkaError{code=_TRANSPORT,val=-195,str=\"Failed to get metadata\"}")
            return {}

        def produce(self, topic, value=None, key=None, on_delivery=None):
            self.pending.append((topic, value, key, on_delivery))

        def poll(self, timeout=0):
            while self.pending:
                topic, value, key, cb = self.pending.pop(0)
                sent.append((topic, key, value))
                cb("Broker: Message size too large" if fail_delivery else None, None)
            return 0

        def flush(self, timeout=None):
            self.poll()
            return 0

    module = types.ModuleType("confluent_kafka")
    module.Producer = Producer
    module.KafkaException = FakeKafkaException
    return module, sent


@pytest.fixture(scope="module")
def packets(quadrant):
    cands, sci, diff, stamps = quadrant
    recs = candidate_records(cands[:5], sci, diff)
    return [make_alert(r, objectid="ZTF20aaaaaac", cutouts=stamps[i]) for i, r in enumerate(recs)]


def test_topic_names_like_ztf():
    assert topic_name(2459116.9317708) == "ztf_20200924_programid1"
    assert topic_name("20180601", programid=2) == "ztf_20180601_programid2"


def test_without_confluent_kafka_the_error_is_clear(monkeypatch, packets):
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)   # import fails as if not installed
    with pytest.raises(AlertDistributionError) as err:
        send_alerts(packets, "localhost:9092", "ztf_20200924_programid1")
    msg = str(err.value)
    assert "confluent-kafka is not installed" in msg and "localhost:9092" in msg
    assert "remain in the alert tar file" in msg


def test_without_a_broker_the_error_is_clear(monkeypatch, packets):
    module, sent = fake_module(reachable=False)
    monkeypatch.setitem(sys.modules, "confluent_kafka", module)
    with pytest.raises(AlertDistributionError, match="no Kafka broker answered within 0.5 s"):
        KafkaDistributor("nohost:9092", "ztf_20200924_programid1", timeout=0.5)
    assert sent == []


def test_packets_are_produced_as_containers(monkeypatch, packets):
    module, sent = fake_module()
    monkeypatch.setitem(sys.modules, "confluent_kafka", module)
    n = send_alerts(packets, "broker:9092", "ztf_20200924_programid1")
    assert n == len(packets) == len(sent)
    for (topic, key, value), packet in zip(sent, packets):
        assert topic == "ztf_20200924_programid1" and key == str(packet["candid"]).encode()
        back = next(fastavro.reader(io.BytesIO(value)))
        assert back["candid"] == packet["candid"]
    module, sent = fake_module(fail_delivery=True)
    monkeypatch.setitem(sys.modules, "confluent_kafka", module)
    with pytest.raises(AlertDistributionError, match="5 delivery failure.*too large"):
        send_alerts(packets, "broker:9092", "t")
