"""Load alert documents into Elasticsearch with the ``_bulk`` API (``python -m app load-alerts``).

Analysts look at alerts in Kibana; this turns the NDJSON that ``replay --format kibana`` writes, or
a dump of the alerts topic (``kcat -C -t eqlstream-alerts -e -q``), into ``_bulk`` requests. Every
document goes in with ``_id`` = its ``kibana.alert.uuid``, so loading the same alerts twice (a
replay run again, an overlapping topic dump) never duplicates them. The default ``create``
operation leaves an existing alert untouched, as Kibana does with alerts it has already written,
which keeps the workflow status an analyst gave it; ``--op index`` overwrites instead (to take in
the corrected documents of a re-emitted alert; not allowed on data streams).

Only the standard library is used (urllib), so the loader runs wherever the replay CLI does.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

DEFAULT_INDEX = "eqlstream-alerts-default"
# A few MB per request is what Elasticsearch's bulk guidance suggests; far below its 100 MB limit.
DEFAULT_CHUNK_DOCS = 500
DEFAULT_CHUNK_BYTES = 5 * 1024 * 1024
# Per-item 429s (a full write queue) and whole-request 429/502/503/504 are worth waiting out.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
DEFAULT_RETRIES = 3
ID_FIELD = "kibana.alert.uuid"


class BulkError(Exception):
    """The cluster cannot be used at all (unreachable, credentials refused, bad index name)."""


@dataclass(frozen=True)
class Document:
    """One alert document to send, with where it was read for error messages."""

    id: str
    source: bytes
    origin: str


@dataclass
class LoadReport:
    """What happened to each document; ``failures`` and ``invalid`` are listed one per line."""

    read: int = 0
    created: int = 0
    updated: int = 0
    already_present: int = 0
    requests: int = 0
    invalid: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.invalid and not self.failures

    def text(self) -> str:
        lines = [
            f"documents read: {self.read} (invalid lines: {len(self.invalid)})",
            f"created: {self.created}, already present: {self.already_present}, updated: {self.updated}, "
            f"failed: {len(self.failures)}",
            f"bulk requests: {self.requests}",
        ]
        return "\n".join(lines)


def read_documents(stream: BinaryIO, name: str, report: LoadReport) -> Iterator[Document]:
    """The alert documents of an NDJSON stream; lines that are not one are recorded as invalid.

    Each document is sent as the exact bytes read, so nothing is re-encoded on the way.
    """
    for number, raw in enumerate(stream, start=1):
        line = raw.strip()
        if not line:
            continue
        origin = f"{name}:{number}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            report.invalid.append(f"{origin}: not JSON ({exc.msg})")
            continue
        alert_id = _alert_id(doc)
        if alert_id is None:
            report.invalid.append(f"{origin}: not an alert document (no string {ID_FIELD})")
            continue
        report.read += 1
        yield Document(alert_id, line, origin)


def _alert_id(doc: Any) -> str | None:
    """``kibana.alert.uuid`` as a dotted key (how eqlstream writes it) or as nested objects."""
    if not isinstance(doc, dict):
        return None
    value = doc.get(ID_FIELD)
    if value is None:
        value = doc
        for part in ID_FIELD.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    return value if isinstance(value, str) and value else None


def chunks(docs: Iterable[Document], max_docs: int, max_bytes: int) -> Iterator[list[Document]]:
    """Groups of at most ``max_docs`` documents and about ``max_bytes`` (one oversize document alone)."""
    batch: list[Document] = []
    size = 0
    for doc in docs:
        if batch and (len(batch) >= max_docs or size + len(doc.source) > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += len(doc.source)
    if batch:
        yield batch


def bulk_body(docs: Sequence[Document], op: str) -> bytes:
    """The NDJSON body: an action line with the alert id, then the document, for each one."""
    parts = []
    for doc in docs:
        parts.append(json.dumps({op: {"_id": doc.id}}, separators=(",", ":")).encode())
        parts.append(doc.source)
    return b"\n".join(parts) + b"\n"


class Elasticsearch:
    """The one call the loader needs: ``POST /<index>/_bulk``."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        user: str | None = None,
        password: str | None = None,
        ca_cert: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Content-Type": "application/x-ndjson", "Accept": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"ApiKey {api_key}"
        elif user:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.context = ssl.create_default_context(cafile=ca_cert) if ca_cert else None
        self.timeout = timeout

    def bulk(self, index: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """The HTTP status and the decoded JSON answer (``{}`` when the answer is not JSON)."""
        path = f"{self.url}/{urllib.parse.quote(index, safe='')}/_bulk"
        request = urllib.request.Request(path, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BulkError(f"cannot reach {self.url}: {reason}") from exc


def _json(data: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(data)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")
        cause = error.get("caused_by")
        return f"{text} (caused by {_error_text(cause)})" if isinstance(cause, dict) else text
    return str(error)


def load(
    docs: Iterable[Document],
    client: Elasticsearch,
    report: LoadReport,
    *,
    index: str = DEFAULT_INDEX,
    op: str = "create",
    max_docs: int = DEFAULT_CHUNK_DOCS,
    max_bytes: int = DEFAULT_CHUNK_BYTES,
    retries: int = DEFAULT_RETRIES,
    sleep: Callable[[float], None] = time.sleep,
) -> LoadReport:
    """Send the documents in chunks and count each item's outcome.

    With ``create``, an id that exists already (409) is the idempotent case, not an error.
    Items the cluster was too busy for (429) are sent again, up to ``retries`` times with a
    doubling pause; any other item error is recorded with its document's origin and id.
    """
    for batch in chunks(docs, max_docs, max_bytes):
        pending = batch
        for attempt in range(retries + 1):
            if attempt:
                sleep(2.0 ** (attempt - 1))
            pending = _send(pending, client, report, index, op, last_try=attempt == retries)
            if not pending:
                break
    return report


def _send(
    docs: list[Document], client: Elasticsearch, report: LoadReport, index: str, op: str, last_try: bool
) -> list[Document]:
    """One ``_bulk`` request; returns the documents to try again."""
    status, answer = client.bulk(index, bulk_body(docs, op))
    report.requests += 1
    items = answer.get("items")
    if status in (401, 403):
        what = "refused the credentials" if status == 401 else "denied the bulk request"
        raise BulkError(f"{client.url} {what} (HTTP {status}): {_error_text(answer.get('error'))}")
    if not (200 <= status < 300) or not isinstance(items, list) or len(items) != len(docs):
        if status in RETRY_STATUSES and not last_try:
            return docs
        if 400 <= status < 500 and status not in RETRY_STATUSES:
            # The same request would fail for every chunk (a bad index name, a closed index...).
            hint = " (try a smaller --chunk-size)" if status == 413 else ""
            raise BulkError(f"bulk request refused (HTTP {status}){hint}: {_error_text(answer.get('error'))}")
        for doc in docs:
            report.failures.append(f"{doc.origin} id={doc.id}: bulk request failed (HTTP {status})")
        return []
    retry = []
    for doc, item in zip(docs, items, strict=True):
        result = next(iter(item.values())) if isinstance(item, dict) and item else {}
        item_status = result.get("status", 0)
        if item_status == 201:
            report.created += 1
        elif item_status == 200:
            report.updated += 1
        elif item_status == 409 and op == "create":
            report.already_present += 1
        elif item_status == 429 and not last_try:
            retry.append(doc)
        else:
            report.failures.append(f"{doc.origin} id={doc.id}: HTTP {item_status} {_error_text(result.get('error'))}")
    return retry


def add_parser(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    version: Callable[[argparse.ArgumentParser], None],
) -> None:
    """The ``load-alerts`` subcommand's arguments."""
    parser = commands.add_parser(
        "load-alerts",
        help="send alert documents (NDJSON) to Elasticsearch with _id = kibana.alert.uuid",
        description="Read alert documents (the NDJSON of 'replay --format kibana', or a dump of the alerts "
        "topic) and index them with the _bulk API, _id = kibana.alert.uuid: loading the same alerts "
        "again never duplicates them. Credentials may come from ELASTICSEARCH_API_KEY or "
        "ELASTICSEARCH_PASSWORD instead of the command line.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="NDJSON files, '-' for stdin")
    parser.add_argument("--elasticsearch", required=True, metavar="URL", help="e.g. https://es.example:9200")
    parser.add_argument("--index", default=DEFAULT_INDEX, help=f"index or data stream (default: {DEFAULT_INDEX})")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--api-key", help="an encoded API key (default: ELASTICSEARCH_API_KEY)")
    auth.add_argument("--user", help="basic auth user; password from ELASTICSEARCH_PASSWORD or a prompt")
    parser.add_argument("--ca-cert", metavar="PATH", help="CA file (PEM) to verify the cluster's certificate")
    parser.add_argument(
        "--op",
        choices=("create", "index"),
        default="create",
        help="create (default): keep alerts that exist already; index: overwrite them",
    )
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_DOCS, help="documents per bulk request")
    version(parser)
    parser.set_defaults(handler=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Run ``load-alerts``: 0 when every document was stored, 1 when some were not, 2 on fatal errors."""
    if args.chunk_size < 1:
        print("eqlstream: --chunk-size must be at least 1", file=sys.stderr)
        return 2
    password = None
    if args.user:
        password = os.environ.get("ELASTICSEARCH_PASSWORD")
        if password is None and sys.stdin.isatty() and "-" not in args.files:
            password = getpass.getpass(f"password for {args.user}: ")
    report = LoadReport()
    try:
        client = Elasticsearch(
            args.elasticsearch,
            api_key=args.api_key or (None if args.user else os.environ.get("ELASTICSEARCH_API_KEY")),
            user=args.user,
            password=password,
            ca_cert=args.ca_cert,
        )
        load(
            _all_documents(args.files, report),
            client,
            report,
            index=args.index,
            op=args.op,
            max_docs=args.chunk_size,
        )
    except OSError as exc:
        print(f"eqlstream: cannot read {exc.filename or 'input'}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except BulkError as exc:
        print(f"eqlstream: {exc}", file=sys.stderr)
        print(report.text(), file=sys.stderr)
        return 2
    for line in report.invalid + report.failures:
        print(line, file=sys.stderr)
    print(report.text(), file=sys.stderr)
    return 0 if report.ok else 1


def _all_documents(names: Sequence[str], report: LoadReport) -> Iterator[Document]:
    for name in names:
        if name == "-":
            yield from read_documents(sys.stdin.buffer, "<stdin>", report)
        else:
            with open(name, "rb") as stream:
                yield from read_documents(stream, name, report)
