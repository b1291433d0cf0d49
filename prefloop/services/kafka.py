"""A single-node Apache Kafka broker in KRaft mode, from Maven Central jars, under the prefloop home."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from prefloop.errors import ServiceError
from prefloop.kafka_client import KafkaSecurity, jaas_quote, java_client_properties, options_for, security, start_client
from prefloop.services.process import ManagedProcess, ensure_port_free, port_open, wait_until
from prefloop.settings import Settings

DIST_DIR = Path(__file__).parent / "kafka_dist"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
CONFIG_TOOL = "kafka.admin.ConfigCommand"  # kafka-configs


def jars_dir(settings: Settings) -> Path:
    return settings.cache_dir / f"kafka-{settings.kafka_version}" / "libs"


def ensure_jars(settings: Settings, quiet: bool = False) -> Path:
    """Fetch the broker's jars once with `mvn dependency:copy-dependencies`; later calls are instant."""
    libs = jars_dir(settings)
    stamp = libs / ".complete"
    if stamp.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("Maven (mvn) is needed once to fetch the Kafka jars: apt-get install -y maven")
    if not quiet:
        print(f"fetching Apache Kafka {settings.kafka_version} jars from Maven Central into {libs} (once)…", file=sys.stderr)
    work = libs.parent
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(DIST_DIR / "pom.xml", work / "pom.xml")
    tmp = work / "libs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
           f"-Dkafka.version={settings.kafka_version}", f"-DoutputDirectory={tmp}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-10:])
        raise ServiceError(f"mvn could not fetch Kafka {settings.kafka_version}:\n{tail}")
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    stamp.touch()
    return libs


def java() -> str:
    path = shutil.which("java")
    if path is None:
        raise ServiceError("Java 17+ is needed to run Kafka: apt-get install -y openjdk-17-jre-headless")
    return path


def server_properties(settings: Settings) -> str:
    host, port, cport = settings.kafka_host, settings.kafka_port, settings.kafka_controller_port
    sec = security(settings)
    client = sec.security_protocol  # the listener clients use: PLAINTEXT, or as [kafka] security_protocol says
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{host}:{cport}",
        f"listeners={client}://{host}:{port},CONTROLLER://{host}:{cport}",
        f"advertised.listeners={client}://{host}:{port}",
        "controller.listener.names=CONTROLLER",
        # The controller's listener only serves the KRaft quorum (this one process), on loopback.
        f"listener.security.protocol.map={client}:{client},CONTROLLER:PLAINTEXT",
        f"inter.broker.listener.name={client}",
        *_listener_security(settings, sec),
        f"log.dirs={settings.home / 'kafka' / 'data'}",
        # Topics are created explicitly with their partition counts; a typo must not create one.
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=8",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "num.partitions=1",
        "log.retention.hours=168",
        "",
    ])


class KafkaService:
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.home / "kafka"
        self.proc = ManagedProcess.of(settings, "kafka")

    def start(self) -> None:
        libs = ensure_jars(self.settings)
        ensure_port_free(self.settings.kafka_port, "Kafka", "kafka_port")
        ensure_port_free(self.settings.kafka_controller_port, "the Kafka controller", "kafka_controller_port")
        self.dir.mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        props.write_text(server_properties(self.settings))
        props.chmod(0o600)  # it holds the broker's SASL password when SASL is on
        classpath = f"{libs}/*"
        log4j = f"-Dlog4j2.configurationFile={DIST_DIR / 'log4j2.properties'}"
        if not (self.dir / "data" / "meta.properties").exists():
            cluster_id = uuid.uuid4().hex[:22]
            fmt = subprocess.run(
                [java(), "-cp", classpath, log4j, STORAGE_TOOL, "format", "-t", cluster_id, "-c", str(props),
                 *_scram_arguments(self.settings)],
                capture_output=True, text=True,
            )
            if fmt.returncode != 0:
                last = (fmt.stdout + fmt.stderr).strip().splitlines()[-1]
                raise ServiceError(f"formatting Kafka storage failed: {last.replace(security(self.settings).sasl_password or chr(0), '(hidden)')}")
        heap = self.settings.kafka_heap
        self.proc.start([
            java(), f"-Xmx{heap}", f"-Xms{min_heap(heap)}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", log4j, "-cp", classpath, MAIN_CLASS, str(props),
        ])
        wait_until(self.proc, self.healthy, self.settings.start_timeout_s, "Kafka")
        from prefloop.kafka_admin import create_topics

        asyncio.run(create_topics(self.settings, self.settings.topics()))

    def healthy(self) -> bool:
        return port_open(self.settings.kafka_port, self.settings.kafka_host)

    def stop(self) -> bool:
        return self.proc.stop(timeout_s=30)


