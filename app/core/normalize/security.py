"""Raw Windows Security events mapped to ECS the way Elastic's Security ingest pipeline maps them.

Winlogbeat 8/9 and the Elastic Agent System integration (``system.security``; the Windows
integration's ``forwarded`` data stream runs the same processors) ship Security log records raw:
the event's values are strings under ``winlog.event_data``, the shipper adds ``event.code``,
``event.provider``, ``event.outcome`` (from the audit keywords) and the task name as
``event.action``. Everything else the rules read (``event.category``, ``event.action`` as
``"logged-in"``, ``winlog.logon.type`` as ``"Network"``, ``user.*``, ``source.*``, ``process.*``)
is computed only by the Elasticsearch ingest pipeline (elastic/integrations
``packages/system/data_stream/security/elasticsearch/ingest_pipeline/``: ``default.yml``, which
drops empty ``event_data`` values and calls ``standard.yml`` and ``security_common.yml``; Winlogbeat's
own copy is ``x-pack/winlogbeat/module/security/ingest/``). Kafka carries the records before any
pipeline ran, so without this mapping no Security-based rule could ever fire.

Mapped are the event IDs Elastic's Windows sequence rules read: 4624 (logon), 4672 (special
privileges), 4688 (process creation), 4697 (service installed), 4698/4699 (scheduled task created /
deleted), 4724 (password reset), 4768/4769 (Kerberos TGT / service ticket) and 5145 (network share
object checked). Every other event ID is returned unchanged, as cheaply as possible.

Where this mapping deliberately differs from the pipeline:

* Nothing is removed or renamed away: the pipeline moves ``ProcessId``, ``IpAddress``, ... out of
  ``winlog.event_data``; here they are copied. Only ``PrivilegeList`` (4672) is replaced, by the
  list the pipeline splits it into, because rules compare single privileges with it.
* ``event.outcome`` is the shipper's; only when a record has none is it filled from
  ``winlog.keywords`` ("Audit Failure" wins over "Audit Success"), as Winlogbeat sets it.
* A value the pipeline would fail on (``Long.decode`` of a non-number, a number where a string is
  expected, ...) is left out here; the pipeline would stop the whole document with an error.
  ``source.ip`` is kept only when Elasticsearch's ``ip`` type would accept it.
* Left out as unused by detection rules, or needing agent-side processing: the geo/ASN lookups, the
  ``msobjs.dll`` message table (``AccessListDescription``, ``AccessMaskDescription``, ...; 5145's
  ``AccessList`` and ``AccessMask`` stay the raw strings), the decoded scheduled-task XML
  (``winlog.scheduled_task.*`` except ``name``), ``log.level``, ``ecs.version``, and the mappings of
  event IDs not listed above.
* ``TicketOptionsDescription`` lists the flags in the table's order; the pipeline iterates a map
  whose order is not guaranteed (a rule's match on one flag is the same either way).
"""

from __future__ import annotations

import re
from typing import Any, TypeGuard

from app.core.normalize.sysmon import already_categorized, categorized, event_id_text, is_ip, with_fields

SECURITY_PROVIDER = "Microsoft-Windows-Security-Auditing"
SECURITY_CHANNEL = "Security"

# event ID -> (event.category, event.type, event.action), as the pipeline's categorization script.
_CATEGORIZATION: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "4624": (("authentication",), ("start",), "logged-in"),
    "4672": (("iam",), ("admin",), "logged-in-special"),
    "4688": (("process",), ("start",), "created-process"),
    "4697": (("iam", "configuration"), ("admin", "change"), "service-installed"),
    "4698": (("iam", "configuration"), ("creation", "admin"), "scheduled-task-created"),
    "4699": (("iam", "configuration"), ("deletion", "admin"), "scheduled-task-deleted"),
    "4724": (("iam",), ("user", "change"), "reset-password"),
    "4768": (("authentication",), ("start",), "kerberos-authentication-ticket-requested"),
    "4769": (("authentication",), ("start",), "kerberos-service-ticket-requested"),
    "5145": (("network", "file"), ("info", "access"), "network-share-object-access-checked"),
}
SECURITY_EVENT_IDS = frozenset(_CATEGORIZATION)

