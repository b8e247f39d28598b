"""The Quix Streams baseline: a stateless filter on the raw topic, as its documentation writes one.

``bench/out/quix-venv-*/bin/python bench/quix_reader.py --bootstrap HOST:PORT --topic T --output O
--events N --group G --result FILE``

Runs in a virtualenv of its own (``bench.quix`` makes it): Quix Streams 3.28.1 pins older
confluent-kafka and pydantic than eqlstream, so this script imports nothing of the project. The
pipeline is ``app.dataframe(topic).filter(lambda value: b"mshta" in value.lower())`` with the hits
written to an output topic, default settings apart from the broker, the group and reading from the
earliest offset. The filter also counts the records and reads the clocks at the first and at the
``--events``-th (two additions per record, nothing beside Quix's own per-record work), then
writes a JSON result and stops the app.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from quixstreams import Application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--bootstrap", "--topic", "--output", "--group", "--result"):
        parser.add_argument(name, required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        loglevel="WARNING",
    )
    source = app.topic(args.topic, key_deserializer="bytes", value_deserializer="bytes")
    output = app.topic(args.output, key_serializer="bytes", value_serializer="bytes")
    seen = {"records": 0, "hits": 0}
    clocks: dict[str, float] = {}

    def mentions_mshta(value: bytes) -> bool:
        seen["records"] += 1
        if seen["records"] == 1:
            clocks.update(wall=time.perf_counter(), cpu=time.process_time())
        elif seen["records"] == args.events:
            result = {
                "counted": args.events - 1,
                "wall": time.perf_counter() - clocks["wall"],
                "cpu": time.process_time() - clocks["cpu"],
                "hits": seen["hits"],
            }
            Path(args.result).write_text(json.dumps(result))
            app.stop()
        hit = b"mshta" in value.lower()
        seen["hits"] += hit
        return hit

    app.dataframe(source).filter(mentions_mshta).to_topic(output)
    app.run()


if __name__ == "__main__":
    main()