def _listener_security(settings: Settings, sec: KafkaSecurity) -> list[str]:
    """TLS and SASL lines of the local broker's client listener, from the same [kafka] settings the clients
    use: the broker itself connects with sasl_username (a SCRAM user made when its storage is formatted)."""
    lines = []
    name = sec.security_protocol.lower()
    if sec.tls:
        if not sec.broker_keystore:
            raise ServiceError(f"the local broker needs [kafka] broker_keystore (a PEM file with its key and certificate) "
                               f"to listen with {sec.security_protocol}")
        lines += ["ssl.keystore.type=PEM", f"ssl.keystore.location={sec.broker_keystore}",
                  f"ssl.client.auth={'required' if sec.broker_client_auth else 'none'}"]
        if sec.ssl_cafile:
            lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={sec.ssl_cafile}"]
    if sec.sasl:
        mechanism = sec.sasl_mechanism
        user, password = jaas_quote(sec.sasl_username), jaas_quote(sec.sasl_password)
        if mechanism == "PLAIN":  # PLAIN users live in the broker's JAAS line
            jaas = (f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{user}" '
                    f'password="{password}" user_{user}="{password}";')
        else:  # SCRAM users live in the cluster metadata (kafka-storage format --add-scram, kafka-configs)
            jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'
        lines += [f"sasl.enabled.mechanisms={mechanism}", f"sasl.mechanism.inter.broker.protocol={mechanism}",
                  f"listener.name.{name}.{mechanism.lower()}.sasl.jaas.config={jaas}",
                  f"super.users=User:{sec.sasl_username}"]
    return lines


def _scram_arguments(settings: Settings) -> list[str]:
    """`--add-scram` for `kafka-storage format`: the configured SCRAM user exists from the first start."""
    sec = security(settings)
    if not (sec.sasl and sec.sasl_mechanism.startswith("SCRAM")):
        return []
    return ["--add-scram", f"{sec.sasl_mechanism}=[name={sec.sasl_username},password={sec.sasl_password}]"]


def add_scram_user(settings: Settings, name: str, password: str, mechanism: str = "SCRAM-SHA-512") -> None:
    """Create or change a SCRAM user on the running broker with Kafka's own `kafka-configs` (ConfigCommand),
    connecting with the [kafka] settings' credentials."""
    props = settings.home / "kafka" / "admin-client.properties"
    props.parent.mkdir(parents=True, exist_ok=True)
    props.write_text(java_client_properties(settings))
    props.chmod(0o600)
    result = subprocess.run(
        [java(), "-cp", f"{jars_dir(settings)}/*", f"-Dlog4j2.configurationFile={DIST_DIR / 'log4j2.properties'}",
         CONFIG_TOOL, "--bootstrap-server", settings.bootstrap_servers, "--command-config", str(props),
         "--alter", "--add-config", f"{mechanism}=[password={password}]", "--entity-type", "users", "--entity-name", name],
        capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["(no output)"]
        raise ServiceError(f"kafka-configs could not add SCRAM user {name!r}: {last[0].replace(password, '(hidden)')}")


def min_heap(heap: str) -> str:
    return "256m" if heap[-1].lower() in "mg" else heap


async def end_offsets(bootstrap: Settings | str, topics: list[str]) -> dict[str, int]:
    """Sum of the end offsets of each topic's partitions (the number of records ever written)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**options_for(bootstrap), request_timeout_ms=10000)
    await start_client(consumer, bootstrap)
    try:
        totals = {}
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            offsets = await consumer.end_offsets(tps) if tps else {}
            totals[topic] = sum(offsets.values())
        return totals
    finally:
        await consumer.stop()
