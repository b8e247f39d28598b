"""The shipper examples parse and carry the settings eqlstream depends on.

Into eqlstream (examples/README.md): the JSON codec (Logstash's default is plain text), the
message key on host.id (the join key; without it events go to random partitions), host metadata
kept (it is where host.id comes from), acknowledgement by all replicas, and security settings
that are the shippers' real option names. Out of it, the Logstash alerts pipeline: every alert
document unchanged, indexed once under its own id where the Kibana rule looks for it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from app.settings import ServiceSettings
from tests.examples.conftest import EXAMPLES

WINLOGBEAT = EXAMPLES / "winlogbeat" / "winlogbeat.yml"
AGENT = EXAMPLES / "elastic-agent" / "elastic-agent.yml"
LOGSTASH = EXAMPLES / "logstash" / "eqlstream.conf"
# The Beats Kafka output's options (libbeat outputs/kafka config), SSL and SASL included.
BEATS_KAFKA_OPTIONS = {
    "type",
    "enabled",
    "hosts",
    "topic",
    "topics",
    "key",
    "partition",
    "codec",
    "compression",
    "compression_level",
    "required_acks",
    "max_message_bytes",
    "version",
    "username",
    "password",
    "sasl",
    "ssl",
    "client_id",
    "timeout",
    "broker_timeout",
    "bulk_max_size",
    "bulk_flush_frequency",
    "max_retries",
    "backoff",
    "headers",
    "keep_alive",
    "metadata",
    "channel_buffer_size",
    "worker",
    "kerberos",
}
BEATS_SSL_OPTIONS = {
    "enabled",
    "certificate_authorities",
    "certificate",
    "key",
    "key_passphrase",
    "verification_mode",
    "supported_protocols",
    "cipher_suites",
    "ca_trusted_fingerprint",
}


def _uncommented(path: Path) -> dict:
    """The YAML with its commented-out option lines switched on, to check those too."""
    lines = []
    for line in path.read_text().splitlines():
        match = re.match(r"^(\s*)# ([a-z_.]+: .*)$", line)
        lines.append(f"{match[1]}{match[2]}" if match else line)
    return yaml.safe_load("\n".join(lines))


def _expand(options: dict) -> dict:
    """Beats' dotted keys (``codec.json``, ``ssl.enabled``) as the nested objects they mean."""
    out: dict = {}
    for name, value in options.items():
        node = out
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _expand(value) if isinstance(value, dict) else value
    return out


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yml")) + sorted(EXAMPLES.rglob("*.yaml")), ids=str)
def test_every_yaml_example_parses_with_and_without_its_commented_options(path: Path) -> None:
    assert isinstance(yaml.safe_load(path.read_text()), dict)
    assert isinstance(_uncommented(path), dict)


def _check_beats_kafka_output(output: dict) -> None:
    assert output["topic"] == "eqlstream-events"
    assert output["key"] == "%{[host.id]}"
    assert output["codec"] == {"json": {"pretty": False}}
    assert output["compression"] == "lz4"
    assert output["required_acks"] == -1
    assert output["hosts"]


def _check_beats_security(output: dict) -> None:
    """The commented security block uses real option names and a mechanism Beats accepts."""
    assert set(output) <= BEATS_KAFKA_OPTIONS, set(output) - BEATS_KAFKA_OPTIONS
    assert set(output["ssl"]) <= BEATS_SSL_OPTIONS
    assert output["sasl"]["mechanism"] in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
    assert output["ssl"]["enabled"] is True and output["ssl"]["verification_mode"] == "full"
    assert output["username"] and output["password"].startswith("${")  # a secret reference, not a value


def test_winlogbeat_reads_sysmon_keeps_host_metadata_and_keys_by_host_id() -> None:
    config = yaml.safe_load(WINLOGBEAT.read_text())
    channels = [log["name"] for log in config["winlogbeat.event_logs"]]
    assert "Microsoft-Windows-Sysmon/Operational" in channels
    assert any("add_host_metadata" in processor for processor in config["processors"])
    _check_beats_kafka_output(_expand(config["output.kafka"]))
    _check_beats_security(_expand(_uncommented(WINLOGBEAT)["output.kafka"]))


