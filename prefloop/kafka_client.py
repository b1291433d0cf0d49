"""Every Kafka client's connection options, from one place: `[kafka]` security settings.

Every producer, consumer and admin client prefloop creates (SDK, collector, streams workers and
Faust, trainer, evaluator, rollout controller, gateway, benches, `prefloop init`/`status`) takes
its options from `kafka_options(settings)`, so one setting secures them all:

    [kafka]
    security_protocol = "SASL_SSL"          # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism = "SCRAM-SHA-512"        # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username = "prefloop"
    sasl_password = "…"                     # or PREFLOOP_KAFKA_SASL_PASSWORD
    ssl_cafile = "/etc/prefloop/ca.pem"     # the broker's CA; ssl_certfile/ssl_keyfile for client certificates

Secrets (`sasl_password`, `ssl_key_password`) never appear in a repr, a log line or an error.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from prefloop.errors import ConfigError, PrefloopError
from prefloop.setting_fields import check_fields, setting
from prefloop.settings import Settings, load_settings

# aiokafka logs each failed connection at ERROR before raising; with no logging configured (the CLI)
# Python would print those lines too. The NullHandler stops that; services' log handlers still get them.
logging.getLogger("aiokafka").addHandler(logging.NullHandler())

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaConnectError(PrefloopError):
    """A Kafka client could not start: Kafka unreachable, credentials refused, TLS failed (one line: why)."""


@dataclass
class KafkaSecurity:
    SECTION: ClassVar[str] = "kafka"

    security_protocol: str = setting("PLAINTEXT", choices=PROTOCOLS, help="How every client talks to Kafka.")
    sasl_mechanism: str = setting("PLAIN", choices=MECHANISMS, help="SASL mechanism, with SASL_PLAINTEXT or SASL_SSL.")
    sasl_username: str = setting("", help="SASL user name.")
    sasl_password: str = setting("", secret=True, help="SASL password; never printed.")
    ssl_cafile: str = setting("", help="PEM file of the CA that signed the broker's certificate (SSL, SASL_SSL); "
                                        "empty: the system's CAs.")
    ssl_certfile: str = setting("", help="PEM file of this client's certificate, when the broker asks for one.")
    ssl_keyfile: str = setting("", help="PEM file of this client's private key.")
    ssl_key_password: str = setting("", secret=True, help="Password of ssl_keyfile, when it is encrypted; never printed.")
    ssl_check_hostname: bool = setting(True, help="Check that the broker's certificate names the host connected to.")
    # The local broker that `prefloop up` starts (prefloop/services/kafka.py), when it should listen with TLS.
    broker_keystore: str = setting("", help="Local broker only: PEM file with its private key and certificate chain, "
                                            "for an SSL or SASL_SSL listener.")
    broker_client_auth: bool = setting(False, help="Local broker only: ask clients for a certificate signed by ssl_cafile.")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.sasl and not (self.sasl_username and self.sasl_password):
            raise ConfigError(f"security_protocol {self.security_protocol} needs sasl_username and sasl_password "
                              "([kafka] or PREFLOOP_KAFKA_SASL_USERNAME / PREFLOOP_KAFKA_SASL_PASSWORD)")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "broker_keystore"):
            path = getattr(self, name)
            if path and not Path(path).expanduser().is_file():
                raise ConfigError(f'"{name}" should be a readable PEM file, got {path!r} (no such file)')
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ConfigError('"ssl_certfile" and "ssl_keyfile" go together: set both or neither')

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ssl_cafile or None)
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, password=self.ssl_key_password or None)
        return context

    def describe(self) -> str:
        """What a log line may say about the connection: never a secret."""
        who = f", {self.sasl_mechanism} as {self.sasl_username!r}" if self.sasl else ""
        return f"{self.security_protocol}{who}"


def security(settings: Settings | None = None) -> KafkaSecurity:
    return (settings or load_settings()).section(KafkaSecurity)


def kafka_options(settings: Settings | None = None, bootstrap_servers: str | None = None) -> dict[str, Any]:
    """The aiokafka options every producer, consumer and admin client starts from."""
    settings = settings or load_settings()
    sec = security(settings)
    options: dict[str, Any] = {"bootstrap_servers": bootstrap_servers or settings.bootstrap_servers,
                               "security_protocol": sec.security_protocol}
    if sec.tls:
        options["ssl_context"] = sec.ssl_context()
    if sec.sasl:
        options.update(sasl_mechanism=sec.sasl_mechanism, sasl_plain_username=sec.sasl_username,
                       sasl_plain_password=sec.sasl_password)
    return options


def faust_broker_credentials(settings: Settings) -> Any:
    """The same security for Faust's consumers and producers (its `broker_credentials`), or None."""
    import faust

    sec = security(settings)
    if sec.sasl:
        return faust.SASLCredentials(username=sec.sasl_username, password=sec.sasl_password,
                                     ssl_context=sec.ssl_context(), mechanism=sec.sasl_mechanism)
    if sec.tls:
        return faust.SSLCredentials(sec.ssl_context())
    return None


