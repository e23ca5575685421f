"""The ingest consumer against a real Mosquitto: poison messages never stall the stream."""

from __future__ import annotations

import time
from collections.abc import Sequence

from cloud_ingest.consumer import ISOLATE_AFTER_FAILURES, Consumer, ConsumerConfig
from cloud_ingest.service import IngestResult, IngestService, RawMessage
from cloud_ingest.storage import open_storage
from remon.brokers import MosquittoProcess
from tests.helpers import envelope, glucose
from tests.test_end_to_end import _publish, wait_until


class RefusesOnePayload(IngestService):
    """The production service, except that the database 'refuses' one particular message.

    Stands in for a value the decoder accepts but a database rejects (the review found NUL
    characters doing this on PostgreSQL before the decoder learned to refuse them).
    """

    bad: bytes = b""

    def ingest_batch(self, batch: Sequence[RawMessage]) -> IngestResult:
        if any(m.payload == self.bad for m in batch):
            raise RuntimeError("simulated: the database refused a value")
        return super().ingest_batch(batch)


def test_a_message_the_database_refuses_is_dead_lettered_and_the_rest_flow(
    sqlite_url: str, fresh_mosquitto: MosquittoProcess
) -> None:
    storage = open_storage(sqlite_url)
    service = RefusesOnePayload(storage)
    good = [envelope([glucose(n, 6.0)], site="poison") for n in range(1, 21)]
    bad = envelope([glucose(99, 6.0)], site="poison")
    service.bad = bad.payload
    consumer = Consumer(
        service,
        ConsumerConfig(
            url=fresh_mosquitto.url, client_id="it-poison", batch_max=50, batch_wait_s=0.2
        ),
    )
    consumer.start()
    try:
        items = [(m.topic, m.payload) for m in good[:10]]
        items += [(bad.topic, bad.payload)]
        items += [(m.topic, m.payload) for m in good[10:]]
        _publish(fresh_mosquitto.port, items)
        wait_until(lambda: service.stats().observations >= 20, 30, "the good readings")
        wait_until(lambda: service.stats().dead_letters >= 1, 10, "the dead letter")
        time.sleep(0.3)
        assert service.stats().observations == 20
        letters = service.list_dead_letters(limit=5)
        assert [d.code for d in letters] == ["store-failed"]
        assert letters[0].payload == bad.payload
        assert "refused" in letters[0].detail
        assert consumer.stats.ingest_failures >= ISOLATE_AFTER_FAILURES
    finally:
        consumer.stop()
        storage.close()


def test_start_returns_only_once_the_subscription_is_granted(
    sqlite_url: str, fresh_mosquitto: MosquittoProcess
) -> None:
    """A message published the moment ``start()`` returns reaches a brand-new session.

    Before the fix, ``start()`` returned on CONNACK; a publish racing the SUBSCRIBE was lost for
    a new session (CI saw exactly one message missing).
    """
    storage = open_storage(sqlite_url)
    service = IngestService(storage)
    try:
        for n in range(1, 11):
            consumer = Consumer(
                service, ConsumerConfig(url=fresh_mosquitto.url, client_id=f"it-ready-{n}")
            )
            consumer.start()
            try:
                assert consumer.stats.connected
                msg = envelope([glucose(n, 6.0)], site="ready")
                _publish(fresh_mosquitto.port, [(msg.topic, msg.payload)])
                wait_until(lambda n=n: service.stats().observations >= n, 10, f"reading {n}")
            finally:
                consumer.stop()
    finally:
        storage.close()
