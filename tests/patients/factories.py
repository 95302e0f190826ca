"""Helpers the patient and order tests share: staff ids, patients, problem bodies, audit rows."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import phi
from app.config import DEV_PHI_KEYS, get_settings
from app.models import AuditEntry, Patient

Headers = dict[str, str]
Json = dict[str, Any]
PATIENTS = "/api/v1/patients"


def user_id(client: TestClient, headers: Headers) -> str:
    """The `users.id` of the caller (provisioning the account on its first request)."""
    response = client.get("/api/v1/users/me", headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def patient_body(**overrides: Any) -> Json:
    tag = uuid.uuid4().hex[:8]
    body: Json = {
        "name": f"Jane Roe-{tag}",
        "email": f"jane.roe.{tag}@example.com",
        "phone": "+1 (555) 010-0199",
        "date_of_birth": "1980-04-02",
    }
    body.update(overrides)
    return body


def create_patient(client: TestClient, headers: Headers, **overrides: Any) -> Json:
    response = client.post(PATIENTS, json=patient_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def assert_problem(response: Any, status: int, type_: str | None = None) -> Json:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: Json = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    if type_ is not None:
        assert body["type"] == type_
    return body


def audit_entries(
    db: Session, entity_id: str | uuid.UUID, action: str | None = None
) -> list[AuditEntry]:
    query = select(AuditEntry).where(AuditEntry.entity_id == str(entity_id))
    if action is not None:
        query = query.where(AuditEntry.action == action)
    return list(db.scalars(query.order_by(AuditEntry.id)))


def count(db: Session, model: Any) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(model)) or 0


def patient_and_audit_counts(db: Session) -> tuple[int, int]:
    return count(db, Patient), count(db, AuditEntry)


@contextmanager
def second_phi_key() -> Iterator[str]:
    """Configure a new active key `k2` next to the development key; restore afterwards."""
    material = base64.b64encode(os.urandom(32)).decode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PHI_ENCRYPTION_KEYS", f"{DEV_PHI_KEYS},k2:{material}")
        patch.setenv("PHI_ACTIVE_KEY_ID", "k2")
        get_settings.cache_clear()
        phi.phi_keys.cache_clear()
        try:
            yield material
        finally:
            get_settings.cache_clear()
            phi.phi_keys.cache_clear()
    get_settings.cache_clear()
    phi.phi_keys.cache_clear()
