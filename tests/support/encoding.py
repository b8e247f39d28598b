"""JSON that spells a document with ``\\uXXXX`` escapes: the same event, other bytes (for the prefilter's tests)."""

from __future__ import annotations

import json
import random
from typing import Any


def escaping_dumps(value: Any, rng: random.Random, rate: float) -> str:
    """JSON where each character of every string (keys too) is \\u-escaped with probability ``rate``."""
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{escaping_dumps(k, rng, rate)}:{escaping_dumps(v, rng, rate)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(escaping_dumps(v, rng, rate) for v in value) + "]"
    if isinstance(value, str):
        out = []
        for ch in value:
            code = ord(ch)
            if ch in '"\\' or code < 0x20 or rng.random() < rate:
                if code > 0xFFFF:
                    high, low = divmod(code - 0x10000, 0x400)
                    out.append(f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04X}")
                else:
                    out.append(f"\\u{code:04x}" if rng.random() < 0.5 else f"\\u{code:04X}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    return json.dumps(value)
