"""TLS to the broker end to end, a wrong CA refused loudly, and SASL credentials never logged.

The embedded broker has no working TLS listener of its own, so Debian's ``stunnel4`` terminates
TLS in front of it with a certificate signed by a CA made for the test, and the broker advertises
stunnel's port: every client of the service then talks TLS or nothing. SASL cannot be exercised
against the embedded broker (Tansu has no SCRAM user store to log in to); its configuration and
the absence of the password from a running service's logs are checked instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from app.service.faust_app import _credentials
from app.service.kafka import KafkaConnection, redacted
from app.settings import ServiceSettings
from tests.support.broker import prepare_topics
from tests.support.detection import attack, replay_ids
from tests.support.faults import AlertCollector, SteadyLoad, TansuBroker, poll_until
from tests.support.settings import service_settings, with_settings
from tests.support.worker import Worker, free_port, wait_for_port

PARTITIONS = 4
READY_TIMEOUT_S = 120

STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")
VERIFY_FAILED = "certificate verify failed"  # OpenSSL's words, in librdkafka's and Python's errors alike
EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")

# Skipped on a developer's machine without stunnel; in CI (CI=true) a missing tool fails the tests instead.
needs_stunnel = pytest.mark.skipif(
    (STUNNEL is None or shutil.which("openssl") is None) and not os.environ.get("CI"),
    reason="needs stunnel4 and openssl (apt-get install stunnel4)",
)


@dataclass
class TlsBroker:
    bootstrap: str  # stunnel's TLS port: the only address the broker advertises
    ca: Path  # the CA that signed the broker's certificate
    other_ca: Path  # a CA that did not
    client_cert: Path  # the service's certificate for mutual TLS, signed by ``ca``
    client_key: Path
    stunnel_log: Path


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    openssl("req", "-x509", *EC_KEY, "-days", "2", "-subj", f"/CN={name}", "-keyout", key, "-out", cert)
    return cert, key


def make_cert(directory: Path, ca: tuple[Path, Path], name: str, extensions: str) -> tuple[Path, Path]:
    """A certificate signed by ``ca`` with the given X.509 extensions: (certificate, key)."""
    cert, key, request = directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.csr"
    extfile = directory / f"{name}.ext"
    extfile.write_text(f"basicConstraints=CA:FALSE\n{extensions}\n")
    openssl("req", "-new", *EC_KEY, "-subj", f"/CN={name}", "-keyout", key, "-out", request)
    openssl(
        "x509", "-req", "-in", request, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", "2",
        "-extfile", extfile, "-out", cert,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    """A broker of its own behind stunnel: mutual TLS on one loopback port, forwarded to the broker's
    plaintext port."""
    assert STUNNEL is not None, "stunnel4 is not installed (apt-get install stunnel4)"
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = make_ca(certs, "eqlstream-test-ca")
    other_ca, _ = make_ca(certs, "some-other-ca")
    cert, key = make_cert(
        certs, ca, "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
    )
    client_cert, client_key = make_cert(certs, ca, "eqlstream", "extendedKeyUsage=clientAuth")
    tls_port = free_port()
    broker = TansuBroker(tls_port, tmp_path / "tansu.log")
    broker.start()
    config = tmp_path / "stunnel.conf"
    config.write_text(
        "foreground = yes\npid =\ndebug = info\n"
        f"[kafka]\naccept = 127.0.0.1:{tls_port}\nconnect = 127.0.0.1:{broker.port}\ncert = {cert}\nkey = {key}\n"
        f"CAfile = {ca[0]}\nrequireCert = yes\nverifyChain = yes\n"  # mutual TLS: clients need a certificate of the CA
    )
    stunnel_log = tmp_path / "stunnel.log"
    with stunnel_log.open("wb") as output:
        stunnel = subprocess.Popen([STUNNEL, str(config)], stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for_port(tls_port, 30, stunnel)
        yield TlsBroker(f"127.0.0.1:{tls_port}", ca[0], other_ca, client_cert, client_key, stunnel_log)
    finally:
        stunnel.terminate()
        stunnel.wait(10)
        broker.stop()


def tls_settings(broker: TlsBroker, ca: Path, tmp_path: Path) -> ServiceSettings:
    return service_settings(
        broker.bootstrap,
        tmp_path / "state",
        kafka_security_protocol="SSL",
        kafka_ssl_ca_location=str(ca),
        kafka_ssl_certificate_location=str(broker.client_cert),
        kafka_ssl_key_location=str(broker.client_key),
    )


@needs_stunnel
@pytest.mark.timeout(300)
def test_attack_in_alert_out_over_tls_through_both_stages(
    tls_broker: TlsBroker,
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    """With EQLSTREAM_KAFKA_SECURITY_PROTOCOL=SSL, the CA file and a client certificate (mutual TLS), the
    ingest stage (confluent-kafka) and the sequence stage (Faust/aiokafka), each in its own process
    (`--role`), reach the broker only through TLS: attacks in, the replay's alerts out. A plaintext
    client, and a TLS client without a certificate, get nothing on the same port."""
    settings = tls_settings(tls_broker, tls_broker.ca, tmp_path)
    plain = {"bootstrap.servers": tls_broker.bootstrap, "log_level": 0}
    without_client_cert = {**plain, "security.protocol": "ssl", "ssl.ca.location": str(tls_broker.ca)}
    for refused in (plain, without_client_cert):
        with pytest.raises(KafkaException):
            AdminClient(refused).list_topics(timeout=5)
    prepare_topics(settings, PARTITIONS)
    events = [event for i in range(3) for event in attack(i, host=f"h{i}")]
    expected = replay_ids(events)
    alerts = AlertCollector(settings, PARTITIONS)
    alerts.start()
    stages = [Worker(settings, role, tmp_path, {"EQLSTREAM_ROLE": role}).start() for role in ("ingest", "sequence")]
    try:
        figures.update(
            {f"seconds to /readyz 200 over TLS, {w.name} stage": w.wait_ready(READY_TIMEOUT_S) for w in stages}
        )
        sent_at = time.monotonic()
        load = SteadyLoad(settings, events, 10, PARTITIONS, seed=5)
        load.start()
        load.finish(60)
        alerts.wait_for(expected, 120)
        assert set(alerts.shell_ids()) == expected
        figures["seconds from the first event sent to the last alert read"] = alerts.shells()[-1][0] - sent_at
    finally:
        for worker in stages:
            worker.stop()
        alerts.stop()
    figures["alerts (expected = read)"] = len(expected)
    figures["TLS connections stunnel accepted"] = tls_broker.stunnel_log.read_text().count("accepted connection")


@needs_stunnel
@pytest.mark.timeout(300)
def test_a_wrong_ca_fails_with_a_clear_error(
    tls_broker: TlsBroker,
    tmp_path: Path,
    figures: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A CA that did not sign the broker's certificate: Faust's client (aiokafka) refuses to start, saying
    why; the service logs "certificate verify failed" within seconds (it does not hang silently) and is
    not ready."""
    settings = tls_settings(tls_broker, tls_broker.other_ca, tmp_path)

    async def start_faust_client() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=tls_broker.bootstrap,
            security_protocol="SSL",
            ssl_context=_credentials(KafkaConnection.from_settings(settings)).context,
            request_timeout_ms=10_000,
        )
        try:
            await consumer.start()
        finally:
            await consumer.stop()

    began = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        asyncio.run(asyncio.wait_for(start_faust_client(), 60))
    figures["seconds for aiokafka (Faust's client) to refuse to start"] = time.monotonic() - began
    assert VERIFY_FAILED in caplog.text
    worker = Worker(settings, "wrong-ca", tmp_path).start()
    try:
        figures["seconds to a log line saying certificate verify failed (service)"] = poll_until(
            lambda: VERIFY_FAILED in worker.log(), 60, "a certificate error in the service's log"
        )
        line = next(line for line in worker.log().splitlines() if VERIFY_FAILED in line)
        figures["first such line"] = f"`{line.strip()[:240]}`"
        assert worker.readyz()[0] != 200
    finally:
        worker.stop()


