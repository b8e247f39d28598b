"""Configuration lives in one place (app.settings), is parsed once, and the README documents all of it."""

from __future__ import annotations

import re

import pytest
from pydantic import SecretStr

from app.core import DetectionOptions
from app.settings import (
    DetectionSettings,
    ServiceSettings,
    SettingsError,
    load_settings,
    unknown_variables,
)
from tests.support.paths import ROOT

README = (ROOT / "README.md").read_text()


def documented_variables() -> set[str]:
    """EQLSTREAM_* names in the README's tables, with `_SUFFIX` shorthands expanded (`A_B` / `_C` -> A_C).

    A row documents one or more variables (its first cell); other tables' rows that merely start
    with a backquoted text beginning with EQLSTREAM_ (a log line, say) are not read.
    """
    names = set()
    for row in re.findall(r"^\| (`EQLSTREAM_[A-Z_]+`[^|]*)\|", README, flags=re.MULTILINE):
        parts = re.findall(r"`([A-Z_]+)`", row)
        first = parts[0]
        names.add(first)
        for suffix in parts[1:]:
            if suffix.startswith("EQLSTREAM_"):  # a second name written out in full
                names.add(suffix)
                continue
            stem = first.rsplit("_", suffix.count("_"))[0]
            names.add(stem + suffix)
    return names


def variables() -> set[str]:
    return {f"EQLSTREAM_{name.upper()}" for name in ServiceSettings.model_fields}


def test_every_setting_is_documented_in_the_readme() -> None:
    assert variables() - documented_variables() == set()


def test_the_readme_documents_no_setting_that_does_not_exist() -> None:
    assert documented_variables() - variables() == set()


def test_replay_reads_a_subset_of_the_services_settings() -> None:
    assert set(DetectionSettings.model_fields) < set(ServiceSettings.model_fields)


def test_durations_are_milliseconds_once_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EQLSTREAM_ALLOWED_LATENESS", "90s")
    monkeypatch.setenv("EQLSTREAM_SESSION_TIMEOUT", "1.5s")
    monkeypatch.setenv("EQLSTREAM_FETCH_MAX_WAIT", "20ms")
    settings = load_settings(ServiceSettings)
    assert (settings.allowed_lateness, settings.session_timeout, settings.fetch_max_wait) == (90_000, 1_500, 20)
    assert settings.candidates_retention == 3_600_000 and settings.alerts_retention == 7 * 86_400_000


def test_input_topics_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EQLSTREAM_INPUT_TOPICS", " winlogbeat , endpoint,, ")
    assert load_settings(ServiceSettings).input_topics == ["winlogbeat", "endpoint"]


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("EQLSTREAM_ALLOWED_LATENESS", "300", ["EQLSTREAM_ALLOWED_LATENESS", "'300'", "ms, s, m, h or d"]),
        ("EQLSTREAM_ORDER_TOLERANCE", "5 seconds", ["EQLSTREAM_ORDER_TOLERANCE", "unit"]),
        ("EQLSTREAM_WATERMARK_QUORUM", "0", ["EQLSTREAM_WATERMARK_QUORUM", "greater than or equal to 1"]),
        ("EQLSTREAM_MAX_RECORD_BYTES", "1000", ["EQLSTREAM_MAX_RECORD_BYTES", "65536"]),
        ("EQLSTREAM_LOG_LEVEL", "verbose", ["EQLSTREAM_LOG_LEVEL"]),
    ],
)
def test_a_bad_value_names_its_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: list[str]
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(DetectionSettings)
    for word in words:
        assert word in str(raised.value)


def test_a_flag_overrides_its_variable_and_is_named_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EQLSTREAM_ALLOWED_LATENESS", "1m")
    assert (
        load_settings(DetectionSettings, {"allowed_lateness": ("--allowed-lateness", "2m")}).allowed_lateness == 120_000
    )
    assert (
        load_settings(DetectionSettings, {"allowed_lateness": ("--allowed-lateness", None)}).allowed_lateness == 60_000
    )
    with pytest.raises(SettingsError, match="invalid --allowed-lateness"):
        load_settings(DetectionSettings, {"allowed_lateness": ("--allowed-lateness", "2")})


def test_settings_that_contradict_each_other_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EQLSTREAM_TOPIC_REPLICATION_FACTOR", "1")
    with pytest.raises(SettingsError, match="MIN_INSYNC_REPLICAS \\(2\\) is more than"):
        load_settings(ServiceSettings)
    monkeypatch.setenv("EQLSTREAM_TOPIC_MIN_INSYNC_REPLICAS", "1")
    monkeypatch.setenv("EQLSTREAM_INPUT_TOPICS", "")
    with pytest.raises(SettingsError, match="EQLSTREAM_INPUT_TOPICS is empty"):
        load_settings(ServiceSettings)
    monkeypatch.setenv("EQLSTREAM_ROLE", "sequence")  # the sequence stage reads no input topic
    assert load_settings(ServiceSettings).input_topics == []


def test_unknown_variables_are_named_with_the_closest_setting() -> None:
    environ = {"EQLSTREAM_ALLOWED_LATENES": "5m", "EQLSTREAM_RULE_PATH": "x", "PATH": "/bin", "EQLSTREAM_ZZZ": "1"}
    typo, unknown = unknown_variables(environ)
    assert typo == (
        "EQLSTREAM_ALLOWED_LATENES is not an eqlstream setting and is ignored; did you mean EQLSTREAM_ALLOWED_LATENESS?"
    )
    assert unknown.startswith("EQLSTREAM_ZZZ is not an eqlstream setting and is ignored")


def test_detection_options_carry_the_settings_in_milliseconds() -> None:
    settings = DetectionSettings(
        allowed_lateness="2m", order_tolerance="1500ms", watermark_quorum=2, max_join_keys=8, alert_cap=0
    )
    options = settings.detection_options()
    assert isinstance(options, DetectionOptions)
    assert (options.allowed_lateness_ms, options.order_tolerance_ms, options.watermark_quorum) == (120_000, 1_500, 2)
    assert (options.max_join_keys, options.alert_cap, options.alerts_index) == (8, 0, "eqlstream-alerts-default")
    # A candidate (its event plus its fields) must fit in a record of the configured size.
    assert options.max_event_bytes < options.max_record_bytes == settings.max_record_bytes
    assert options.max_state_bytes >= options.max_event_bytes


def test_to_environment_reproduces_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker started as a child process from ``to_environment`` runs with exactly these settings."""
    settings = ServiceSettings(
        input_topics=["a", "b"],
        allowed_lateness="90s",
        fetch_max_wait="20ms",
        kafka_sasl_password=SecretStr("s3cret"),
        create_topics=False,
    )
    environment = settings.to_environment()
    assert environment["EQLSTREAM_ALLOWED_LATENESS"] == "90s"
    assert environment["EQLSTREAM_FETCH_MAX_WAIT"] == "20ms"
    assert environment["EQLSTREAM_INPUT_TOPICS"] == "a,b"
    assert environment["EQLSTREAM_CREATE_TOPICS"] == "false"
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert load_settings(ServiceSettings) == settings


def test_settings_never_show_the_password() -> None:
    settings = ServiceSettings(kafka_sasl_password=SecretStr("s3cret"), kafka_ssl_key_password=SecretStr("keypass"))
    assert "s3cret" not in repr(settings) and "keypass" not in repr(settings)