# Which account is the ECS ``user``: the logged-on (Target*) or the acting (Subject*) one.
_TARGET_IS_USER = frozenset({"4624", "4768", "4769"})
_SUBJECT_IS_USER = frozenset({"4672", "4688", "4697", "4698", "4699", "4724", "5145"})
# The pipeline's "Rename Common Auth Fields": ProcessId/ProcessName, IpAddress/IpPort, WorkstationName.
_COMMON_AUTH = frozenset({"4624", "4697", "4724", "4768", "4769", "5145"})
_KERBEROS = frozenset({"4768", "4769"})
_SCHEDULED_TASK = frozenset({"4698", "4699"})

# The pipeline's first step deletes event_data entries with these values: they mean "no value".
_NO_VALUE = frozenset({"", "-", "{00000000-0000-0000-0000-000000000000}"})

_LOGON_TYPES = {
    "2": "Interactive",
    "3": "Network",
    "4": "Batch",
    "5": "Service",
    "7": "Unlock",
    "8": "NetworkCleartext",
    "9": "NewCredentials",
    "10": "RemoteInteractive",
    "11": "CachedInteractive",
}
_SERVICE_TYPES = {
    "0x1": "Kernel Driver",
    "0x2": "File System Driver",
    "0x8": "Recognizer Driver",
    "0x10": "Win32 Own Process",
    "0x20": "Win32 Share Process",
    "0x110": "Interactive Own Process",
    "0x120": "Interactive Share Process",
}
_TICKET_OPTIONS = (
    (0x40000000, "Forwardable"),
    (0x20000000, "Forwarded"),
    (0x10000000, "Proxiable"),
    (0x08000000, "Proxy"),
    (0x04000000, "Allow-postdate"),
    (0x02000000, "Postdated"),
    (0x01000000, "Invalid"),
    (0x00800000, "Renewable"),
    (0x00400000, "Initial"),
    (0x00200000, "Pre-authent"),
    (0x00100000, "Opt-hardware-auth"),
    (0x00080000, "Transited-policy-checked"),
    (0x00040000, "Ok-as-delegate"),
    (0x00020000, "Request-anonymous"),
    (0x00010000, "Name-canonicalize"),
    (0x00000020, "Disable-transited-check"),
    (0x00000010, "Renewable-ok"),
    (0x00000008, "Enc-tkt-in-skey"),
    (0x00000002, "Renew"),
    (0x00000001, "Validate"),
)
# Looked up with the event's value lower-cased.
_ENCRYPTION_TYPES = {
    "0x1": "DES-CBC-CRC",
    "0x3": "DES-CBC-MD5",
    "0x11": "AES128-CTS-HMAC-SHA1-96",
    "0x12": "AES256-CTS-HMAC-SHA1-96",
    "0x17": "RC4-HMAC",
    "0x18": "RC4-HMAC-EXP",
    "0xffffffff": "FAIL",
}
# Kerberos result codes, looked up exactly as written (upper-case hex digits).
_KERBEROS_STATUS = {
    "0x0": "KDC_ERR_NONE",
    "0x1": "KDC_ERR_NAME_EXP",
    "0x2": "KDC_ERR_SERVICE_EXP",
    "0x3": "KDC_ERR_BAD_PVNO",
    "0x4": "KDC_ERR_C_OLD_MAST_KVNO",
    "0x5": "KDC_ERR_S_OLD_MAST_KVNO",
    "0x6": "KDC_ERR_C_PRINCIPAL_UNKNOWN",
    "0x7": "KDC_ERR_S_PRINCIPAL_UNKNOWN",
    "0x8": "KDC_ERR_PRINCIPAL_NOT_UNIQUE",
    "0x9": "KDC_ERR_NULL_KEY",
    "0xA": "KDC_ERR_CANNOT_POSTDATE",
    "0xB": "KDC_ERR_NEVER_VALID",
    "0xC": "KDC_ERR_POLICY",
    "0xD": "KDC_ERR_BADOPTION",
    "0xE": "KDC_ERR_ETYPE_NOTSUPP",
    "0xF": "KDC_ERR_SUMTYPE_NOSUPP",
    "0x10": "KDC_ERR_PADATA_TYPE_NOSUPP",
    "0x11": "KDC_ERR_TRTYPE_NO_SUPP",
    "0x12": "KDC_ERR_CLIENT_REVOKED",
    "0x13": "KDC_ERR_SERVICE_REVOKED",
    "0x14": "KDC_ERR_TGT_REVOKED",
    "0x15": "KDC_ERR_CLIENT_NOTYET",
    "0x16": "KDC_ERR_SERVICE_NOTYET",
    "0x17": "KDC_ERR_KEY_EXPIRED",
    "0x18": "KDC_ERR_PREAUTH_FAILED",
    "0x19": "KDC_ERR_PREAUTH_REQUIRED",
    "0x1A": "KDC_ERR_SERVER_NOMATCH",
    "0x1B": "KDC_ERR_MUST_USE_USER2USER",
    "0x1F": "KRB_AP_ERR_BAD_INTEGRITY",
    "0x20": "KRB_AP_ERR_TKT_EXPIRED",
    "0x21": "KRB_AP_ERR_TKT_NYV",
    "0x22": "KRB_AP_ERR_REPEAT",
    "0x23": "KRB_AP_ERR_NOT_US",
    "0x24": "KRB_AP_ERR_BADMATCH",
    "0x25": "KRB_AP_ERR_SKEW",
    "0x26": "KRB_AP_ERR_BADADDR",
    "0x27": "KRB_AP_ERR_BADVERSION",
    "0x28": "KRB_AP_ERR_MSG_TYPE",
    "0x29": "KRB_AP_ERR_MODIFIED",
    "0x2A": "KRB_AP_ERR_BADORDER",
    "0x2C": "KRB_AP_ERR_BADKEYVER",
    "0x2D": "KRB_AP_ERR_NOKEY",
    "0x2E": "KRB_AP_ERR_MUT_FAIL",
    "0x2F": "KRB_AP_ERR_BADDIRECTION",
    "0x30": "KRB_AP_ERR_METHOD",
    "0x31": "KRB_AP_ERR_BADSEQ",
    "0x32": "KRB_AP_ERR_INAPP_CKSUM",
    "0x33": "KRB_AP_PATH_NOT_ACCEPTED",
    "0x34": "KRB_ERR_RESPONSE_TOO_BIG",
    "0x3C": "KRB_ERR_GENERIC",
    "0x3D": "KRB_ERR_FIELD_TOOLONG",
    "0x3E": "KDC_ERR_CLIENT_NOT_TRUSTED",
    "0x3F": "KDC_ERR_KDC_NOT_TRUSTED",
    "0x40": "KDC_ERR_INVALID_SIG",
    "0x41": "KDC_ERR_KEY_TOO_WEAK",
    "0x42": "KRB_AP_ERR_USER_TO_USER_REQUIRED",
    "0x43": "KRB_AP_ERR_NO_TGT",
    "0x44": "KDC_ERR_WRONG_REALM",
}

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_RADIX_DIGITS = {16: re.compile("[0-9a-fA-F]+"), 8: re.compile("[0-7]+"), 10: re.compile("[0-9]+")}
# Java's Character.isWhitespace: these controls, and Unicode space separators except the no-break ones.
_JAVA_WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \u1680\u2000-\u2006\u2008-\u200a\u2028\u2029\u205f\u3000"
# Where the 4688 command-line split looks: quotes and whitespace.
_SPLIT_POINTS = re.compile(f'["{_JAVA_WHITESPACE}]')
# The split processor's "\s+" (Java regex, ASCII whitespace only).
_PRIVILEGE_SEPARATOR = re.compile("[ \t\n\x0b\x0c\r]+")
# security_common's gsub: an IPv4-mapped IPv6 source address becomes the IPv4 address.
_MAPPED_IPV4 = re.compile(r"\[?::ffff:([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)(?:\](?::[0-9]+)?)?")
# What Java's String.trim() removes: every character up to U+0020.
_JAVA_TRIMMED = "".join(map(chr, range(0x21)))


