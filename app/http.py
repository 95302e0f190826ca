"""Facts about the HTTP request that several layers record."""

from __future__ import annotations

from starlette.requests import HTTPConnection


def client_address(request: HTTPConnection) -> str | None:
    """The peer's address as the server sees it (None when the transport has none, e.g. tests).

    Behind a load balancer this is the balancer unless the server is told to trust the
    forwarded headers (see app/ratelimit.py).
    """
    return request.client.host if request.client else None
