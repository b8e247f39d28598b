"""The engine's expiry index: which state keys to look at when the watermark moves, in compact form.

The engine must find the keys whose oldest entry the watermark has left behind without scanning
the store, so it keeps (timestamp of the key's oldest entry, key) for every key it holds. That index
lives in memory, one record per key, and a flood of distinct keys (an attacker sending process
starts with fresh entity ids) makes it the engine's only per-key memory. A heap of
``(int, str)`` tuples costs ~280 bytes per key; here a key costs its UTF-8 bytes without the
rule-wide prefix every state key starts with, plus 12 bytes, packed into one ``bytearray`` per
second of event time. Only the seconds the cutoff has reached are unpacked (into a heap), so keys
come out exactly when their timestamp falls behind the cutoff, as with a plain heap, and a caller
may take them a bounded number at a time.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

BUCKET_MS = 1000  # one second of event time per packed bucket
_TS = 8  # bytes of a record's timestamp (signed, big-endian)
_LEN = 4  # bytes of a record's key length


class ExpiryIndex:
    """(timestamp, key) records, popped in timestamp order once behind a cutoff.

    A key may be added several times (each time its state is saved with a new oldest entry);
    the engine treats a popped record whose key no longer has that oldest entry as stale.
    """

    def __init__(self, prefix: str = "", bucket_ms: int = BUCKET_MS) -> None:
        self._prefix = prefix.encode()
        self._bucket_ms = bucket_ms
        self._packed: dict[int, bytearray] = {}  # bucket -> records
        self._order: list[int] = []  # heap of the buckets in _packed (may hold stale ids)
        self._open: list[tuple[int, bytes]] = []  # heap of the unpacked records of the oldest buckets
        self._open_bucket: int | None = None  # records of this bucket or older go to _open
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def owns(self, key: str) -> bool:
        """Whether ``key`` has the prefix this index strips (keys of other rules do not)."""
        return key.encode().startswith(self._prefix)

    def add(self, timestamp_ms: int, key: str) -> None:
        """Index ``key`` under ``timestamp_ms`` (``key`` must start with the index's prefix)."""
        suffix = key.encode()[len(self._prefix) :]
        self._size += 1
        bucket = timestamp_ms // self._bucket_ms
        if self._open_bucket is not None and bucket <= self._open_bucket:
            heapq.heappush(self._open, (timestamp_ms, suffix))
            return
        packed = self._packed.get(bucket)
        if packed is None:
            packed = self._packed[bucket] = bytearray()
            heapq.heappush(self._order, bucket)
        packed += timestamp_ms.to_bytes(_TS, "big", signed=True)
        packed += len(suffix).to_bytes(_LEN, "big")
        packed += suffix

    def pop_before(self, cutoff_ms: int) -> Iterator[tuple[int, str]]:
        """Remove and yield (timestamp, key) of every record older than ``cutoff_ms``, oldest first.

        Records added while the iteration runs are taken into account (the engine re-indexes the
        keys it pops). The caller may stop at any time: a record leaves the index only when it is
        yielded, so what is left behind comes out on the next call.
        """
        prefix = self._prefix.decode()
        while True:
            if self._open and self._open[0][0] < cutoff_ms:
                timestamp, suffix = heapq.heappop(self._open)
                self._size -= 1
                yield timestamp, prefix + suffix.decode()
                continue
            if not self._open:
                self._open_bucket = None
            bucket = self._oldest_packed()
            if bucket is None or bucket * self._bucket_ms >= cutoff_ms:
                return
            # (Partly) behind the cutoff: unpack the bucket into the heap and take from there.
            packed = self._packed.pop(bucket)
            heapq.heappop(self._order)
            self._open_bucket = bucket if self._open_bucket is None else max(bucket, self._open_bucket)
            self._open.extend(_unpack(packed))
            heapq.heapify(self._open)

    def _oldest_packed(self) -> int | None:
        while self._order and self._order[0] not in self._packed:
            heapq.heappop(self._order)  # a bucket emptied and popped before
        return self._order[0] if self._order else None

    def memory_bytes(self) -> int:
        """The packed records' size (for the benchmark's per-key figure)."""
        return sum(len(packed) for packed in self._packed.values())


def _unpack(packed: bytearray) -> Iterator[tuple[int, bytes]]:
    view = memoryview(packed)
    position = 0
    end = len(packed)
    while position < end:
        timestamp = int.from_bytes(view[position : position + _TS], "big", signed=True)
        position += _TS
        length = int.from_bytes(view[position : position + _LEN], "big")
        position += _LEN
        yield timestamp, bytes(view[position : position + length])
        position += length