def test_elastic_agent_policy_has_a_kafka_output_and_the_sysmon_stream() -> None:
    config = yaml.safe_load(AGENT.read_text())
    output = _expand(config["outputs"]["default"])
    assert output["type"] == "kafka"
    _check_beats_kafka_output(output)
    _check_beats_security(_expand(_uncommented(AGENT)["outputs"]["default"]))
    (winlog,) = [item for item in config["inputs"] if item["type"] == "winlog"]
    assert winlog["use_output"] == "default"
    streams = {stream["name"]: stream for stream in winlog["streams"]}
    sysmon = streams["Microsoft-Windows-Sysmon/Operational"]
    assert sysmon["data_stream"]["dataset"] == "windows.sysmon_operational"
    assert {"1", "3"} <= {part.strip() for part in str(sysmon.get("event_id", "1,3")).split(",")}
    # No processor may drop host metadata (host.id is added by the Agent by default).
    assert "drop_fields" not in str(sysmon.get("processors", ""))


def _block(text: str, name: str) -> str:
    """The body of the first ``name { ... }`` block of a Logstash config (braces balanced)."""
    start = re.search(rf"\b{name}\s*{{", text)
    assert start, name
    depth, index = 1, start.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        index += 1
    return text[start.end() : index - 1]


def _settings(block: str, commented: bool) -> dict[str, str]:
    prefix = r"#\s*" if commented else ""
    pattern = rf"^\s*{prefix}([a-z_]+)\s*=>\s*(\"[^\"]*\"|\[[^\]]*\]|\S+)"
    return {name: value.strip('"') for name, value in re.findall(pattern, block, flags=re.M)}


def test_logstash_kafka_output_writes_json_keyed_by_host_id() -> None:
    text = LOGSTASH.read_text()
    assert text.count("{") == text.count("}")
    kafka = _settings(_block(_block(text, "output"), "kafka"), commented=False)
    assert kafka["codec"] == "json"
    assert kafka["topic_id"] == "eqlstream-events"
    assert kafka["compression_type"] == "lz4"
    assert kafka["acks"] == "all"
    key_field = re.fullmatch(r"%\{(\[[^}]+\])\}", kafka["message_key"])[1]
    filter_block = _block(text, "filter")
    # The key is host.id, copied into @metadata by the filter (or used directly).
    assert key_field == "[host][id]" or f'"[host][id]" => "{key_field}"' in filter_block
    assert re.search(r"\bbeats\s*\{", _block(text, "input"))


def test_logstash_security_options_are_real_kafka_output_options() -> None:
    kafka = _block(_block(LOGSTASH.read_text(), "output"), "kafka")
    commented = _settings(kafka, commented=True)
    known = {  # logstash-integration-kafka output options (lib/logstash/outputs/kafka.rb and its mixins)
        "security_protocol",
        "sasl_mechanism",
        "sasl_jaas_config",
        "ssl_truststore_type",
        "ssl_truststore_location",
        "ssl_truststore_password",
        "ssl_endpoint_identification_algorithm",
        "ssl_keystore_type",
        "ssl_keystore_location",
        "ssl_keystore_password",
        "ssl_key_password",
    }
    assert commented and set(commented) <= known, set(commented) - known
    assert commented["security_protocol"] == "SASL_SSL"
    assert "ScramLoginModule" in commented["sasl_jaas_config"]
    assert commented["sasl_mechanism"] == "SCRAM-SHA-512"


# -- the alerts pipeline: alerts topic -> Elasticsearch ------------------------------------------

