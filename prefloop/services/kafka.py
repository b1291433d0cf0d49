"""A single-node Apache Kafka broker in KRaft mode, from Maven Central jars, under the prefloop home."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from prefloop.errors import ServiceError
from prefloop.services.process import ManagedProcess, ensure_port_free, port_open, wait_until
from prefloop.settings import Settings

DIST_DIR = Path(__file__).parent / "kafka_dist"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"


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
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{host}:{cport}",
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        f"advertised.listeners=PLAINTEXT://{host}:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
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
        classpath = f"{libs}/*"
        log4j = f"-Dlog4j2.configurationFile={DIST_DIR / 'log4j2.properties'}"
        if not (self.dir / "data" / "meta.properties").exists():
            cluster_id = uuid.uuid4().hex[:22]
            fmt = subprocess.run(
                [java(), "-cp", classpath, log4j, STORAGE_TOOL, "format", "-t", cluster_id, "-c", str(props)],
                capture_output=True, text=True,
            )
            if fmt.returncode != 0:
                raise ServiceError(f"formatting Kafka storage failed: {(fmt.stdout + fmt.stderr).strip().splitlines()[-1]}")
        heap = self.settings.kafka_heap
        self.proc.start([
            java(), f"-Xmx{heap}", f"-Xms{min_heap(heap)}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", log4j, "-cp", classpath, MAIN_CLASS, str(props),
        ])
        wait_until(self.proc, self.healthy, self.settings.start_timeout_s, "Kafka")
        from prefloop.kafka_admin import create_topics

        asyncio.run(create_topics(self.settings.bootstrap_servers, self.settings.topics()))

    def healthy(self) -> bool:
        return port_open(self.settings.kafka_port, self.settings.kafka_host)

    def stop(self) -> bool:
        return self.proc.stop(timeout_s=30)


def min_heap(heap: str) -> str:
    return "256m" if heap[-1].lower() in "mg" else heap


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Sum of the end offsets of each topic's partitions (the number of records ever written)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await consumer.start()
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
