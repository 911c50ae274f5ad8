"""Raw access to the regions' CDC topics: used by the demo and by chain tests to look at
Debezium events as they are on Kafka, before any decoding."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.serializer import Deserializer

from stockcdc.settings import Settings


@dataclass(frozen=True)
class RawEvent:
    topic: str
    partition: int
    offset: int
    key: Any
    value: Any  # parsed JSON, or None for a tombstone


class _JsonOrNone(Deserializer):  # type: ignore[misc]
    """JSON bytes to Python; None stays None (tombstones)."""

    def deserialize(self, topic: str, headers: Any, data: bytes | None) -> Any:
        return None if data is None else json.loads(data)


def end_offsets(settings: Settings, topic: str) -> int:
    """Current end offset of partition 0 of a topic (0 when it does not exist yet)."""
    consumer = KafkaConsumer(**settings.kafka_client_config())
    try:
        if not consumer.partitions_for_topic(topic):
            return 0
        tp = TopicPartition(topic, 0)
        return int(consumer.end_offsets([tp])[tp])
    finally:
        consumer.close()


def iter_events(
    settings: Settings,
    topic: str,
    start_offset: int = 0,
    timeout_s: float = 60.0,
    until: Callable[[RawEvent], bool] | None = None,
) -> Iterator[RawEvent]:
    """Yield events of partition 0 from `start_offset` until `until` says stop or the time
    runs out (then it just ends; callers assert on what they saw)."""
    consumer = KafkaConsumer(
        **settings.kafka_client_config(),
        enable_auto_commit=False,
        key_deserializer=_JsonOrNone(),
        value_deserializer=_JsonOrNone(),
    )
    try:
        tp = TopicPartition(topic, 0)
        deadline = time.monotonic() + timeout_s
        while not consumer.partitions_for_topic(topic):
            if time.monotonic() > deadline:
                return
            time.sleep(0.5)
            consumer.topics()
        consumer.assign([tp])
        consumer.seek(tp, start_offset)
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for record in batch.get(tp, []):
                event = RawEvent(
                    record.topic, record.partition, record.offset, record.key, record.value
                )
                yield event
                if until is not None and until(event):
                    return
    finally:
        consumer.close()