def from_security_log(winlog: Any) -> TypeGuard[dict[str, Any]]:
    """Whether a ``winlog`` object is a Security-Auditing record (forwarded ones keep the provider)."""
    if type(winlog) is not dict:
        return False
    provider = winlog.get("provider_name")
    return provider == SECURITY_PROVIDER or (provider is None and winlog.get("channel") == SECURITY_CHANNEL)


def normalize_security(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` mapped to ECS if it is a raw Security event of a mapped ID, otherwise ``doc`` itself."""
    winlog = doc.get("winlog")
    if not from_security_log(winlog):
        return doc
    event_id = event_id_text(winlog.get("event_id"))
    if event_id is None:
        event = doc.get("event")
        event_id = event_id_text(event.get("code")) if type(event) is dict else None
    if event_id is None or event_id not in SECURITY_EVENT_IDS or already_categorized(doc):
        return doc
    data = winlog.get("event_data")
    return _map_event(doc, event_id, winlog, data if type(data) is dict else {})


def _map_event(doc: dict[str, Any], event_id: str, winlog: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``doc`` plus the ECS fields the pipeline derives from Security event ``event_id``.

    The steps run in the pipeline's order, which decides the order of ``related.user``.
    """
    fields = categorized(doc, event_id, "security", _CATEGORIZATION[event_id])
    outcome = _keyword_outcome(doc, winlog)
    if outcome is not None:
        fields["event.outcome"] = outcome
    users: list[str] = []

    _put(fields, "winlog.logon.type", _LOGON_TYPES.get(_value(data, "LogonType") or ""))
    _kerberos_fields(fields, data, event_id)
    _put(fields, "service.name", _value(data, "ServiceName"))
    _put(fields, "service.type", _SERVICE_TYPES.get(_value(data, "ServiceType") or ""))

    if event_id in _TARGET_IS_USER:
        _target_user(fields, doc, data, users)
    elif event_id in _SUBJECT_IS_USER:
        _put(fields, "user.id", _value(data, "SubjectUserSid"))
        _put(fields, "user.name", _value(data, "SubjectUserName"))
        _put(fields, "user.domain", _value(data, "SubjectDomainName"))
        _append(users, _value(data, "SubjectUserName"))
    if event_id == "4724":
        _account(fields, "user.target", data, "TargetSid", users)
    elif event_id == "4688":
        _account(fields, "user.effective", data, "TargetUserSid", users)
    _put(fields, "winlog.logon.id", _value(data, "SubjectLogonId"))

    if event_id in _COMMON_AUTH:
        _put(fields, "process.pid", _pid(data.get("ProcessId")))
        _put(fields, "process.executable", _value(data, "ProcessName"))
        _put(fields, "source.ip", _value(data, "IpAddress"))
        _put(fields, "source.port", java_long_decode(_value(data, "IpPort")))
        _put(fields, "source.domain", _value(data, "WorkstationName"))
        _put_name(fields, "process")
    elif event_id == "4688":
        _process_creation(fields, data)
    if event_id == "4624":
        _append(users, _value(data, "SubjectUserName"))
    elif event_id in ("4688", "4724"):
        _append(users, _value(data, "TargetUserName"))
    if event_id == "4672":
        _privileges(fields, data)
    elif event_id == "5145":
        _share_file_fields(fields, data)
    elif event_id in _SCHEDULED_TASK:
        _put(fields, "winlog.scheduled_task.name", _value(data, "TaskName"))

    _source_ip(fields)
    _put(fields, "related.user", users)
    return with_fields(doc, _without_blanks(fields))


def _value(data: dict[str, Any], key: str) -> str | None:
    """An event_data string, or None where the pipeline would see no value."""
    value = data.get(key)
    if type(value) is not str or value in _NO_VALUE:
        return None
    return value


def _put(fields: dict[str, Any], path: str, value: Any) -> None:
    if value is not None:
        fields[path] = value


def _append(users: list[str], name: str | None) -> None:
    """Append to ``related.user`` without duplicates, as every one of the pipeline's appends does."""
    if name is not None and name not in users:
        users.append(name)


def _keyword_outcome(doc: dict[str, Any], winlog: dict[str, Any]) -> str | None:
    """``event.outcome`` as Winlogbeat sets it from the audit keywords, for a record that has none."""
    event = doc.get("event")
    if (type(event) is dict and event.get("outcome") is not None) or doc.get("event.outcome") is not None:
        return None
    keywords = winlog.get("keywords")
    if type(keywords) is not list:
        return None
    if "Audit Failure" in keywords:
        return "failure"
    if "Audit Success" in keywords:
        return "success"
    return None


def _kerberos_fields(fields: dict[str, Any], data: dict[str, Any], event_id: str) -> None:
    """The ticket options, encryption type and result code decoded into ``*Description`` fields."""
    options = java_long_decode(_value(data, "TicketOptions"))
    if options is not None:
        names = [name for flag, name in _TICKET_OPTIONS if options & flag == flag]
        if names:
            fields["winlog.event_data.TicketOptionsDescription"] = names
    encryption = _value(data, "TicketEncryptionType")
    if encryption is not None:
        _put(fields, "winlog.event_data.TicketEncryptionTypeDescription", _ENCRYPTION_TYPES.get(encryption.lower()))
    if event_id in _KERBEROS:
        _put(fields, "winlog.event_data.StatusDescription", _KERBEROS_STATUS.get(_value(data, "Status") or ""))


def _target_user(fields: dict[str, Any], doc: dict[str, Any], data: dict[str, Any], users: list[str]) -> None:
    """The logged-on account as ``user.*`` (the pipeline's "Copy Target User").

    A ``user`` value the record already has is kept; the account then goes to ``user.target``.
    """
    existing = doc.get("user")
    present = existing if type(existing) is dict else {}
    name = _value(data, "TargetUserName")
    short = name.split("@")[0] if name is not None else None
    for key, value in (
        ("id", _value(data, "TargetUserSid") or _value(data, "TargetSid")),
        ("name", short),
        ("domain", _value(data, "TargetDomainName")),
    ):
        if value is not None:
            fields[f"user.{key}" if present.get(key) is None else f"user.target.{key}"] = value
    _append(users, short)


def _account(fields: dict[str, Any], prefix: str, data: dict[str, Any], sid_key: str, users: list[str]) -> None:
    """The Target* account as ``user.target`` (4724) or ``user.effective`` (4688); names lose ``@domain``."""
    _put(fields, f"{prefix}.id", _value(data, sid_key))
    name = _value(data, "TargetUserName")
    if name is not None:
        short = name.split("@")[0]
        fields[f"{prefix}.name"] = short
        _append(users, short)
    _put(fields, f"{prefix}.domain", _value(data, "TargetDomainName"))


def _process_creation(fields: dict[str, Any], data: dict[str, Any]) -> None:
    """4688's new process, its creator (``process.parent``) and its command line."""
    _put(fields, "process.pid", _pid(data.get("NewProcessId")))
    _put(fields, "process.executable", _value(data, "NewProcessName"))
    _put(fields, "process.parent.executable", _value(data, "ParentProcessName"))
    _put_name(fields, "process")
    _put_name(fields, "process.parent")
    _put(fields, "process.parent.pid", _pid(data.get("ProcessId")))
    command_line = _value(data, "CommandLine")
    if command_line is not None:
        args = split_4688_command_line(command_line)
        fields["process.args"] = args
        fields["process.command_line"] = command_line
        fields["process.args_count"] = len(args)


def _put_name(fields: dict[str, Any], prefix: str) -> None:
    """``<prefix>.name``: what follows the executable's last backslash (all of it if there is none)."""
    executable = fields.get(f"{prefix}.executable")
    if executable is not None:
        fields[f"{prefix}.name"] = executable.split("\\")[-1]


def split_4688_command_line(command_line: str) -> list[str]:
    """``process.args`` as the pipeline's 4688 script splits a command line.

    Not the Sysmon pipeline's ``CommandLineToArgv`` port: it cuts at every whitespace character
    (Java's ``Character.isWhitespace``) outside double quotes and keeps the quotes in the
    arguments, so ``"C:\\a b\\x.exe" /c`` gives ``['"C:\\a b\\x.exe"', '/c']``. Runs of blanks give
    empty arguments, which the pipeline's final clean-up removes but ``process.args_count`` counts.
    """
    args: list[str] = []
    start = 0
    in_quotes = False
    for match in _SPLIT_POINTS.finditer(command_line):
        position = match.start()
        if command_line[position] == '"':
            in_quotes = not in_quotes
        elif not in_quotes:
            args.append(command_line[start:position])
            start = position + 1
    args.append(command_line[start:])
    return args


def _privileges(fields: dict[str, Any], data: dict[str, Any]) -> None:
    """4672's ``PrivilegeList`` split on whitespace, replacing the string as the pipeline does."""
    privileges = _value(data, "PrivilegeList")
    if privileges is not None:
        fields["winlog.event_data.PrivilegeList"] = _PRIVILEGE_SEPARATOR.split(privileges)


def _share_file_fields(fields: dict[str, Any], data: dict[str, Any]) -> None:
    """5145's ``file.*`` from the share's local path and the name relative to it."""
    name = _value(data, "RelativeTargetName")
    directory = _value(data, "ShareLocalPath")
    share = _value(data, "ShareName")
    _put(fields, "file.name", name)
    _put(fields, "file.directory", directory)
    if name is not None:
        if directory is not None:
            fields["file.path"] = f"{directory}\\{name}"
        if share is not None:
            fields["file.target_path"] = f"{share}\\{name}"
        dot = name.rfind(".")
        if dot > -1:
            fields["file.extension"] = name[dot + 1 :]


def _source_ip(fields: dict[str, Any]) -> None:
    """``source.ip`` with an IPv4-mapped address unwrapped, into ``related.ip``; dropped if not an IP."""
    address = fields.pop("source.ip", None)
    if address is None:
        return
    mapped = _MAPPED_IPV4.fullmatch(address)
    if mapped is not None:
        address = mapped.group(1)
    if is_ip(address):
        fields["source.ip"] = address
        fields["related.ip"] = [address]


def _pid(value: Any) -> int | None:
    """A process ID as the pipeline reads it: a string through ``Long.decode`` ("0x1f4"), a number as is."""
    if type(value) is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else None
    return java_long_decode(value) if type(value) is str else None


def java_long_decode(text: str | None) -> int | None:
    """``text`` as Java's ``Long.decode`` reads it (None where that throws).

    An optional sign, then ``0x``/``0X``/``#`` for hexadecimal, a leading ``0`` for octal, or
    decimal; ASCII digits only, no blanks, within 64 bits.
    """
    if not text:
        return None
    index = 1 if text[0] in "+-" else 0
    if text.startswith(("0x", "0X"), index):
        radix, index = 16, index + 2
    elif text.startswith("#", index):
        radix, index = 16, index + 1
    elif text.startswith("0", index) and len(text) > index + 1:
        radix, index = 8, index + 1
    else:
        radix = 10
    digits = text[index:]
    if not _RADIX_DIGITS[radix].fullmatch(digits):
        return None
    digits = digits.lstrip("0") or "0"
    if len(digits) > 22:  # more than any 64-bit value needs in any of the three radixes
        return None
    number = int(digits, radix)
    if text[0] == "-":
        number = -number
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def _blank(text: str) -> bool:
    """Java's ``trim().isEmpty()``: nothing but characters up to U+0020."""
    return not text.strip(_JAVA_TRIMMED)


def _without_blanks(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` after the pipeline's last step, which deletes blank strings and then empty lists."""
    out: dict[str, Any] = {}
    for path, value in fields.items():
        if type(value) is str:
            if _blank(value):
                continue
        elif type(value) is list:
            value = [item for item in value if type(item) is not str or not _blank(item)]
            if not value:
                continue
        out[path] = value
    return out
