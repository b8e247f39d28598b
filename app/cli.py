"""Command line: ``python -m app replay|run|load-alerts`` (or ``eqlstream ...``).

Every mistake gets one line on stderr naming the variable, the flag or the file and what to do,
and exit status 2; never a traceback. Development tools (the embedded broker, the demo) are not
part of the product: a development install adds them as commands through the
``eqlstream.commands`` entry points.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

import orjson

from app import __version__, load_alerts
from app.core import Alert, Detector, EqlstreamError, load_rules, survey_rules
from app.core.alerts.summary import summary_line
from app.core.model import RejectReason
from app.logs import configure
from app.replay import UnreadableInput, replay, resolve_inputs
from app.settings import DetectionSettings, ServiceSettings, SettingsError, load_settings, unknown_variables

log = logging.getLogger("eqlstream")

EXIT_USAGE = 2
EXIT_NOTHING_READ = 1
COMMANDS_GROUP = "eqlstream.commands"
_NOT_OBJECTS = (RejectReason.INVALID_JSON, RejectReason.NOT_AN_OBJECT)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eqlstream", description="Elastic EQL sequence rules on event streams.")
    _version(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    rp = commands.add_parser(
        "replay",
        help="evaluate rules over NDJSON files and print the alerts",
        description="Read NDJSON events in arrival order (files, directories of *.ndjson[.gz], '-' for stdin; "
        "gzip is recognised by its content) and write alert documents as NDJSON to stdout; progress and a "
        "summary go to stderr.",
    )
    _version(rp)
    rp.add_argument("files", nargs="+", metavar="FILE")
    rp.add_argument("--rule", help="rule file or directory (default: EQLSTREAM_RULE_PATH or the bundled rule)")
    rp.add_argument(
        "--version-lock", help="Elastic's version.lock.json, for rule versions (EQLSTREAM_RULE_VERSION_LOCK)"
    )
    rp.add_argument("--allowed-lateness", help="ms, s, m, h or d, e.g. 5m (default: EQLSTREAM_ALLOWED_LATENESS or 5m)")
    rp.add_argument("--order-tolerance", help="ms, s, m, h or d, e.g. 5s (default: EQLSTREAM_ORDER_TOLERANCE or 0s)")
    rp.add_argument("--host-id-fallback", help="opt-in join field for events without host.id, e.g. host.name")
    rp.add_argument("--alert-cap", type=int, help="new alerts per rule per rule interval (-1: max_signals, 0: none)")
    rp.add_argument(
        "--format",
        choices=("kibana", "summary"),
        default="kibana",
        help="kibana: the alert documents (building blocks + shell per match); summary: one line per match",
    )
    rp.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    rp.set_defaults(handler=_replay)
    run = commands.add_parser(
        "run",
        help="run the streaming service (configured by EQLSTREAM_* environment variables)",
        description="Consume events from Kafka, detect sequences, write alerts and dead letters to Kafka.",
    )
    _version(run)
    run.add_argument(
        "--role",
        choices=("all", "ingest", "sequence"),
        help="all (default, EQLSTREAM_ROLE): both stages in one process; ingest or sequence: one stage",
    )
    run.add_argument("--rule", help="rule file or directory (default: EQLSTREAM_RULE_PATH or the bundled rule)")
    run.add_argument(
        "--version-lock", help="Elastic's version.lock.json, for rule versions (EQLSTREAM_RULE_VERSION_LOCK)"
    )
    run.set_defaults(handler=_run)
    coverage = commands.add_parser(
        "coverage",
        help="say which EQL sequence rules of a file or folder eqlstream runs, and why not",
        description="For every EQL sequence rule in PATH (a rule file, or a folder of *.toml rule files such as "
        "a copy of Elastic's detection-rules rules/windows), say whether eqlstream runs it or why not. Rules of "
        "other types are counted, not listed. `--rule PATH` runs the supported ones.",
    )
    _version(coverage)
    coverage.add_argument("path", metavar="PATH")
    coverage.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json lines")
    coverage.set_defaults(handler=_coverage)
    load_alerts.add_parser(commands, _version)
    for entry in entry_points(group=COMMANDS_GROUP):
        try:
            entry.load()(commands, _version)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the product's commands down
            print(f"eqlstream: the command {entry.name!r} of {entry.value} is unavailable: {exc}", file=sys.stderr)
    return parser


def _version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"eqlstream {__version__}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    args = _parser().parse_args(argv)
    status: int = args.handler(args)
    return status


def _settings(kind: type[DetectionSettings], args: argparse.Namespace, flags: dict[str, str]) -> Any:
    """Settings from the environment and the flags given; ``SettingsError`` names what is wrong."""
    given = {field: (flag, getattr(args, flag.lstrip("-").replace("-", "_"), None)) for field, flag in flags.items()}
    return load_settings(kind, given)


def _prepare(kind: type[DetectionSettings], args: argparse.Namespace, flags: dict[str, str], text_format: str) -> Any:
    """Settings, logging and rules, or (None, status) after saying what is wrong."""
    try:
        settings = _settings(kind, args, flags)
    except SettingsError as exc:
        print(f"eqlstream: {exc}", file=sys.stderr)
        return None, None
    configure(settings.log_level, settings.log_format, text_format)
    for warning in unknown_variables(os.environ):
        log.warning("%s", warning)
    try:
        rules = load_rules(settings.rule_path, warn=log.warning, version_lock=settings.rule_version_lock)
    except EqlstreamError as exc:
        print(f"eqlstream: {exc}", file=sys.stderr)
        return None, None
    return settings, rules


def _run(args: argparse.Namespace) -> int:
    from app.service.kafka import KafkaConfigError  # the service's imports (Faust, Kafka) only for `run`
    from app.service.run import run

    settings, rules = _prepare(
        ServiceSettings,
        args,
        {"role": "--role", "rule_path": "--rule", "rule_version_lock": "--version-lock"},
        "%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if settings is None:
        return EXIT_USAGE
    try:
        return run(settings, rules)
    except KafkaConfigError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_USAGE
    except OSError as exc:  # the endpoints' port taken, the state directory unusable
        log.error("cannot start: %s", exc)
        return EXIT_USAGE


def _coverage(args: argparse.Namespace) -> int:
    try:
        entries = survey_rules(args.path)
    except EqlstreamError as exc:
        print(f"eqlstream: {exc}", file=sys.stderr)
        return EXIT_USAGE
    listed = [entry for entry in entries if entry.sequence]
    for entry in listed:
        reason = entry.refusal.problem if entry.refusal is not None else None
        if args.format == "json":
            row = {"file": entry.path, "name": entry.name, "supported": reason is None, "reason": reason}
            sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
        else:
            status = "supported  " if reason is None else "unsupported"
            print(
                f"{status}  {os.path.basename(entry.path)}  {entry.name or '(no name)'}{f': {reason}' if reason else ''}"
            )
    supported = sum(1 for entry in listed if entry.refusal is None)
    print(
        f"{supported} of {len(listed)} EQL sequence rules supported; {len(entries) - len(listed)} other rule files "
        "(not EQL sequences) not listed",
        file=sys.stderr,
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    flags = {
        "rule_path": "--rule",
        "rule_version_lock": "--version-lock",
        "allowed_lateness": "--allowed-lateness",
        "order_tolerance": "--order-tolerance",
        "host_id_fallback": "--host-id-fallback",
        "alert_cap": "--alert-cap",
    }
    settings, rules = _prepare(DetectionSettings, args, flags, "eqlstream: %(levelname)s: %(message)s")
    if settings is None:
        return EXIT_USAGE
    try:
        files = resolve_inputs(args.files)
    except UnreadableInput as exc:
        print(f"eqlstream: cannot read {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout.buffer

    def write_alert(alert: Alert) -> None:
        if args.format == "kibana":
            for document in alert.documents:
                out.write(orjson.dumps(document) + b"\n")
        else:
            out.write(summary_line(alert.documents).encode() + b"\n")

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        report = replay(files, Detector(rules, settings.detection_options()), write_alert, progress=progress)
        out.flush()
    except UnreadableInput as exc:
        print(f"eqlstream: cannot read {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    print(report.text(), file=sys.stderr)
    if report.events and sum(report.rejected.get(reason, 0) for reason in _NOT_OBJECTS) == report.events:
        print(
            "eqlstream: no line of the input was a JSON object: is this NDJSON (one JSON object per line)?",
            file=sys.stderr,
        )
        return EXIT_NOTHING_READ
    return 0
