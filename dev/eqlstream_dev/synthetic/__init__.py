"""Deterministic synthetic Windows events for tests, the benchmark and the demo.

Real data cannot be shipped with the project, and hand-written fixtures are too few and too clean to
show that the engine gives Elasticsearch's answer on a realistic stream. This package writes a
Windows fleet's events from a seed: mostly noise of the kinds that reach the detector (process
starts, many with ``-Embedding``; inbound high-port TCP of lsass, services and svchost; file,
registry, DNS and logon events), a few DCOM/MSHTA attacks, and near misses that each break exactly
one condition of the rule. Every host ships one of three sources, and each event has that source's
shape (docs/input-sources.md) and a realistic size (1-3 KB):

* Elastic Defend and Winlogbeat 7 with the Sysmon module send ECS;
* Winlogbeat 8 sends Sysmon and Security records raw (``winlog.event_data`` strings, no ECS
  categorization), because its mapping runs only in the Elasticsearch ingest pipeline.

For every event the generator also writes its *twin*: the event as Elasticsearch indexes it. An ECS
event is its own twin; a raw Winlogbeat 8 record's twin is what Elastic's ingest pipeline makes of
it, written here from the generator's own model of the event (the process, the connection, the
times), never by ``app.core.normalize``. The oracle's answer on the twins is therefore an independent
check of the product's normalizer on the raw records. The package imports nothing from ``app``.
The Winlogbeat fleets drop ``message`` (a common ``drop_fields`` setting: the rendered text repeats
the event data and would push process starts past 3 KB).

Attack and near-miss events carry ``labels.synthetic_case`` (the kind, a key of ``CASE_KINDS``,
which says whether Elasticsearch alerts on it) and ``labels.synthetic_case_id`` so that tests and
readers can tell what each one is meant to do. Some cases sit on edges of Elasticsearch's
semantics: it keeps milliseconds of ``@timestamp`` (maxspan is inclusive in truncated
milliseconds: the ``maxspan_edge_*`` attacks and the ``delay_*_maxspan`` near misses), and
distinct documents that share ``event.id`` are distinct events (``shared_event_id`` attacks,
whose ids noise documents labelled ``synthetic_shares_event_id_with`` reuse). Times stay in
nanoseconds in the model, because the sources write 7 or 9 fractional digits.

``arrival_order`` delivers a corpus as Kafka does: out of order, some events twice, as exact
copies or, for Winlogbeat 8, as a Beat's re-send after its restart (new ``agent.ephemeral_id``,
``event.created`` and ``@metadata``: still the same event).
The same seed always gives the same events, byte for byte.

Modules: ``fleet`` (hosts, executables, accounts, processes, flows), ``clock`` (nanosecond times
and how the sources write them), ``defend``, ``winlogbeat7`` and ``winlogbeat8`` (one renderer per
source shape, twins included) with ``ecs`` and ``windows`` (what several renderers write alike),
``factory`` (the renderer of a host's source), ``noise``, ``scenarios`` (attacks, their variants
and near misses), ``corpus`` (assembly, arrival order, re-deliveries, NDJSON), ``cli``
(``python -m eqlstream_dev.synthetic``).
"""

from eqlstream_dev.synthetic.cli import main
from eqlstream_dev.synthetic.corpus import (
    DEFAULT_START,
    arrival_order,
    event_time_ns,
    generate_corpus,
    iter_corpus,
    iter_corpus_with_twins,
    source_of,
    write_ndjson,
)
from eqlstream_dev.synthetic.ecs import Event, Shipped
from eqlstream_dev.synthetic.factory import EventFactory
from eqlstream_dev.synthetic.fleet import (
    DEFEND,
    IMAGES,
    LOCAL_SERVICE,
    NETWORK_SERVICE,
    SHAPES,
    SYSTEM,
    WINLOGBEAT,
    WINLOGBEAT8,
    Connection,
    Host,
    Image,
    Process,
    User,
)
from eqlstream_dev.synthetic.noise import NoiseWriter
from eqlstream_dev.synthetic.scenarios import (
    ATTACK,
    ATTACK_VARIANTS,
    CASE_ID_LABEL,
    CASE_KINDS,
    CASE_LABEL,
    DEFEND_ONLY,
    MAXSPAN_NS,
    NEAR_MISSES,
    SHARED_EVENT_ID_LABEL,
    Plan,
    ScenarioWriter,
)
from eqlstream_dev.synthetic.winlogbeat8 import VERSION as WINLOGBEAT8_VERSION

__all__ = [
    "ATTACK",
    "ATTACK_VARIANTS",
    "CASE_ID_LABEL",
    "CASE_KINDS",
    "CASE_LABEL",
    "DEFAULT_START",
    "DEFEND",
    "DEFEND_ONLY",
    "IMAGES",
    "LOCAL_SERVICE",
    "MAXSPAN_NS",
    "NEAR_MISSES",
    "NETWORK_SERVICE",
    "SHAPES",
    "SHARED_EVENT_ID_LABEL",
    "SYSTEM",
    "WINLOGBEAT",
    "WINLOGBEAT8",
    "WINLOGBEAT8_VERSION",
    "Connection",
    "Event",
    "EventFactory",
    "Host",
    "Image",
    "NoiseWriter",
    "Plan",
    "Process",
    "ScenarioWriter",
    "Shipped",
    "User",
    "arrival_order",
    "event_time_ns",
    "generate_corpus",
    "iter_corpus",
    "iter_corpus_with_twins",
    "main",
    "source_of",
    "write_ndjson",
]
