"""The portal's application plus routes that fail the ways real code fails with a patient's
details in hand (served only by the log tests)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from pydantic import TypeAdapter

from app.main import create_app as create_portal_app
from app.patients.schemas import PatientCreate

logger = logging.getLogger("app.tests.phi")


def create_app() -> FastAPI:
    app = create_portal_app()

    @app.post("/test/validation-error")
    async def validation_error(request: Request) -> None:
        body: dict[str, Any] = await request.json()
        # A model validated inside a service: the error's text repeats every input value.
        TypeAdapter(int).validate_python(body)

    @app.post("/test/model-error")
    async def model_error(request: Request) -> None:
        body: dict[str, Any] = await request.json()
        PatientCreate.model_validate({**body, "date_of_birth": "2961-02-03"})

    @app.post("/test/runtime-error")
    async def runtime_error(request: Request) -> None:
        body: dict[str, Any] = await request.json()
        try:
            raise LookupError(f"no patient with e-mail {body['email']}")
        except LookupError as exc:
            raise RuntimeError(f"could not match {body!r}") from exc

    @app.post("/test/log-line")
    async def log_line(request: Request) -> dict[str, str]:
        body: dict[str, Any] = await request.json()
        logger.warning("self-order refused for %s", body)
        logger.info("patient name=%s email=%s", body["name"], body["email"])
        return {"status": "logged"}

    return app
