"""The isolated pipeline the tests and benchmarks build on."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, TopicPartition

from infra.pipeline import IsolatedPipeline

pytestmark = pytest.mark.integration


def test_its_topics_exist_as_soon_as_capture_starts(pipeline: IsolatedPipeline) -> None:
    """Debezium creates a topic only with its first record. Offsets read right after
    `start_capture()` (the ingest benchmark's first step) must not meet a missing topic:
    kafka-python then fails with a bare KeyError."""
    s = pipeline.settings
    pipeline.start_capture()
    tps = [TopicPartition(r.cdc_topic, 0) for r in pipeline.regions]
    tps.append(TopicPartition(s.deadletter_topic, 0))
    consumer = KafkaConsumer(**s.kafka_client_config())
    try:
        ends = consumer.end_offsets(tps)
    finally:
        consumer.close()
    assert set(ends) == set(tps)
    assert all(isinstance(o, int) and o >= 0 for o in ends.values())
