"""Who a rate limit counts: an IPv4 address, or an IPv6 client's whole /64 (it may take any
address in it), so a client cannot reset its limits by changing the last 64 bits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import get_settings
from app.ratelimit import client_of
from tests.fixtures.problems import assert_problem

CATALOG = "/api/v1/public/products"


@pytest.mark.parametrize(
    ("address", "client"),
    [
        ("203.0.113.10", "203.0.113.10"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::FFFF", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:203.0.113.10", "203.0.113.10"),  # an IPv4 client on a dual-stack socket
        ("testclient", "testclient"),
        (None, "unknown"),
    ],
)
def test_a_limit_counts_an_ipv4_address_or_an_ipv6_slash_64(
    address: str | None, client: str
) -> None:
    assert client_of(address) == client


@pytest.fixture
def one_catalog_read_per_hour() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for bucket in ("SELF_ORDER", "DOB_CHECK", "PUBLIC_CATALOG"):
            for window in ("MINUTE", "HOUR"):
                patch.setenv(f"RATE_LIMIT_{bucket}_PER_{window}", "0")
        patch.setenv("RATE_LIMIT_PUBLIC_CATALOG_PER_HOUR", "1")
        get_settings.cache_clear()
        left = 3600 - time.time() % 3600
        if left < 5:  # both requests in one fixed window
            time.sleep(left + 0.2)
        yield
    get_settings.cache_clear()


def test_addresses_of_one_ipv6_slash_64_share_a_limit_and_another_slash_64_has_its_own(
    app: Any, one_catalog_read_per_hour: None
) -> None:
    with (
        TestClient(app, client=("2001:db8:1:2::10", 40000)) as first,
        TestClient(app, client=("2001:db8:1:2:ffff:0:0:99", 40000)) as same_network,
        TestClient(app, client=("2001:db8:1:3::10", 40000)) as next_network,
    ):
        assert first.get(CATALOG).status_code == 200
        refused = same_network.get(CATALOG)
        assert_problem(refused, 429, "/problems/rate-limited")
        assert next_network.get(CATALOG).status_code == 200