@pytest.mark.timeout(120)
def test_sasl_password_is_configured_but_never_logged(
    kafka_bootstrap: str,
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    """SASL_SSL with SCRAM-SHA-512 reaches both clients' configurations (librdkafka and Faust); a service
    started with it at DEBUG level, against a broker that cannot authenticate it, never writes the password."""
    password = f"pw-{uuid.uuid4().hex}"
    settings = service_settings(
        kafka_bootstrap,
        tmp_path / "state",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="eqlstream",
        kafka_sasl_password=SecretStr(password),
        log_level="DEBUG",
    )
    config = KafkaConnection.from_settings(settings).librdkafka()
    assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == (
        "SCRAM-SHA-512",
        "eqlstream",
        password,
    )
    assert password not in repr(redacted(config)) and password not in repr(settings)
    secure = with_settings(settings, kafka_security_protocol="SASL_SSL")
    credentials = _credentials(KafkaConnection.from_settings(secure))
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.mechanism.value, credentials.username, credentials.password) == (
        "SCRAM-SHA-512",
        "eqlstream",
        password,
    )
    assert credentials.ssl_context is not None
    worker = Worker(settings, "sasl", tmp_path).start()
    try:
        poll_until(lambda: "SASL" in worker.log(), 60, "an authentication attempt in the log")
        time.sleep(5)  # retries and their DEBUG logging
    finally:
        worker.stop()
    log = worker.log()
    figures["log lines written at DEBUG level"] = len(log.splitlines())
    said = [line for line in log.splitlines() if "sasl" in line.lower() or "authentic" in line.lower()]
    figures["first log line about SASL"] = f"`{said[0].strip()[:240]}`" if said else "(none)"
    figures["occurrences of the password in them"] = log.count(password)
    assert password not in log
