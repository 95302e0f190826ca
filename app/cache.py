"""A small per-process cache whose entries expire: userinfo answers, signed-in users."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Entries live `ttl` seconds after they are put (`ttl` 0 keeps nothing), or less when a put
    says so. When it holds `max_entries`, expired entries are dropped; if none has expired the
    new entry is not kept, so callers who choose the keys (junk tokens) cannot grow it. Safe to
    share between threads: each call is a single dict operation or a rebuild that replaces the
    dict at once."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def put(self, key: K, value: V, *, ttl: float | None = None) -> None:
        ttl = self.ttl if ttl is None else min(ttl, self.ttl)
        if ttl <= 0:
            return
        now = time.monotonic()
        if len(self._entries) >= self.max_entries:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            if len(self._entries) >= self.max_entries:
                return
        self._entries[key] = (now + ttl, value)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)
