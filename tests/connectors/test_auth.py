"""Authentication kinds of the shared transport against the reference pharmacy, and no
secret in any recorded exchange."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.base import Exchange, PermanentError, PharmacyAuth, PharmacyStatus
from connectors.http import REDACTED, Redactor, redact_url
from connectors.registry import get_connector
from tests.fixtures.pharmacy import ReferencePharmacy, run_reference_pharmacy, submission

API_KEY = "pk-test-3f9a1c7e55d04b2a"
CLIENT_SECRET = "cs-test-8d1e6b0f2a9c4417"


def assert_no_secret(recorded: list[Exchange], *secrets: str) -> None:
    assert recorded
    text = json.dumps([dataclasses.asdict(exchange) for exchange in recorded])
    for secret in secrets:
        assert secret not in text
    assert "Bearer " not in text
    for exchange in recorded:
        if "authorization" in exchange.request_headers:
            assert exchange.request_headers["authorization"] == REDACTED


def test_api_key(reference_pharmacy: ReferencePharmacy) -> None:
    reference_pharmacy.settings(api_key=API_KEY, api_key_header="X-Pharmacy-Key")
    recorded: list[Exchange] = []
    auth = PharmacyAuth(kind="api_key", header="X-Pharmacy-Key", api_key=API_KEY)
    conn = get_connector(reference_pharmacy.config(auth=auth), recorded.append)
    assert conn.submit(submission(1)).status == PharmacyStatus.ACCEPTED
    assert recorded[-1].request_headers["x-pharmacy-key"] == REDACTED
    wrong = PharmacyAuth(kind="api_key", header="X-Pharmacy-Key", api_key="pk-wrong-000000")
    with pytest.raises(PermanentError, match=r"HTTP 401.*login"):
        get_connector(reference_pharmacy.config(auth=wrong), recorded.append).submit(submission(2))
    assert_no_secret(recorded, API_KEY, "pk-wrong-000000")


def oauth(pharmacy: ReferencePharmacy, secret: str = CLIENT_SECRET) -> PharmacyAuth:
    return PharmacyAuth(
        kind="oauth2",
        token_url=pharmacy.base_url + "/oauth/token",
        client_id="portal",
        client_secret=secret,
        scope="system/MedicationRequest.write",
    )


def test_oauth2_token_is_cached_and_renewed_on_401(reference_pharmacy: ReferencePharmacy) -> None:
    reference_pharmacy.settings(oauth_clients={"portal": CLIENT_SECRET})
    recorded: list[Exchange] = []
    conn = get_connector(reference_pharmacy.config(auth=oauth(reference_pharmacy)), recorded.append)
    conn.healthcheck()
    result = conn.submit(submission(3))
    assert result.external_id
    conn.fetch_status(submission(3), result.external_id)
    assert reference_pharmacy.stats()["tokens_issued"] == 1
    reference_pharmacy.settings(revoke_tokens=True)
    conn.fetch_status(submission(3), result.external_id)  # 401, a new token, the same call again
    stats = reference_pharmacy.stats()
    assert stats["tokens_issued"] == 2
    assert stats["unauthorized"] == 1
    token_requests = [e for e in recorded if e.url.endswith("/oauth/token")]
    assert len(token_requests) == 2
    for exchange in token_requests:
        assert "client_secret=%5Bredacted%5D" in (exchange.request_body or "")
        assert json.loads(exchange.response_body or "")["access_token"] == REDACTED
    assert_no_secret(recorded, CLIENT_SECRET)


def test_oauth2_token_is_renewed_before_it_expires(reference_pharmacy: ReferencePharmacy) -> None:
    reference_pharmacy.settings(oauth_clients={"portal": CLIENT_SECRET}, token_lifetime_seconds=2)
    conn = get_connector(reference_pharmacy.config(auth=oauth(reference_pharmacy)), lambda e: None)
    result = conn.submit(submission(4))
    assert result.external_id
    time.sleep(1.2)  # past half the lifetime: renewed before the server would refuse it
    conn.fetch_status(submission(4), result.external_id)
    stats = reference_pharmacy.stats()
    assert stats["tokens_issued"] == 2
    assert stats["unauthorized"] == 0


def test_oauth2_wrong_secret_is_permanent(reference_pharmacy: ReferencePharmacy) -> None:
    reference_pharmacy.settings(oauth_clients={"portal": CLIENT_SECRET})
    recorded: list[Exchange] = []
    conn = get_connector(
        reference_pharmacy.config(auth=oauth(reference_pharmacy, "cs-wrong-secret-1")),
        recorded.append,
    )
    with pytest.raises(PermanentError, match="token endpoint answered HTTP 401"):
        conn.submit(submission(5))
    assert_no_secret(recorded, "cs-wrong-secret-1", CLIENT_SECRET)


def test_redaction_of_urls_and_bodies() -> None:
    assert redact_url("https://u:pw@h.example/x?api_key=abc&n=1") == (
        "https://h.example/x?api_key=%5Bredacted%5D&n=1"
    )
    redactor = Redactor(frozenset({"x-custom"}), ("s3cr3t-value",))
    headers = redactor.headers(
        [("X-Custom", "a"), ("Cookie", "b"), ("Set-Cookie", "c"), ("X-Note", "has s3cr3t-value")]
    )
    assert headers == {
        "x-custom": REDACTED,
        "cookie": REDACTED,
        "set-cookie": REDACTED,
        "x-note": f"has {REDACTED}",
    }
    body = redactor.body('{"a": {"refresh_token": "t"}, "b": ["s3cr3t-value"]}', "application/json")
    assert body == '{"a":{"refresh_token":"[redacted]"},"b":["[redacted]"]}'


# -- mutual TLS ------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    pem = serialization.Encoding.PEM
    ca_key = _key()
    ca = _certificate("test pharmacy CA", ca_key, None, ca_key, ca=True)
    server_key, client_key, stranger_key = _key(), _key(), _key()
    server = _certificate("127.0.0.1", server_key, ca.subject, ca_key, server=True)
    client = _certificate("portal", client_key, ca.subject, ca_key)
    stranger = _certificate("stranger", stranger_key, None, stranger_key)
    return {
        "ca": _write(folder / "ca.pem", ca.public_bytes(pem)),
        "server_cert": _write(folder / "server.pem", server.public_bytes(pem)),
        "server_key": _write(folder / "server.key", _pem_key(server_key)),
        "client_cert": _write(folder / "client.pem", client.public_bytes(pem)),
        "client_key": _write(folder / "client.key", _pem_key(client_key)),
        "stranger_cert": _write(folder / "stranger.pem", stranger.public_bytes(pem)),
        "stranger_key": _write(folder / "stranger.key", _pem_key(stranger_key)),
    }


@pytest.fixture(scope="module")
def tls_pharmacy(
    tls_files: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReferencePharmacy]:
    context = ssl.create_default_context(cafile=tls_files["ca"])
    context.load_cert_chain(tls_files["client_cert"], tls_files["client_key"])
    log = tmp_path_factory.mktemp("tls-pharmacy") / "pharmacy.log"
    with run_reference_pharmacy(
        log,
        "--tls-cert",
        tls_files["server_cert"],
        "--tls-key",
        tls_files["server_key"],
        "--client-ca",
        tls_files["ca"],
        scheme="https",
        verify=context,
    ) as server:
        yield server


def test_mutual_tls(tls_pharmacy: ReferencePharmacy, tls_files: dict[str, str]) -> None:
    auth = PharmacyAuth(
        kind="mtls",
        cert_file=tls_files["client_cert"],
        key_file=tls_files["client_key"],
        ca_file=tls_files["ca"],
    )
    recorded: list[Exchange] = []
    conn = get_connector(tls_pharmacy.config(auth=auth), recorded.append)
    conn.healthcheck()
    assert conn.submit(submission(6)).status == PharmacyStatus.ACCEPTED
    assert recorded[-1].url.startswith("https://127.0.0.1:")


def test_mutual_tls_refuses_an_unknown_client_and_an_unknown_server(
    tls_pharmacy: ReferencePharmacy, tls_files: dict[str, str]
) -> None:
    from connectors.base import TransientError

    stranger = PharmacyAuth(
        kind="mtls",
        cert_file=tls_files["stranger_cert"],
        key_file=tls_files["stranger_key"],
        ca_file=tls_files["ca"],
    )
    with pytest.raises(TransientError):
        get_connector(tls_pharmacy.config(auth=stranger), lambda e: None).healthcheck()
    no_ca = PharmacyAuth(
        kind="mtls", cert_file=tls_files["client_cert"], key_file=tls_files["client_key"]
    )
    with pytest.raises(TransientError):  # the server's certificate is not trusted
        get_connector(tls_pharmacy.config(auth=no_ca), lambda e: None).healthcheck()
    with pytest.raises(httpx.HTTPError):  # and a client without a certificate is refused
        httpx.get(
            tls_pharmacy.base_url + "/metadata",
            verify=ssl.create_default_context(cafile=tls_files["ca"]),
            timeout=5,
        )
    missing = PharmacyAuth(kind="mtls", cert_file="/nonexistent.pem", key_file="/nonexistent.key")
    with pytest.raises(PermanentError, match="client certificate could not be loaded"):
        get_connector(tls_pharmacy.config(auth=missing), lambda e: None)


def test_oauth2_token_is_shared_by_connectors_of_the_same_client(
    reference_pharmacy: ReferencePharmacy,
) -> None:
    reference_pharmacy.settings(oauth_clients={"portal": CLIENT_SECRET, "other": "cs-other-99"})
    for number in (7, 8, 9):  # a connector per call, as a delivery loop builds them
        conn = get_connector(reference_pharmacy.config(auth=oauth(reference_pharmacy)), print)
        conn.submit(submission(number))
    assert reference_pharmacy.stats()["tokens_issued"] == 1
    other = dataclasses.replace(
        oauth(reference_pharmacy), client_id="other", client_secret="cs-other-99"
    )
    get_connector(reference_pharmacy.config(auth=other), print).healthcheck()
    get_connector(reference_pharmacy.config(auth=other), print).submit(submission(10))
    assert reference_pharmacy.stats()["tokens_issued"] == 2
