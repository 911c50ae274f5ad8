"""The topics the projector reads and writes, created before it subscribes.

Debezium creates a region's topic with its first record; a consumer group that joins
before that gets no partition for it. Creating the topics first (same settings as the
connector's `topic.creation.*`) makes start-up order irrelevant.
"""

from __future__ import annotations

from kafka import KafkaAdminClient

from stockcdc.settings import Settings

#: One partition per region keeps its commit order; kept forever: it is the replay log.
CDC_TOPIC_CONFIG = {"retention.ms": "-1", "compression.type": "lz4"}


def ensure_topics(settings: Settings) -> None:
    """Create the regions' CDC topics and the dead-letter topic if missing."""
    wanted = [r.cdc_topic for r in settings.region_list()] + [settings.deadletter_topic]
    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        missing = [t for t in wanted if t not in set(admin.list_topics())]
        if missing:
            admin.create_topics(
                {
                    t: {"num_partitions": 1, "replication_factor": 1, "configs": CDC_TOPIC_CONFIG}
                    for t in missing
                },
                raise_errors=False,  # a concurrent creator (the connector) is fine
                wait_for_metadata=True,
            )
    finally:
        admin.close()
