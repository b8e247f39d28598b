"""How every client of the service reaches the brokers: one object, two renderings.

The ingest stage, the producers and the admin client use librdkafka (confluent-kafka); the Faust
worker uses aiokafka. Both must reach the same brokers with the same security settings, so they
are rendered from one ``KafkaConnection`` built once from the settings. Only the settings that are
set are passed on: an empty ``ssl.ca.location`` would make librdkafka fail to load a file named
"", while leaving it out lets it use the system's CA store.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError

from app.settings import ServiceSettings

_REDACTED = "[redacted]"
# librdkafka properties whose values are credentials: key passwords, SASL and OAuth secrets, inline
# PEM keys. Matched by substring too, so that a client-specific addition cannot leak either.
_SECRET_KEYS = frozenset({"sasl.password", "ssl.key.password", "ssl.key.pem", "sasl.oauthbearer.config"})
_SECRET_WORDS = ("password", "secret")


# Delivery errors that sending the same record again cannot cure: the record itself is refused.
PERMANENT_DELIVERY_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError._INVALID_ARG,
    }
)


def describe(error: KafkaError) -> str:
    """A Kafka error in words, with its name for searching."""
    return f"{error.str()} ({error.name()})"


class KafkaConfigError(ValueError):
    """The Kafka settings contradict each other (the message names the EQLSTREAM_ variables)."""


@dataclass(frozen=True)
class KafkaConnection:
    """Bootstrap servers and security, valid by construction (``from_settings`` checks them)."""

    bootstrap_servers: str
    security_protocol: str
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: str | None = None

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> KafkaConnection:
        """Raises ``KafkaConfigError`` for settings that would fail only at the first connection."""
        protocol = settings.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        password = settings.kafka_sasl_password.get_secret_value()
        if sasl and (not settings.kafka_sasl_username or not password):
            raise KafkaConfigError(
                f"EQLSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} needs EQLSTREAM_KAFKA_SASL_USERNAME "
                "and EQLSTREAM_KAFKA_SASL_PASSWORD"
            )
        if bool(settings.kafka_ssl_certificate_location) != bool(settings.kafka_ssl_key_location):
            raise KafkaConfigError(
                "mutual TLS needs both EQLSTREAM_KAFKA_SSL_CERTIFICATE_LOCATION and EQLSTREAM_KAFKA_SSL_KEY_LOCATION"
            )
        return cls(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            security_protocol=protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism if sasl else None,
            sasl_username=settings.kafka_sasl_username if sasl else None,
            sasl_password=password if sasl else None,
            ssl_ca_location=settings.kafka_ssl_ca_location or None,
            ssl_certificate_location=settings.kafka_ssl_certificate_location or None,
            ssl_key_location=settings.kafka_ssl_key_location or None,
            ssl_key_password=settings.kafka_ssl_key_password.get_secret_value() or None,
        )

    def librdkafka(self) -> dict[str, str]:
        """librdkafka properties for bootstrap and security."""
        config = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol.lower()}
        for name, value in (
            ("sasl.mechanism", self.sasl_mechanism),
            ("sasl.username", self.sasl_username),
            ("sasl.password", self.sasl_password),
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
            ("ssl.key.password", self.ssl_key_password),
        ):
            if value:
                config[name] = value
        return config

    def aiokafka(self) -> dict[str, Any]:
        """aiokafka's connection arguments (``security_protocol``, ``ssl_context``, ``sasl_*``)."""
        options: dict[str, Any] = {
            "bootstrap_servers": [server.strip() for server in self.bootstrap_servers.split(",") if server.strip()],
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=self.ssl_ca_location)
            if self.ssl_certificate_location:
                context.load_cert_chain(self.ssl_certificate_location, self.ssl_key_location, self.ssl_key_password)
            options["ssl_context"] = context
        if self.sasl_mechanism:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return options


def redacted(config: Mapping[str, object]) -> dict[str, object]:
    """A copy of a client configuration that is safe to log: credential values are replaced."""
    return {name: _REDACTED if _is_secret(name) else value for name, value in config.items()}


def _is_secret(name: str) -> bool:
    return name in _SECRET_KEYS or any(word in name for word in _SECRET_WORDS)
