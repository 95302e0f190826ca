"""Per-client rate limits of the public routes, counted in PostgreSQL.

Each request to a limited route adds one hit to its client's counters for the current minute
and hour (fixed windows) in one atomic `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`, on a
connection and in a transaction of its own: the hit is committed before the route runs, whatever
becomes of the request, and a refused request writes nothing else. Nothing is kept in the
process, so all API processes count against the same limits. The worker prunes closed windows.

The client is the address the server sees (`request.client.host`), an IPv6 one counted by its
/64 (`client_of`). Behind a load balancer that is the balancer's address unless uvicorn is told
to trust it: run the API with `--proxy-headers --forwarded-allow-ips=<the balancer's address>`,
never `*`, so an `X-Forwarded-For` sent by a client itself is not believed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar
from fastapi import Depends, Request
from sqlalchemy import ARRAY, DateTime, Engine, Integer, bindparam, text
from sqlalchemy.engine import Connection

from app import http, phi
from app.config import Settings, get_settings
from app.db import make_engine
from app.errors import TooManyRequests, raises


class Bucket(StrEnum):
    """Routes that share one limit."""

    SELF_ORDER = "self-order"  # POST /public/orders
    DOB_CHECK = "dob-check"  # POST /pay/verify
    PUBLIC_CATALOG = "public-catalog"  # GET /public/products, the shop's pages
    ORDERS_LINK = "orders-link"  # POST /my-orders (a "my orders" link by e-mail)


MINUTE = 60
HOUR = 3600


def limits_of(bucket: Bucket, settings: Settings) -> dict[int, int]:
    """Hits allowed per window (seconds -> hits); a window whose limit is 0 is left out."""
    per_minute, per_hour = {
        Bucket.SELF_ORDER: (
            settings.rate_limit_self_order_per_minute,
            settings.rate_limit_self_order_per_hour,
        ),
        Bucket.DOB_CHECK: (
            settings.rate_limit_dob_check_per_minute,
            settings.rate_limit_dob_check_per_hour,
        ),
        Bucket.PUBLIC_CATALOG: (
            settings.rate_limit_public_catalog_per_minute,
            settings.rate_limit_public_catalog_per_hour,
        ),
        Bucket.ORDERS_LINK: (
            settings.rate_limit_orders_link_per_minute,
            settings.rate_limit_orders_link_per_hour,
        ),
    }[bucket]
    return {window: limit for window, limit in ((MINUTE, per_minute), (HOUR, per_hour)) if limit}


IPV6_CLIENT_PREFIX = 64


def client_of(address: str | None) -> str:
    """Who a limit counts: an IPv4 address, or an IPv6 address's /64. One IPv6 client (a home,
    a phone, a cloud host) is given a whole /64 and picks a new address in it at will, so
    counting per address would let it reset its limits by changing the last 64 bits."""
    if address is None:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # no zone index
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is an IPv4 client
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


def client_key(request: Request) -> str:
    """A keyed hash of the client (`client_of`): counters never hold the address in clear."""
    return phi.lookup_hash(f"client-address:{client_of(http.client_address(request))}")


# One hit in every window of the bucket, in one statement; the database's clock decides the
# window (unless `now` is given), so API processes on different machines agree.
COUNT_HIT = text(
    """
    WITH clock AS (
        SELECT COALESCE(CAST(:now AS timestamptz), statement_timestamp()) AS now
    ), windows AS (
        SELECT seconds, date_bin(make_interval(secs => seconds), clock.now,
                                 TIMESTAMPTZ '2000-01-01 00:00:00+00') AS start
        FROM clock, unnest(CAST(:windows AS integer[])) AS seconds
    )
    INSERT INTO rate_limit_counters AS counter
        (bucket, client_key, window_seconds, window_start, hits, expires_at)
    SELECT :bucket, :client_key, seconds, start, 1, start + make_interval(secs => seconds)
    FROM windows
    ON CONFLICT (bucket, client_key, window_seconds, window_start)
        DO UPDATE SET hits = counter.hits + 1
    RETURNING counter.window_seconds, counter.hits,
        ceil(extract(epoch FROM counter.expires_at
                     - COALESCE(CAST(:now AS timestamptz), statement_timestamp())))::integer
            AS retry_after
    """
).bindparams(
    bindparam("windows", type_=ARRAY(Integer)),
    bindparam("now", type_=DateTime(timezone=True)),
)

PRUNE = text(
    "DELETE FROM rate_limit_counters"
    " WHERE expires_at < COALESCE(CAST(:now AS timestamptz), statement_timestamp())"
).bindparams(bindparam("now", type_=DateTime(timezone=True)))


def count_hit(
    connection: Connection,
    bucket: Bucket,
    key: str,
    limits: dict[int, int],
    *,
    now: datetime | None = None,
) -> int | None:
    """Count one hit; if that puts the client over a limit, the seconds until it may retry."""
    rows = connection.execute(
        COUNT_HIT,
        {"bucket": bucket.value, "client_key": key, "windows": sorted(limits), "now": now},
    ).all()
    waits = [row.retry_after for row in rows if row.hits > limits[row.window_seconds]]
    return max(1, *waits) if waits else None


def prune(connection: Connection, *, now: datetime | None = None) -> int:
    """Delete the counters of closed windows. Returns how many."""
    return connection.execute(PRUNE, {"now": now}).rowcount


# The counters have an engine of their own with this many connections, and at most this many
# counts run at once per process (waiting without a thread): a count never waits for a
# connection that a request's session holds, nor takes a thread a session needs to commit.
COUNTER_CONNECTIONS = 2
_slots: RunVar[CapacityLimiter] = RunVar("rate_limit_slots")


@lru_cache
def _engine_for(url: str) -> Engine:
    return make_engine(url, pool_size=COUNTER_CONNECTIONS)


def own_transaction() -> AbstractContextManager[Connection]:
    """A connection in a transaction of its own, committed when the block ends."""
    url = get_settings().database_url
    if not url:
        raise RuntimeError("DATABASE_URL is not set (use `portal up` for the embedded server)")
    return _engine_for(url).begin()


CounterTransaction = Callable[[], AbstractContextManager[Connection]]


async def counter_transaction() -> CounterTransaction:
    """Where hits are counted (a dependency, so tests can count on their own connection)."""
    return own_transaction


def _slots_of_this_loop() -> CapacityLimiter:
    try:
        return _slots.get()
    except LookupError:
        limiter = CapacityLimiter(COUNTER_CONNECTIONS)
        _slots.set(limiter)
        return limiter


def rate_limited(bucket: Bucket) -> Any:
    """A route dependency: count the client's request to `bucket`; 429 with `Retry-After` when
    it is over the limit (before the route reads or writes anything)."""

    @raises(TooManyRequests)
    async def check(
        request: Request, transaction: Annotated[CounterTransaction, Depends(counter_transaction)]
    ) -> None:
        limits = limits_of(bucket, get_settings())
        if not limits:
            return
        key = client_key(request)

        def count() -> int | None:
            with transaction() as connection:
                return count_hit(connection, bucket, key, limits)

        retry_after = await to_thread.run_sync(count, limiter=_slots_of_this_loop())
        if retry_after is not None:
            raise TooManyRequests(retry_after)

    return Depends(check)
