"""kill -9 of the consumer process at random moments during a long mixed workload; a
fresh process resumes from the last committed boundary each time. At the end the
projection equals every WMS (reconciliation: zero differences), and a poison record
written mid-stream went to the dead-letter topic without stopping the flow."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from cdc_consumers.projector import Projector
from infra.pipeline import IsolatedPipeline
from read_model.client import make_client
from read_model.migrate import migrate
from read_model.reconcile import reconcile
from read_model.writer import ProjectionWriter
from simulator.seed import parse_size, seed_region
from tests.integration.chain import LiveChain
from tests.integration.faults.profile import assert_zero_differences, profile, workload

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]


class ProjectorProcess:
    """`stockcdc project` as its own process, on the isolated pipeline's settings."""

    def __init__(self, pipeline: IsolatedPipeline, log_dir: Path) -> None:
        s = pipeline.settings
        self.env = {
            **os.environ,
            "STOCKCDC_CDC_NAMESPACE": s.cdc_namespace,
            "STOCKCDC_PG_DATABASE": s.pg_database,
            "STOCKCDC_CONSUMER_GROUP": s.consumer_group,
            "STOCKCDC_CLICKHOUSE_URL": s.clickhouse_dsn,
            "STOCKCDC_DEADLETTER_TOPIC": s.deadletter_topic,
        }
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"projector-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stockcdc", "project", "--no-progress"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill9(self) -> None:
        assert self.proc is not None
        assert self.proc.poll() is None, f"the projector died on its own: {self.last_log()}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM: the projector flushes and commits its last batch, then exits 0. Sent
        once the command has said it is starting: before it installs its handlers, a
        SIGTERM kills the interpreter, as it would any program."""
        if self.proc is not None and self.proc.poll() is None:
            deadline = time.monotonic() + 120
            while "projector.starting" not in self.log():
                assert self.proc.poll() is None, f"the projector died: {self.last_log()}"
                assert time.monotonic() < deadline, f"it never started: {self.last_log()}"
                time.sleep(0.1)
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=60) == 0, self.last_log()

    def log(self) -> str:
        return (self.log_dir / f"projector-{self.starts}.log").read_text()

    def last_log(self) -> str:
        return self.log()[-3000:]


@pytest.fixture(scope="module")
def process(
    pipeline: IsolatedPipeline, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProjectorProcess]:
    s = pipeline.settings
    import psycopg

    for region in pipeline.regions:
        with psycopg.connect(s.pg_dsn(region, "app")) as conn:
            seed_region(conn, region, seed=51, size=parse_size("150"))
    pipeline.start_capture()
    proc = ProjectorProcess(pipeline, tmp_path_factory.mktemp("projector-logs"))
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait(timeout=30)


def _poison(pipeline: IsolatedPipeline) -> None:
    """An undecodable record in a region topic, between real transactions."""
    producer = KafkaProducer(**pipeline.settings.kafka_client_config())
    try:
        producer.send(pipeline.regions[0].cdc_topic, key=b"{}", value=b"\x00not json").get(30)
    finally:
        producer.close()


def _dead_letters(pipeline: IsolatedPipeline) -> int:
    """Records in the dead-letter topic (its end offset: nothing else writes to it)."""
    consumer = KafkaConsumer(**pipeline.settings.kafka_client_config())
    try:
        tp = TopicPartition(pipeline.settings.deadletter_topic, 0)
        return int(consumer.end_offsets([tp])[tp]) - int(consumer.beginning_offsets([tp])[tp])
    finally:
        consumer.close()


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    pipeline: IsolatedPipeline, process: ProjectorProcess
) -> None:
    p = profile()
    rng = random.Random(7)
    process.start()
    with workload(pipeline.settings, pipeline.regions, p.rate, seed=5):
        for i in range(p.kills):
            # Random moments: during start-up and group join, mid-batch, between flushes.
            time.sleep(rng.uniform(0.5, 5.0))
            process.kill9()
            if i == p.kills // 2:
                _poison(pipeline)
            process.start()
        time.sleep(3)
    process.stop()
    assert process.starts == p.kills + 1

    # Finish in this process: catch up from the committed offsets, then reconcile.
    s = pipeline.settings
    client = make_client(s)
    projector = Projector(s, ProjectionWriter(client))
    import threading

    chain = LiveChain(pipeline, client, projector, threading.Thread(target=projector.run))
    try:
        migrate(client, s.clickhouse_cluster)
        chain.thread.start()
        chain.wait_caught_up()
        assert_zero_differences(reconcile(s, client, pipeline.regions))
    finally:
        chain.projector.stop.set()
        chain.thread.join(timeout=60)
        client.close()
    # At least once: a kill between the dead letter and its offset commit sends it again.
    assert _dead_letters(pipeline) >= 1


def test_a_sigterm_during_start_up_stops_it_cleanly(process: ProjectorProcess) -> None:
    """Stopped while it opens ClickHouse and migrates (`systemctl stop` right after a
    start, say): the projector exits 0, having started nothing it must undo."""
    process.start()
    process.stop()  # asserts exit code 0
    assert "projector.stop" in process.log()
