"""The portal's API as the signed-in staff member: every write and every operational read.

Problems (RFC 9457) become `ApiProblem` with the API's own title and detail, which pages show
as they are (`ui.show_problem`); a 401 becomes `SessionExpired`, after which the app asks the
user to sign in again. Nothing here shows a trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

API_PREFIX = "/api/v1"
MAX_PAGE = 200  # the API's largest `limit`


class ApiProblem(Exception):
    """A problem answer of the API (or its absence), in words a person can act on."""

    def __init__(
        self, status: int, title: str, detail: str = "", type_: str = "about:blank"
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_

    @classmethod
    def of(cls, response: httpx.Response) -> ApiProblem:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return cls(response.status_code, response.reason_phrase or "Request failed")
        detail = body.get("detail")
        if isinstance(detail, list):  # validation errors: one line per field
            detail = "; ".join(
                f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg', '')}"
                for item in detail
                if isinstance(item, dict)
            )
        errors = body.get("errors")
        if not detail and isinstance(errors, list):
            detail = "; ".join(str(e.get("detail") or e.get("msg") or e) for e in errors)
        return cls(
            response.status_code,
            str(body.get("title") or response.reason_phrase or "Request failed"),
            str(detail or ""),
            str(body.get("type") or "about:blank"),
        )


class SessionExpired(ApiProblem):
    """The API no longer accepts the access token (expired or revoked): sign in again."""


class PortalApi:
    """`get`/`post`/`patch`/`delete` on `/api/v1` with the user's bearer token; JSON back."""

    def __init__(
        self,
        base_url: str,
        access_token: str,
        *,
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url + API_PREFIX,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        try:
            response = self._http.request(method, path, params=clean, json=json, headers=headers)
        except httpx.TimeoutException as exc:
            raise ApiProblem(504, "The portal's API did not answer in time", "Try again.") from exc
        except httpx.HTTPError as exc:
            raise ApiProblem(
                503, "The portal's API cannot be reached", "Try again in a minute."
            ) from exc
        if response.status_code == 401:
            problem = ApiProblem.of(response)
            raise SessionExpired(401, problem.title, problem.detail, problem.type)
        if response.is_error:
            raise ApiProblem.of(response)
        return response

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self._json(self.request("GET", path, params=params))

    def post(self, path: str, json: Any = None, **params: Any) -> Any:
        return self._json(self.request("POST", path, params=params, json=json))

    def patch(self, path: str, json: Any = None, **params: Any) -> Any:
        return self._json(self.request("PATCH", path, params=params, json=json))

    def put(self, path: str, json: Any = None, **params: Any) -> Any:
        return self._json(self.request("PUT", path, params=params, json=json))

    def delete(self, path: str, **params: Any) -> Any:
        return self._json(self.request("DELETE", path, params=params))

    def get_text(self, path: str, **params: Any) -> str:
        """A non-JSON answer (a CSV export) as text."""
        return self.request("GET", path, params=params, headers={"Accept": "*/*"}).text

    def pages(self, path: str, *, limit: int = MAX_PAGE, **params: Any) -> Iterator[Any]:
        """Every item of a cursor-paginated list (`{items, next_cursor}`)."""
        cursor: str | None = None
        while True:
            page = self.get(path, limit=limit, cursor=cursor, **params)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def items(
        self, path: str, *, at_most: int = 1000, limit: int = MAX_PAGE, **params: Any
    ) -> list[Any]:
        """Up to `at_most` items of a cursor-paginated list (tables show the first ones)."""
        found: list[Any] = []
        for item in self.pages(path, limit=min(limit, at_most), **params):
            found.append(item)
            if len(found) >= at_most:
                break
        return found
