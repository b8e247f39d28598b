"""How every client reaches the brokers (app.service.kafka): one connection, two renderings, redaction.

The ingest stage, the producers and the admin client use librdkafka, the Faust worker aiokafka: both
renderings must name the same brokers with the same security, contradictory settings must fail
before the first connection naming the variables, and no credential may reach a log.
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from pydantic import SecretStr

from app.service.faust_app import _credentials
from app.service.kafka import KafkaConfigError, KafkaConnection, redacted
from app.settings import ServiceSettings


def connection(**settings: Any) -> KafkaConnection:
    return KafkaConnection.from_settings(ServiceSettings(**settings))


def test_plaintext_has_only_bootstrap_and_protocol() -> None:
    plain = connection(kafka_bootstrap_servers="k1:9092, k2:9092")
    assert plain.librdkafka() == {"bootstrap.servers": "k1:9092, k2:9092", "security.protocol": "plaintext"}
    assert plain.aiokafka() == {"bootstrap_servers": ["k1:9092", "k2:9092"], "security_protocol": "PLAINTEXT"}
    assert _credentials(plain) is None


def test_sasl_ssl_with_ca() -> None:
    sasl = connection(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="eqlstream",
        kafka_sasl_password=SecretStr("s3cret"),
    )
    config = sasl.librdkafka()
    assert config["security.protocol"] == "sasl_ssl"
    assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == (
        "SCRAM-SHA-256",
        "eqlstream",
        "s3cret",
    )
    assert "ssl.ca.location" not in config  # unset: librdkafka uses the system's CA store
    assert "ssl.certificate.location" not in config and "ssl.key.password" not in config
    options = sasl.aiokafka()
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "SCRAM-SHA-256",
        "eqlstream",
        "s3cret",
    )
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    credentials = _credentials(sasl)
    assert (credentials.mechanism.value, credentials.username, credentials.password) == (
        "SCRAM-SHA-256",
        "eqlstream",
        "s3cret",
    )
    assert credentials.ssl_context is not None


def test_mutual_tls_needs_the_files_it_names(tmp_path: Any) -> None:
    tls = connection(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_location="/etc/kafka/ca.pem",
        kafka_ssl_certificate_location="/tls/client.pem",
        kafka_ssl_key_location="/tls/client.key",
        kafka_ssl_key_password=SecretStr("keypass"),
    )
    config = tls.librdkafka()
    assert config["ssl.ca.location"] == "/etc/kafka/ca.pem"
    assert config["ssl.certificate.location"] == "/tls/client.pem"
    assert config["ssl.key.location"] == "/tls/client.key"
    assert config["ssl.key.password"] == "keypass"
    assert not any(name.startswith("sasl.") for name in config)
    with pytest.raises(FileNotFoundError):  # aiokafka's SSL context loads the CA file at once
        tls.aiokafka()


def test_sasl_settings_are_ignored_without_a_sasl_protocol() -> None:
    config = connection(kafka_sasl_username="u", kafka_sasl_password=SecretStr("p")).librdkafka()
    assert not any(name.startswith("sasl.") for name in config)


@pytest.mark.parametrize(
    "settings",
    [
        {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
        {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_password": SecretStr("p")},
        {"kafka_security_protocol": "SSL", "kafka_ssl_certificate_location": "/tls/client.pem"},
        {"kafka_security_protocol": "SSL", "kafka_ssl_key_location": "/tls/client.key"},
    ],
)
def test_incomplete_credentials_are_refused_with_the_variables_named(settings: dict[str, Any]) -> None:
    with pytest.raises(KafkaConfigError, match="EQLSTREAM_KAFKA_"):
        connection(**settings)


def test_redacted_hides_every_credential_and_keeps_the_rest() -> None:
    config = {
        **connection(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="eqlstream",
            kafka_sasl_password=SecretStr("s3cret"),
            kafka_ssl_certificate_location="/tls/client.pem",
            kafka_ssl_key_location="/tls/client.key",
            kafka_ssl_key_password=SecretStr("keypass"),
        ).librdkafka(),
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