def java_client_properties(settings: Settings) -> str:
    """client.properties for Kafka's own command-line tools (kafka-configs and friends)."""
    sec = security(settings)
    lines = [f"security.protocol={sec.security_protocol}"]
    if sec.sasl:
        module = "plain.PlainLoginModule" if sec.sasl_mechanism == "PLAIN" else "scram.ScramLoginModule"
        lines += [f"sasl.mechanism={sec.sasl_mechanism}",
                  f'sasl.jaas.config=org.apache.kafka.common.security.{module} required '
                  f'username="{jaas_quote(sec.sasl_username)}" password="{jaas_quote(sec.sasl_password)}";']
    if sec.tls:
        if sec.ssl_cafile:
            lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={sec.ssl_cafile}"]
        if not sec.ssl_check_hostname:
            lines.append("ssl.endpoint.identification.algorithm=")
    return "\n".join(lines) + "\n"


def jaas_quote(value: str) -> str:
    """A value inside a JAAS line's double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


async def diagnose(exc: BaseException, settings: Settings | None = None, bootstrap_servers: str | None = None) -> str:
    """`explain` of why a client could not start. aiokafka only logs the cause of a failed bootstrap
    (a refused password, a bad certificate) and raises "Unable to bootstrap", so one plain connection
    to the first bootstrap server is tried to find it."""
    from aiokafka.conn import create_conn

    options = kafka_options(settings, bootstrap_servers)
    host, _, port = str(options.pop("bootstrap_servers")).split(",")[0].strip().rpartition(":")
    try:
        conn = await asyncio.wait_for(create_conn(host, int(port), request_timeout_ms=10_000, **options), 15)
    except Exception as cause:  # the real reason
        return explain(cause, settings, bootstrap_servers)
    conn.close()
    return explain(exc, settings, bootstrap_servers)


async def start_client(client: Any, target: Settings | str | None = None) -> None:
    """Start an aiokafka producer, consumer or admin client; KafkaConnectError saying why when it cannot."""
    try:
        await client.start()
    except Exception as exc:
        stop = getattr(client, "stop", None) or client.close
        try:
            await stop()
        except Exception:  # pragma: no cover - already failing; the cause below matters
            pass
        settings = target if isinstance(target, Settings) else None
        bootstrap = target if isinstance(target, str) else None
        raise KafkaConnectError(await diagnose(exc, settings, bootstrap)) from exc


def explain(exc: BaseException, settings: Settings | None = None, bootstrap_servers: str | None = None) -> str:
    """One line on why a Kafka client could not connect, naming the user but never the password."""
    sec = security(settings)
    text = f"{type(exc).__name__}: {exc}"
    for secret in (sec.sasl_password, sec.ssl_key_password):
        if secret:
            text = text.replace(secret, "(hidden)")
    lowered = text.lower()
    servers = bootstrap_servers or (settings or load_settings()).bootstrap_servers
    if "authentication" in lowered or "sasl" in lowered:
        return (f"Kafka at {servers} refused the credentials of {sec.sasl_username!r} ({sec.sasl_mechanism}): check "
                "[kafka] sasl_username and sasl_password")
    if "certificate" in lowered or "ssl" in lowered or "handshake" in lowered:
        return f"TLS with Kafka at {servers} failed ({text.splitlines()[0][:200]}): check [kafka] ssl_cafile and the broker's certificate"
    return (f"cannot connect to Kafka at {servers} ({sec.describe()}; {text.splitlines()[0][:200]}); is `prefloop up` "
            "running, or is PREFLOOP_KAFKA_BOOTSTRAP right?")


def options_for(target: Settings | str | None) -> dict[str, Any]:
    """`kafka_options` for helpers that take either the settings or a bootstrap address (whose
    security then comes from the settings file and environment, like everything else)."""
    if isinstance(target, Settings):
        return kafka_options(target)
    return kafka_options(None, bootstrap_servers=target)


__all__ = ["KafkaConnectError", "KafkaSecurity", "diagnose", "explain", "faust_broker_credentials", "jaas_quote",
           "java_client_properties", "kafka_options", "options_for", "security", "start_client"]
