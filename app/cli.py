"""Command line: ``python -m app replay ...`` (and, with the streaming service, ``run``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import orjson
from pydantic import ValidationError

from app.alerts import bulk
from app.alerts.summary import summary_line
from app.detector import Alert
from app.replay import UnreadableInput, replay
from app.rule import RuleError, load_rules
from app.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eqlstream", description="Elastic EQL sequence rules on event streams.")
    commands = parser.add_subparsers(dest="command", required=True)
    rp = commands.add_parser(
        "replay",
        help="evaluate rules over NDJSON files and print the alerts",
        description="Read NDJSON events in arrival order (files, '-' for stdin, .gz too) and write alert "
        "documents as NDJSON to stdout; progress and a summary go to stderr.",
    )
    rp.add_argument("files", nargs="+", metavar="FILE")
    rp.add_argument("--rule", help="rule file or directory (default: EQLSTREAM_RULE_PATH or the bundled v4 rule)")
    rp.add_argument("--allowed-lateness", help="e.g. 5m (default: EQLSTREAM_ALLOWED_LATENESS or 5m)")
    rp.add_argument("--order-tolerance", help="e.g. 5s (default: EQLSTREAM_ORDER_TOLERANCE or 0s)")
    rp.add_argument("--host-id-fallback", help="opt-in join field for events without host.id, e.g. host.name")
    rp.add_argument(
        "--format",
        choices=("kibana", "summary"),
        default="kibana",
        help="kibana: the alert documents (2 building blocks + 1 shell per match); summary: one line per match",
    )
    rp.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    run = commands.add_parser(
        "run",
        help="run the streaming service (configured by EQLSTREAM_* environment variables)",
        description="Consume events from Kafka, detect sequences, write alerts and dead letters to Kafka.",
    )
    run.add_argument(
        "--role",
        choices=("all", "ingest", "sequence"),
        help="all (default, EQLSTREAM_ROLE): both stages in one process; ingest or sequence: one stage, "
        "to scale them apart",
    )
    run.add_argument("--rule", help="rule file or directory (default: EQLSTREAM_RULE_PATH or the bundled v4 rule)")
    commands.add_parser(
        "demo",
        help="start an embedded broker and the service, stream a scenario with two attacks, print the alerts",
    )
    bulk.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from app.demo import main as demo  # the demo needs the development broker (a dev dependency)

        return demo()
    if args.command == "load-alerts":
        return bulk.run_cli(args)  # needs neither settings nor rules
    overrides = {
        name: value
        for name, value in (
            ("rule_path", args.rule),
            ("allowed_lateness", getattr(args, "allowed_lateness", None)),
            ("order_tolerance", getattr(args, "order_tolerance", None)),
            ("host_id_fallback", getattr(args, "host_id_fallback", None)),
            ("role", getattr(args, "role", None)),
        )
        if value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for error in exc.errors():
            print(f"eqlstream: invalid {error['loc'][0]}: {error['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr, format="%(message)s")
    try:
        rules = load_rules(settings.rule_path)
    except RuleError as exc:
        print(f"eqlstream: {exc}", file=sys.stderr)
        return 2
    if args.command == "run":
        from app.kafka.run import run  # imported here: replay needs neither Kafka client nor Faust

        logging.getLogger().handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        run(settings, rules)
        return 0
    out = sys.stdout.buffer

    def write_alert(alert: Alert) -> None:
        if args.format == "kibana":
            for document in alert.documents:
                out.write(orjson.dumps(document) + b"\n")
        else:
            out.write(summary_line(alert.documents).encode() + b"\n")

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        report = replay(args.files, rules, settings, write_alert, progress=progress)
    except UnreadableInput as exc:
        print(f"eqlstream: cannot read {exc}", file=sys.stderr)
        return 2
    finally:
        out.flush()
    print(report.text(), file=sys.stderr)
    return 0
