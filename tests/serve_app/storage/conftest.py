"""Fixtures of the storage tests: the session Azurite's connection string, and an Azurite over HTTPS with OAuth.

The `azurite` and `own_azurite` fixtures come from tests/serve_app/conftest.py; the emulator itself from
tests/serve_app/azurite.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve_app.azurite import Azurite


@pytest.fixture(scope="session")
def azurite_connection_string(azurite: Azurite) -> str:
    """The connection string of the session's Azurite."""
    return azurite.connection_string


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert.pem, key.pem), valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(ski, False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class FakeEntraCredential:
    """A TokenCredential handing out an unsigned Entra-ID-shaped JWT (Azurite's `--oauth basic` accepts it)."""

    tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    object_id = "11059fcc-5514-4800-b5f8-49808b9cfab6"

    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: object) -> object:
        from azure.core.credentials import AccessToken

        self.calls += 1
        now = int(time.time())
        claims = {
            "aud": "https://storage.azure.com",
            "iss": f"https://sts.windows.net/{self.tenant}/",
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + 3600,
            "oid": self.object_id,
            "tid": self.tenant,
        }

        def b64(data: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        token = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}.{b64({'unsigned': True})}"
        return AccessToken(token, now + 3600)


@pytest.fixture(scope="session")
def oauth_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """An Azurite over HTTPS (self-signed certificate) that accepts Entra ID bearer tokens, for the session."""
    folder = tmp_path_factory.mktemp("azurite_oauth")
    server = Azurite(folder, tls=self_signed(folder), oauth=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
