"""The pieces of tenants and auth that need no server: settings, secrets, key shapes, scopes."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError as PydanticValidationError

from controller.auth import SCOPES, require
from controller.tokens import TokenVerifier, looks_like_jwt
from semantest.api_keys import PREFIX_LENGTH, ApiKeyRecord, new_key, ordered_scopes
from semantest.config import Settings
from semantest.errors import Unauthorized
from semantest.tenants import Tenant, new_webhook_secret

pytestmark = pytest.mark.unit


def test_jwt_and_webhook_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = new_webhook_secret()
    monkeypatch.setenv("SEMANTEST_WEBHOOK_SECRET", secret)
    monkeypatch.setenv("SEMANTEST_JWT_SECRET", "s" * 32)
    monkeypatch.setenv("SEMANTEST_JWT_AUDIENCE", "semantest")
    monkeypatch.setenv("SEMANTEST_JWT_LEEWAY_S", "5")
    s = Settings()
    assert s.webhook_secret is not None and s.webhook_secret.get_secret_value() == secret
    assert s.jwt_secret is not None and s.jwt_audience == "semantest" and s.jwt_leeway_s == 5
    assert secret not in repr(s) and "s" * 32 not in repr(s)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("webhook_secret", "not-a-secret", "whsec_"),
        ("webhook_secret", "whsec_" + base64.b64encode(b"short").decode(), "24 to 64"),
        ("jwt_secret", "too short", "at least 32 bytes"),
        ("jwt_leeway_s", 3600, "less than or equal to 300"),
    ],
)
def test_bad_auth_settings_are_refused_at_start(field: str, value: object, reason: str) -> None:
    with pytest.raises(PydanticValidationError, match=reason):
        Settings.model_validate({field: value})


def test_webhook_secrets_are_standard_webhooks_secrets() -> None:
    secret = new_webhook_secret()
    raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert secret.startswith("whsec_") and len(raw) == 32
    assert new_webhook_secret() != secret
    assert Tenant(name="acme", webhook_secret=secret).plan.value == "standard"
    with pytest.raises(PydanticValidationError):
        Tenant(name="Acme", webhook_secret=secret)


def test_keys_have_a_visible_prefix_and_are_told_from_tokens() -> None:
    key = new_key()
    assert key.startswith("sk_") and len(key) == 43 and not looks_like_jwt(key)
    assert looks_like_jwt("eyJ.eyJ.sig")
    record = ApiKeyRecord.from_hash(
        {
            b"prefix": key[:PREFIX_LENGTH].encode(),
            b"tenant": b"acme",
            b"scopes": b"jobs:read",
            b"createdAt": b"1.5",
            b"revoked": b"0",
        }
    )
    assert record.prefix == key[:11] and record.scopes == ["jobs:read"] and not record.revoked
    assert ordered_scopes(["admin", "jobs:read", "admin", "jobs:write"]) == [
        "jobs:write",
        "jobs:read",
        "admin",
    ]


def test_require_knows_every_scope_and_no_other() -> None:
    for scope in SCOPES:
        assert require(scope).__name__.startswith("require_")
    with pytest.raises(ValueError, match="unknown scope 'jobs:delete'"):
        require("jobs:delete")


def test_without_jwt_settings_a_token_is_refused_saying_how_to_enable_it() -> None:
    with pytest.raises(Unauthorized, match="SEMANTEST_JWT_SECRET"):
        TokenVerifier(Settings()).verify("eyJ.eyJ.sig")


def test_a_public_key_that_is_not_rsa_fails_at_start() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ValueError, match="not an RSA public key"):
        TokenVerifier(Settings(jwt_public_key=pem))
