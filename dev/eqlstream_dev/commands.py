"""The development commands ``python -m app demo`` and ``python -m app broker``.

Registered through the ``eqlstream.commands`` entry points; this module imports nothing heavy, so
that adding the commands to the CLI costs nothing until one of them runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

Version = Callable[[argparse.ArgumentParser], None]


def demo(commands: argparse._SubParsersAction, version: Version) -> None:  # type: ignore[type-arg]
    """``python -m app demo``."""
    parser = commands.add_parser(
        "demo",
        help="start an embedded broker and the service, stream a scenario with two attacks, print the alerts",
        description="Start the development broker and `python -m app run`, stream a scenario (two attacks "
        "hidden in noise and near misses) and print each alert as it arrives.",
    )
    version(parser)
    parser.set_defaults(handler=_run_demo)


def broker(commands: argparse._SubParsersAction, version: Version) -> None:  # type: ignore[type-arg]
    """``python -m app broker``."""
    parser = commands.add_parser(
        "broker",
        help="run the embedded development broker (Tansu) in the foreground",
        description="Start a Kafka-compatible broker (Tansu, memory storage) on loopback and print the "
        "settings that point eqlstream and your producers at it; Ctrl-C stops it.",
    )
    parser.add_argument(
        "--port", type=int, default=9092, help="loopback port to listen on (default 9092; 0: any free one)"
    )
    version(parser)
    parser.set_defaults(handler=_run_broker)


def _run_demo(_args: argparse.Namespace) -> int:
    from eqlstream_dev.demo import main

    return main()


def _run_broker(args: argparse.Namespace) -> int:
    from eqlstream_dev.broker import serve_in_foreground

    return serve_in_foreground(args.port)
