"""The librdkafka configuration built from the settings, and its redaction for logs."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from app.kafka.config import KafkaConfigError, client_config, redacted
from app.settings import Settings


def test_plaintext_has_only_bootstrap_and_protocol() -> None:
    config = client_config(Settings(kafka_bootstrap_servers="k1:9092,k2:9092"))
    assert config == {"bootstrap.servers": "k1:9092,k2:9092", "security.protocol": "plaintext"}


def test_sasl_ssl_with_ca() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="eqlstream",
        kafka_sasl_password=SecretStr("s3cret"),
        kafka_ssl_ca_location="/etc/kafka/ca.pem",
    )
    config = client_config(settings)
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "SCRAM-SHA-256"
    assert config["sasl.username"] == "eqlstream"
    assert config["sasl.password"] == "s3cret"
    assert config["ssl.ca.location"] == "/etc/kafka/ca.pem"
    assert "ssl.certificate.location" not in config and "ssl.key.password" not in config


def test_mutual_tls() -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_certificate_location="/tls/client.pem",
        kafka_ssl_key_location="/tls/client.key",
        kafka_ssl_key_password=SecretStr("keypass"),
    )
    config = client_config(settings)
    assert config["ssl.certificate.location"] == "/tls/client.pem"
    assert config["ssl.key.location"] == "/tls/client.key"
    assert config["ssl.key.password"] == "keypass"
    assert not any(name.startswith("sasl.") for name in config)


def test_sasl_settings_are_ignored_without_a_sasl_protocol() -> None:
    config = client_config(Settings(kafka_sasl_username="u", kafka_sasl_password=SecretStr("p")))
    assert not any(name.startswith("sasl.") for name in config)


@pytest.mark.parametrize(
    "settings",
    [
        Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u"),
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_password=SecretStr("p")),
        Settings(kafka_security_protocol="SSL", kafka_ssl_certificate_location="/tls/client.pem"),
        Settings(kafka_security_protocol="SSL", kafka_ssl_key_location="/tls/client.key"),
    ],
)
def test_incomplete_credentials_are_refused_with_the_variables_named(settings: Settings) -> None:
    with pytest.raises(KafkaConfigError, match="EQLSTREAM_KAFKA_"):
        client_config(settings)


def test_redacted_hides_every_credential_and_keeps_the_rest() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="eqlstream",
        kafka_sasl_password=SecretStr("s3cret"),
        kafka_ssl_certificate_location="/tls/client.pem",
        kafka_ssl_key_location="/tls/client.key",
        kafka_ssl_key_password=SecretStr("keypass"),
    )
    config = {
        **client_config(settings),
        "ssl.key.pem": "-----BEGIN PRIVATE KEY-----",
        "sasl.oauthbearer.client.secret": "x",
    }
    safe = redacted(config)
    text = repr(safe)
    for secret in ("s3cret", "keypass", "BEGIN PRIVATE KEY", "'x'"):
        assert secret not in text
    assert safe["sasl.username"] == "eqlstream"
    assert safe["ssl.key.location"] == "/tls/client.key"
    assert set(safe) == set(config)
    assert config["sasl.password"] == "s3cret"  # the original is untouched


def test_settings_never_show_the_password() -> None:
    settings = Settings(kafka_sasl_password=SecretStr("s3cret"), kafka_ssl_key_password=SecretStr("keypass"))
    assert "s3cret" not in repr(settings) and "keypass" not in repr(settings)
