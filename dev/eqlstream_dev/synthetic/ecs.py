"""What every renderer shares: the shipped event and its twin, and ECS field groups all sources write alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eqlstream_dev.synthetic.fleet import Image, Process

Event = dict[str, Any]


@dataclass(frozen=True)
class Shipped:
    """One event as its source puts it on Kafka, and its twin: the same event as Elasticsearch indexes it.

    Elasticsearch indexes ECS events (Elastic Defend, Winlogbeat 7) as they are, so such an event is
    its own twin. A raw Winlogbeat 8 record has a separate twin, written from the generator's model.
    """

    event: Event
    twin: Event

    @classmethod
    def ecs(cls, event: Event) -> Shipped:
        """An event that is already ECS: its own twin."""
        return cls(event, event)


def parent_fields(parent: Process) -> dict[str, Any]:
    """``process.parent`` of a process start, as every source reports it."""
    return {
        "args": list(parent.args),
        "args_count": len(parent.args),
        "command_line": parent.command_line,
        "entity_id": parent.entity_id,
        "executable": parent.image.path,
        "name": parent.image.name,
        "pid": parent.pid,
    }


def pe_fields(image: Image) -> dict[str, str]:
    """``process.pe``: the executable's version resource."""
    return {
        "company": image.company,
        "description": image.description,
        "file_version": image.version,
        "original_file_name": image.original_name,
        "product": image.product,
    }


def extension(name: str) -> str:
    """``file.extension``: what follows the last dot, empty if there is none."""
    return name.rsplit(".", 1)[-1] if "." in name else ""


def registered_domain(name: str) -> str:
    """The last two labels of a DNS name: right for every name the generator uses."""
    return ".".join(name.split(".")[-2:])
