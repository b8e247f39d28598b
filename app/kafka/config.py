"""The librdkafka configuration every confluent-kafka client of the service shares.

Consumers, producers and the admin client must reach the same brokers with the same security
settings, so they are built in one place from ``Settings`` and each client adds only its own
options. Only the settings that are set are passed on: an empty ``ssl.ca.location`` would make
librdkafka fail to load a file named "", while leaving it out lets it use the system's CA store.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.settings import Settings

_REDACTED = "[redacted]"
# librdkafka properties whose values are credentials: key passwords, SASL and OAuth secrets, inline
# PEM keys. Matched by substring too, so that a client-specific addition cannot leak either.
_SECRET_KEYS = frozenset({"sasl.password", "ssl.key.password", "ssl.key.pem", "sasl.oauthbearer.config"})
_SECRET_WORDS = ("password", "secret")


class KafkaConfigError(ValueError):
    """The Kafka settings contradict each other (the message names the EQLSTREAM_ variables)."""


def client_config(settings: Settings) -> dict[str, str]:
    """librdkafka properties for bootstrap and security, from the settings that are set.

    SASL properties are passed only with a SASL protocol (``kafka_sasl_mechanism`` always has a
    value); the TLS file locations whenever they are set. Inconsistent settings raise
    ``KafkaConfigError`` here rather than as an authentication failure minutes later.
    """
    protocol = settings.kafka_security_protocol
    config = {"bootstrap.servers": settings.kafka_bootstrap_servers, "security.protocol": protocol.lower()}
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password.get_secret_value()
        if not settings.kafka_sasl_username or not password:
            raise KafkaConfigError(
                f"EQLSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} needs EQLSTREAM_KAFKA_SASL_USERNAME "
                "and EQLSTREAM_KAFKA_SASL_PASSWORD"
            )
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = password
    if bool(settings.kafka_ssl_certificate_location) != bool(settings.kafka_ssl_key_location):
        raise KafkaConfigError(
            "mutual TLS needs both EQLSTREAM_KAFKA_SSL_CERTIFICATE_LOCATION and EQLSTREAM_KAFKA_SSL_KEY_LOCATION"
        )
    for name, value in (
        ("ssl.ca.location", settings.kafka_ssl_ca_location),
        ("ssl.certificate.location", settings.kafka_ssl_certificate_location),
        ("ssl.key.location", settings.kafka_ssl_key_location),
        ("ssl.key.password", settings.kafka_ssl_key_password.get_secret_value()),
    ):
        if value:
            config[name] = value
    return config


def redacted(config: Mapping[str, object]) -> dict[str, object]:
    """A copy of a client configuration that is safe to log: credential values are replaced."""
    return {name: _REDACTED if _is_secret(name) else value for name, value in config.items()}


def _is_secret(name: str) -> bool:
    return name in _SECRET_KEYS or any(word in name for word in _SECRET_WORDS)
