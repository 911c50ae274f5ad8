"""Kafka (KRaft, single node) and Kafka Connect (distributed) as local Java processes.

Their jars come from Maven Central through the poms under `infra/maven/` (cached in
~/.m2; copied into `<state>/lib` once per pom version). Each process has a pid file under
`<state>/run` and a log under `<state>/logs`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import httpx

from infra.errors import InfraError
from stockcdc.settings import Settings

MAVEN_DIR = Path(str(files("infra").joinpath("maven")))

LOG4J2_PROPERTIES = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.kafkacore.name = kafka
logger.kafkacore.level = WARN
logger.debezium.name = io.debezium
logger.debezium.level = INFO
logger.connect.name = org.apache.kafka.connect.runtime.WorkerSourceTask
logger.connect.level = INFO
"""


def java_bin(settings: Settings) -> str:
    """The `java` to run (JAVA_HOME or PATH), checked to be 17 or newer."""
    home = settings.infra.java_home or (
        Path(os.environ["JAVA_HOME"]) if "JAVA_HOME" in os.environ else None
    )
    java = str(home / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise InfraError(
            "java not found: install OpenJDK 17 (apt-get install openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)', out)
    if not m or int(m.group(1)) < 17:
        raise InfraError(f"Kafka 4 needs Java 17 or newer; {java} says: {out.strip()}")
    return java


def ensure_jars(settings: Settings) -> tuple[Path, Path]:
    """Resolve the Kafka classpath and the Debezium plugin folder (idempotent, cached).

    Returns (kafka lib dir, Connect plugin.path dir)."""
    lib = settings.state_path / "lib"
    kafka_dir, plugin_root = lib / "kafka", lib / "connect-plugins"
    targets: tuple[tuple[Path, Path, list[str]], ...] = (
        (MAVEN_DIR / "kafka" / "pom.xml", kafka_dir, []),
        # Kafka's own classes, and the Jackson its JsonConverter speaks, come from the
        # Connect runtime, never from the plugin folder (else linkage errors at discovery).
        (
            MAVEN_DIR / "debezium" / "pom.xml",
            plugin_root / "debezium-postgres",
            ["-DexcludeGroupIds=org.apache.kafka,org.slf4j,com.fasterxml.jackson.core"],
        ),
    )
    for pom, out_dir, extra in targets:
        stamp = out_dir / ".pom-sha1"
        digest = hashlib.sha1(pom.read_bytes(), usedforsecurity=False).hexdigest()
        if stamp.exists() and stamp.read_text() == digest:
            continue
        mvn = shutil.which("mvn")
        if not mvn:
            raise InfraError("mvn not found: install Maven (apt-get install maven)")
        shutil.rmtree(out_dir, ignore_errors=True)
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={out_dir}",
                *extra,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise InfraError(
                f"Maven could not resolve {pom}:\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
            )
        stamp.write_text(digest)
    return kafka_dir, plugin_root


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class JavaService:
    """A Java main class run in the background with a pid file and a log file."""

    settings: Settings
    name: str  # "kafka" or "connect"
    main_class: str
    heap: str
    port: int

    @property
    def pid_file(self) -> Path:
        return self.settings.state_path / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.settings.state_path / "logs" / f"{self.name}.log"

    @property
    def config_dir(self) -> Path:
        return self.settings.state_path / "config"

    def pid(self) -> int | None:
        """Pid of the running process, or None (a stale pid file counts as down)."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        # A recycled pid belongs to some other program: check it is our main class.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if self.main_class.encode() in cmdline else None

    def start(self, args: list[str]) -> None:
        if self.pid() is not None:
            return
        kafka_lib, _ = ensure_jars(self.settings)
        for d in (self.pid_file.parent, self.log_file.parent, self.config_dir):
            d.mkdir(parents=True, exist_ok=True)
        log4j = self.config_dir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES)
        argv = [
            java_bin(self.settings),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{kafka_lib}/*",
            self.main_class,
            *args,
        ]
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        # Until exec() completes /proc shows python's command line, not the main class.
        deadline = time.monotonic() + 10
        while self.pid() is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)

    def wait_port(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise InfraError(
                    f"{self.name} exited during start-up; see {self.log_file}:\n"
                    + tail(self.log_file)
                )
            if port_open(self.port):
                return
            time.sleep(0.5)
        raise InfraError(
            f"{self.name} did not open port {self.port} in {timeout_s:.0f}s; see {self.log_file}"
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.2)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64, as `kafka-storage random-uuid`
    makes it. Like Kafka's own Uuid.randomUuid, never one starting with '-': a command
    line would read it as an option (one in 64 ids did, and the broker never formatted)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_service(settings: Settings) -> JavaService:
    infra = settings.infra
    return JavaService(settings, "kafka", "kafka.Kafka", infra.kafka_heap, infra.kafka_port)


def connect_service(settings: Settings) -> JavaService:
    return JavaService(
        settings,
        "connect",
        "org.apache.kafka.connect.cli.ConnectDistributed",
        settings.infra.connect_heap,
        settings.infra.connect_port,
    )


def start_kafka(settings: Settings) -> None:
    """Write the KRaft config, format storage once, start the broker and wait for it."""
    svc = kafka_service(settings)
    if svc.pid() is not None:
        return
    data = settings.state_path / "kafka-data"
    svc.config_dir.mkdir(parents=True, exist_ok=True)
    props = svc.config_dir / "server.properties"
    props.write_text(f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{settings.infra.kafka_controller_port}
listeners=PLAINTEXT://127.0.0.1:{settings.infra.kafka_port},CONTROLLER://127.0.0.1:{settings.infra.kafka_controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{settings.infra.kafka_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
# CDC topics are the projection's replay log: keep them until told otherwise.
log.retention.hours=-1
log.retention.bytes=-1
""")
    if not (data / "meta.properties").exists():
        kafka_lib, _ = ensure_jars(settings)
        cluster_id = new_cluster_id()
        result = subprocess.run(
            [
                java_bin(settings),
                "-cp",
                f"{kafka_lib}/*",
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                "-c",
                str(props),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise InfraError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
    svc.start([str(props)])
    svc.wait_port(settings.start_timeout_s)


def _wait_connect_ready(settings: Settings, svc: JavaService) -> None:
    """The REST port opens before the worker has joined its group and loaded plugins;
    wait until it lists the Debezium connector class."""
    deadline = time.monotonic() + settings.start_timeout_s
    while time.monotonic() < deadline:
        if svc.pid() is None:
            raise InfraError(
                f"connect exited during start-up; see {svc.log_file}:\n" + tail(svc.log_file)
            )
        try:
            resp = httpx.get(f"{settings.infra.connect_url}/connector-plugins", timeout=5)
            if resp.status_code == 200 and "PostgresConnector" in resp.text:
                resp = httpx.get(f"{settings.infra.connect_url}/connectors", timeout=5)
                if resp.status_code == 200:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise InfraError(
        f"Kafka Connect REST not ready in {settings.start_timeout_s:.0f}s; see {svc.log_file}"
    )


def start_connect(settings: Settings) -> None:
    """Start the Connect worker (distributed mode) and wait for its REST API."""
    svc = connect_service(settings)
    if svc.pid() is not None:
        return
    _, plugin_path = ensure_jars(settings)
    svc.config_dir.mkdir(parents=True, exist_ok=True)
    props = svc.config_dir / "connect-distributed.properties"
    props.write_text(f"""\
bootstrap.servers={settings.infra.kafka_bootstrap}
group.id=stockcdc-connect
listeners=http://127.0.0.1:{settings.infra.connect_port}
rest.advertised.host.name=127.0.0.1
rest.advertised.port={settings.infra.connect_port}
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false
config.storage.topic=_connect-configs
offset.storage.topic=_connect-offsets
status.storage.topic=_connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.flush.interval.ms=1000
plugin.path={plugin_path}
plugin.discovery=hybrid_warn
topic.creation.enable=true
""")
    svc.start([str(props)])
    svc.wait_port(settings.start_timeout_s)
    _wait_connect_ready(settings, svc)
