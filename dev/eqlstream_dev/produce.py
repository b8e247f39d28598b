"""``python -m eqlstream_dev.produce``: send an NDJSON file's lines to a Kafka topic, as Beats would.

Each line becomes one record with no key, on a random partition (Beats' default without a key),
so that trying the service by hand meets the same arrival order problems as production. Reads
``.gz`` files too.
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
from pathlib import Path

from confluent_kafka import KafkaException, Producer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eqlstream_dev.produce", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="bootstrap servers (default 127.0.0.1:9092)")
    parser.add_argument("--topic", default="eqlstream-events", help="topic (default eqlstream-events)")
    args = parser.parse_args(argv)
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 20, "log_level": 0})
    try:
        partitions = len(producer.list_topics(args.topic, timeout=10).topics[args.topic].partitions) or 1
    except KafkaException as exc:
        print(f"cannot reach {args.bootstrap}: {exc}", file=sys.stderr)
        return 2
    rng = random.Random()
    sent = 0
    for path in args.files:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as lines:
            for line in lines:
                if line.strip():
                    producer.produce(args.topic, line.rstrip(b"\r\n"), partition=rng.randrange(partitions))
                    producer.poll(0)
                    sent += 1
    left = producer.flush(30)
    print(f"sent {sent - left} records to {args.topic} on {args.bootstrap}", file=sys.stderr)
    return 0 if left == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
