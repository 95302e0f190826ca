"""The connector registry: connectors are found by name, an unknown name is refused, and a
name cannot be taken twice."""

from __future__ import annotations

import pytest

from connectors import registry
from connectors.base import (
    Connector,
    ConnectorError,
    Exchange,
    PharmacyAuth,
    PharmacyConfig,
    PharmacyStatus,
    StatusResult,
    Submission,
    SubmitResult,
)


class _Echo:
    def __init__(self, config: PharmacyConfig, recorder: registry.Recorder) -> None:
        self.config = config
        self.recorder = recorder

    def submit(self, submission: Submission) -> SubmitResult:
        return SubmitResult(external_id=submission.id, status=PharmacyStatus.ACCEPTED)

    def fetch_status(self, submission: Submission, external_id: str) -> StatusResult:
        return StatusResult(status=PharmacyStatus.ACCEPTED)

    def cancel(self, submission: Submission, external_id: str) -> None:
        return None

    def healthcheck(self) -> None:
        return None


def test_a_registered_connector_is_found_by_name() -> None:
    registry.register("test_echo")(_Echo)
    try:
        recorded: list[Exchange] = []
        config = PharmacyConfig(name="echo", connector="test_echo", base_url="http://x")
        connector: Connector = registry.get_connector(config, recorded.append)
        assert isinstance(connector, _Echo)
        assert connector.config is config
        assert "test_echo" in registry.names()
        with pytest.raises(ValueError, match="already registered"):
            registry.register("test_echo")(lambda config, recorder: _Echo(config, recorder))
    finally:
        registry.unregister("test_echo")
    assert "test_echo" not in registry.names()


def test_an_unknown_connector_is_refused() -> None:
    config = PharmacyConfig(name="x", connector="no_such_vendor", base_url="http://x")
    with pytest.raises(ConnectorError, match="unknown connector 'no_such_vendor'"):
        registry.get_connector(config, lambda exchange: None)


def test_auth_never_shows_its_secrets() -> None:
    auth = PharmacyAuth(kind="oauth2", client_id="c", client_secret="very-secret-value")
    assert "very-secret-value" not in repr(auth)
    config = PharmacyConfig(name="p", connector="fhir_r4", base_url="http://x", auth=auth)
    assert "very-secret-value" not in repr(config)
