"""Settings precedence (defaults < config file < environment) and error messages; no services needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prefloop.errors import ConfigError
from prefloop.sdk import ClientSettings, FeedbackClient
from prefloop.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PREFLOOP_* variable from the caller's shell, and no ./prefloop.toml, leaks into these tests."""
    for key in list(os.environ):
        if key.startswith("PREFLOOP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults():
    settings = load_settings()
    assert settings.kafka_port == 19092
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.collector_url == "http://127.0.0.1:18080"
    assert settings.collector_max_body_bytes == 1_048_576
    assert settings.home == (Path.cwd() / ".prefloop").resolve()
    assert settings.embedded_analytics
    assert [t.name for t in settings.topics()][:2] == ["feedback.responses", "feedback.actions"]
    assert ClientSettings() == settings.section(ClientSettings, "sdk")


def test_env_overrides_kafka_port(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PREFLOOP_KAFKA_PORT", "29999")
    settings = load_settings()
    assert settings.kafka_port == 29999
    assert settings.bootstrap_servers == "127.0.0.1:29999"


def test_external_bootstrap_wins_over_the_local_broker(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PREFLOOP_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    assert load_settings().bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_config_file_then_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    config = tmp_path / "conf" / "prefloop.toml"
    config.parent.mkdir()
    config.write_text(
        'kafka_port = 23456\ncollector_max_body_bytes = 4096\nhome = "/tmp/pf-home"\n'
        "[sdk]\nlinger_ms = 20\nmax_batch_size = 131072\n"
    )
    monkeypatch.setenv("PREFLOOP_CONFIG", str(config))
    settings = load_settings()
    assert settings.kafka_port == 23456
    assert settings.collector_max_body_bytes == 4096
    assert settings.home == Path("/tmp/pf-home").resolve()
    sdk = settings.section(ClientSettings, "sdk")
    assert (sdk.linger_ms, sdk.max_batch_size) == (20, 131072)

    monkeypatch.setenv("PREFLOOP_KAFKA_PORT", "24567")
    monkeypatch.setenv("PREFLOOP_SDK_LINGER_MS", "0")
    settings = load_settings()
    assert settings.kafka_port == 24567
    # The client reads [sdk] + PREFLOOP_SDK_* (lazily: constructing it connects to nothing)...
    client = FeedbackClient(settings)
    assert client.config.linger_ms == 0
    assert client.config.max_batch_size == 131072
    assert client.bootstrap_servers == "127.0.0.1:24567"
    # ...and its constructor arguments win over both.
    assert FeedbackClient(settings, linger_ms=50).producer_options()["linger_ms"] == 50


def test_prefloop_toml_in_the_working_directory_is_read(clean_env: Path):
    (clean_env / "prefloop.toml").write_text("redis_port = 26380\n")
    assert load_settings().redis_port == 26380


@pytest.mark.parametrize(
    "env, value, message",
    [
        ("PREFLOOP_KAFKA_PORT", "abc", 'PREFLOOP_KAFKA_PORT" should be an integer'),
        ("PREFLOOP_KAFKA_PORT", "70000", '"kafka_port" should be in [1, 65535], got 70000'),
        ("PREFLOOP_RESPONSES_PARTITIONS", "0", '"responses_partitions" should be greater than zero, got 0'),
        ("PREFLOOP_COLLECTOR_MAX_BODY_BYTES", "10", '"collector_max_body_bytes" should be at least 1024, got 10'),
        ("PREFLOOP_START_TIMEOUT_S", "soon", 'PREFLOOP_START_TIMEOUT_S" should be a number'),
    ],
)
def test_bad_env_value_names_the_field(monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in str(info.value)


def test_bad_value_in_config_file_names_the_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_text('kafka_port = "nineteen"\n')
    monkeypatch.setenv("PREFLOOP_CONFIG", str(config))
    with pytest.raises(ConfigError, match='"kafka_port" should be an integer'):
        load_settings()


def test_unknown_setting_and_broken_file_are_config_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    config = tmp_path / "prefloop.toml"
    monkeypatch.setenv("PREFLOOP_CONFIG", str(config))
    config.write_text("kafka_prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting.*kafka_prot"):
        load_settings()
    config.write_text("kafka_port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings()
    monkeypatch.setenv("PREFLOOP_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="missing.toml, which is not a file"):
        load_settings()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"linger_ms": -1}, '"linger_ms" should be zero or more, got -1'),
        ({"max_batch_size": 10}, '"max_batch_size" should be at least 1024, got 10'),
        ({"compression_type": "brotli"}, '"compression_type" should be one of none, gzip, snappy, lz4, zstd'),
        ({"delivery_timeout_s": 0}, '"delivery_timeout_s" should be greater than zero, got 0'),
        ({"client_id": " "}, '"client_id" should be a non-empty string'),
    ],
)
def test_sdk_producer_settings_are_checked(kwargs: dict, message: str):
    with pytest.raises(ConfigError) as info:
        FeedbackClient(Settings(), **kwargs)
    assert message in str(info.value)


def test_sdk_settings_from_env_are_checked(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PREFLOOP_SDK_LINGER_MS", "-5")
    with pytest.raises(ConfigError, match='"linger_ms" should be zero or more, got -5'):
        FeedbackClient(load_settings())