LOGSTASH_ALERTS = EXAMPLES / "logstash" / "eqlstream-alerts.conf"
# logstash-integration-kafka input options (lib/logstash/inputs/kafka.rb and its mixins).
LOGSTASH_KAFKA_INPUT_OPTIONS = {
    "bootstrap_servers",
    "topics",
    "group_id",
    "client_id",
    "auto_offset_reset",
    "consumer_threads",
    "codec",
    "decorate_events",
    "security_protocol",
    "sasl_mechanism",
    "sasl_jaas_config",
    "ssl_truststore_type",
    "ssl_truststore_location",
    "ssl_truststore_password",
    "ssl_endpoint_identification_algorithm",
    "ssl_keystore_type",
    "ssl_keystore_location",
    "ssl_keystore_password",
    "ssl_key_password",
}
# logstash-output-elasticsearch options (11.14+, the ssl_* names of Logstash 8.10 and later).
LOGSTASH_ES_OUTPUT_OPTIONS = {
    "hosts",
    "api_key",
    "ssl_enabled",
    "ssl_certificate_authorities",
    "index",
    "data_stream",
    "manage_template",
    "document_id",
    "action",
    "silence_errors_in_log",
}


def logstash_field(event: dict, reference: str) -> object:
    """A Logstash field reference (``[a][b]``: one bracket per level, dots are part of a name)."""
    parts = re.fullmatch(r"(?:\[[^\[\]]+\])+", reference) and re.findall(r"\[([^\[\]]+)\]", reference)
    assert parts, f"not a field reference: {reference}"
    node: object = event
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def test_logstash_alerts_pipeline_reads_the_alerts_topic_unchanged() -> None:
    kafka = _settings(_block(_block(LOGSTASH_ALERTS.read_text(), "input"), "kafka"), commented=False)
    assert set(kafka) <= LOGSTASH_KAFKA_INPUT_OPTIONS, set(kafka) - LOGSTASH_KAFKA_INPUT_OPTIONS
    defaults = ServiceSettings.model_construct()
    assert kafka["topics"] == f'["{defaults.alerts_topic}"]'
    assert kafka["auto_offset_reset"] == "earliest"  # a new group loads what the topic still holds
    # one consumer per alerts partition: more would idle, fewer would serialize
    assert int(kafka["consumer_threads"]) == defaults.candidates_partitions
    # the json codec with ECS compatibility would add [event][original]: the whole document again
    assert re.search(r'codec => json \{ ecs_compatibility => "disabled" \}', LOGSTASH_ALERTS.read_text())


def test_logstash_alerts_pipeline_indexes_each_alert_once_under_its_id(demo_alerts: list[bytes]) -> None:
    text = LOGSTASH_ALERTS.read_text()
    output = _settings(_block(_block(text, "output"), "elasticsearch"), commented=False)
    assert set(output) <= LOGSTASH_ES_OUTPUT_OPTIONS, set(output) - LOGSTASH_ES_OUTPUT_OPTIONS
    # create: an alert already indexed keeps the status analysts gave it; its 409 is expected
    assert output["action"] == "create"
    assert output["silence_errors_in_log"] == '["version_conflict_engine_exception"]'
    assert (output["data_stream"], output["manage_template"]) == ("false", "false")
    assert output["index"] == ServiceSettings.model_construct().alerts_index
    assert output["api_key"].startswith("${")  # from the keystore, never in the file
    # The id is the alert's: the key is the dotted top-level name, as eqlstream writes it.
    reference = re.fullmatch(r"%\{(\[[^}]+\])\}", output["document_id"])[1]
    for line in demo_alerts:
        doc = json.loads(line)
        assert logstash_field(doc, reference) == doc["kibana.alert.uuid"]
    assert logstash_field(json.loads(demo_alerts[0]), "[kibana][alert][uuid]") is None
    # and a record without that field is dropped rather than indexed under the literal "%{...}"
    filter_block = _block(text, "filter")
    assert f"if ![{reference[1:-1]}]" in filter_block and "drop" in filter_block


def test_logstash_alerts_pipeline_security_options_are_real_kafka_input_options() -> None:
    kafka = _block(_block(LOGSTASH_ALERTS.read_text(), "input"), "kafka")
    commented = _settings(kafka, commented=True)
    assert commented and set(commented) <= LOGSTASH_KAFKA_INPUT_OPTIONS, set(commented) - LOGSTASH_KAFKA_INPUT_OPTIONS
    assert commented["security_protocol"] == "SASL_SSL"
    assert "ScramLoginModule" in commented["sasl_jaas_config"]
