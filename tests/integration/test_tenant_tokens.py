"""JWT bearer tokens beside API keys, against real controllers over real HTTP and a real Redis.

One controller takes HS256 (a shared secret) and RS256 (a PEM public key); another takes RS256
keys from a JWKS file and checks `aud` and `iss`. RSA keys are made here with `cryptography`.
Accepted and refused cases: signature, expiry and clock skew, missing claims, scopes (403),
algorithms, `kid`s, a rotated JWKS file, and the plan a token's tenant is on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from controller.auth import Authority, Caller
from semantest.config import Settings
from semantest.errors import Unauthorized
from semantest.redis_clients import async_client
from semantest.stack import free_port
from semantest.tenants import Plan
from tests.conftest import serve_controller

pytestmark = pytest.mark.integration

SECRET = "an HS256 secret for tests: at least 32 bytes, and 64 for HS512 not to warn"
AUDIENCE, ISSUER = "semantest", "https://idp.example"
RSA_KEYS = {name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in "pqrs"}


def public_pem(name: str) -> str:
    return (
        RSA_KEYS[name]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def jwks(*names: str) -> dict[str, Any]:
    found = []
    for name in names:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEYS[name].public_key()))
        found.append({**jwk, "kid": name, "use": "sig", "alg": "RS256"})
    return {"keys": found}


def token(
    key: Any = SECRET,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
    omit: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": "jwt-tenant",
        "scope": "jobs:read jobs:write",
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    for name in omit:
        body.pop(name)
    return jwt.encode(body, key, algorithm=algorithm, headers=headers)


def rs(name: str, kid: str | None = None, **claims: Any) -> str:
    headers = {"kid": kid} if kid else None
    return token(RSA_KEYS[name], "RS256", headers, **claims)


@pytest.fixture(scope="module")
def hs_url(api_settings: Settings) -> Iterator[str]:
    """A controller taking HS256 tokens and RS256 tokens of key `p` (a PEM)."""
    settings = api_settings.model_copy(
        update={
            "port": free_port(),
            "jwt_secret": SecretStr(SECRET),
            "jwt_public_key": public_pem("p"),
        }
    )
    with serve_controller(settings) as url:
        yield url


@pytest.fixture(scope="module")
def jwks_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps(jwks("q", "r")))
    return path


@pytest.fixture(scope="module")
def jwks_url(api_settings: Settings, jwks_file: Path) -> Iterator[str]:
    """A controller taking RS256 tokens of the JWKS file's keys, for `aud` and `iss` only."""
    settings = api_settings.model_copy(
        update={
            "port": free_port(),
            "jwt_jwks_file": jwks_file,
            "jwt_audience": AUDIENCE,
            "jwt_issuer": ISSUER,
        }
    )
    with serve_controller(settings) as url:
        yield url


def call(url: str, credential: str, method: str = "GET", path: str = "/api/v1/jobs") -> Any:
    body = {"prompt": "a token's prompt"} if method == "POST" else None
    return httpx.request(
        method,
        url + path,
        json=body,
        headers={"Authorization": f"Bearer {credential}"},
        timeout=10,
    )


def refusal(reply: httpx.Response) -> str:
    assert reply.status_code == 401, reply.text
    error = reply.json()["error"]
    assert error["code"] == "UNAUTHORIZED"
    message: str = error["message"]
    return message


def test_an_hs256_token_is_a_caller_of_its_subject(hs_url: str, client: httpx.Client) -> None:
    tenant = f"jwt-{uuid.uuid4().hex[:10]}"
    accepted = call(hs_url, token(sub=tenant), "POST", "/api/v1/images/generate")
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["jobId"]
    mine = call(hs_url, token(sub=tenant), path=f"/api/v1/images/status/{job_id}")
    assert mine.status_code == 200 and mine.json()["tenant"] == tenant
    # another tenant (the admin key, or another subject) does not see it
    assert client.get(f"/api/v1/images/status/{job_id}").status_code == 404
    other = call(hs_url, token(sub="someone-else"), path=f"/api/v1/images/status/{job_id}")
    assert other.status_code == 404


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda: token(key="another secret of at least thirty-two bytes"),
            "signature does not verify",
        ),
        (lambda: token(exp=int(time.time()) - 120), "expired (allowing 30 s of clock skew)"),
        (lambda: token(omit=("exp",)), "'exp' claim is required"),
        (lambda: token(omit=("sub",)), "'sub' claim is required"),
        (lambda: token(nbf=int(time.time()) + 120), "not valid yet (nbf)"),
        (lambda: token(sub="Not A Tenant"), "is not a tenant name"),
        (lambda: token(scope=["jobs:read"]), "space-separated string"),
        (lambda: token(algorithm="none", key=None), "algorithm 'none' is not accepted"),
        (
            lambda: token(algorithm="HS512"),
            "algorithm 'HS512' is not accepted (only HS256 or RS256)",
        ),
        (lambda: rs("q"), "signature does not verify"),  # an RSA key other than the configured PEM
        (lambda: "a.b.c", "not a well-formed JWT"),
    ],
)
def test_a_bad_token_is_401_saying_why(hs_url: str, make: Callable[[], str], reason: str) -> None:
    """Tokens are made when the test runs: they carry times (exp, nbf)."""
    assert reason in refusal(call(hs_url, make()))


def test_clock_skew_is_allowed_up_to_the_leeway(hs_url: str) -> None:
    now = int(time.time())
    assert call(hs_url, token(exp=now - 10)).status_code == 200
    assert call(hs_url, token(nbf=now + 10, iat=now + 10)).status_code == 200
    assert call(hs_url, token(exp=now - 45)).status_code == 401
    assert "not valid yet (iat)" in refusal(call(hs_url, token(iat=now + 120)))


def test_a_token_without_the_routes_scope_is_403_naming_it(hs_url: str) -> None:
    reader = token(scope="jobs:read")
    assert call(hs_url, reader).status_code == 200
    refused = call(hs_url, reader, "POST", "/api/v1/images/generate")
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert (
        error["code"] == "FORBIDDEN" and error["message"] == "this token lacks the scope jobs:write"
    )
    # unknown scopes are ignored; none at all is allowed nothing
    assert call(hs_url, token(scope="openid profile")).status_code == 403
    assert call(hs_url, token(omit=("scope",))).status_code == 403
    assert call(hs_url, token(scope="admin"), path="/api/v1/admin/keys").status_code == 200


def test_rs256_with_the_configured_public_key(hs_url: str) -> None:
    assert call(hs_url, rs("p")).status_code == 200
    # algorithm confusion: an HS256 token keyed with the public key's PEM text is checked with
    # the shared secret, never with the RSA key
    claims = {"sub": "jwt-tenant", "scope": "jobs:read", "exp": int(time.time()) + 60}
    forged = hs256_by_hand(claims, public_pem("p").encode())
    assert "signature does not verify" in refusal(call(hs_url, forged))


def hs256_by_hand(claims: dict[str, Any], key: bytes) -> str:
    """An HS256 token with any key (PyJWT refuses to use a PEM as an HMAC key)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(json.dumps(claims).encode())
    signature = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return signing + "." + part(signature)


def test_jwks_keys_are_picked_by_kid_with_aud_and_iss(jwks_url: str) -> None:
    good = {"aud": AUDIENCE, "iss": ISSUER}
    assert call(jwks_url, rs("q", "q", **good)).status_code == 200
    assert call(jwks_url, rs("r", "r", **good)).status_code == 200
    assert "signature does not verify" in refusal(call(jwks_url, rs("q", "r", **good)))
    assert "no key with kid 's'" in refusal(call(jwks_url, rs("s", "s", **good)))
    assert "names no kid" in refusal(call(jwks_url, rs("q", None, **good)))
    assert "aud does not name 'semantest'" in refusal(
        call(jwks_url, rs("q", "q", aud="other", iss=ISSUER))
    )
    assert "'aud' claim is required" in refusal(call(jwks_url, rs("q", "q", iss=ISSUER)))
    assert "iss is not" in refusal(call(jwks_url, rs("q", "q", aud=AUDIENCE, iss="https://x")))
    assert "algorithm 'HS256' is not accepted (only RS256)" in refusal(
        call(jwks_url, token(**good))
    )


def test_a_rotated_jwks_file_is_read_again(jwks_url: str, jwks_file: Path) -> None:
    good = {"aud": AUDIENCE, "iss": ISSUER}
    assert call(jwks_url, rs("s", "s", **good)).status_code == 401
    jwks_file.write_text(json.dumps(jwks("q", "r", "s")))
    deadline = time.monotonic() + 5
    while call(jwks_url, rs("s", "s", **good)).status_code != 200:
        assert time.monotonic() < deadline, "the new key was not picked up"
        time.sleep(0.1)


def test_api_keys_still_work_beside_tokens(hs_url: str, client: httpx.Client) -> None:
    created = client.post("/api/v1/admin/keys", json={"tenant": f"k-{uuid.uuid4().hex[:8]}"})
    assert call(hs_url, created.json()["key"]).status_code == 200


async def test_a_token_callers_plan_is_its_tenants(api_settings: Settings) -> None:
    redis = async_client(str(api_settings.redis_url))
    settings = api_settings.model_copy(update={"jwt_secret": SecretStr(SECRET)})
    authority = Authority(SimpleNamespace(settings=settings, redis=redis, key_hashes={}))  # type: ignore[arg-type]
    try:
        tenant = f"plan-{uuid.uuid4().hex[:8]}"
        caller = await authority.caller(token(sub=tenant, jti="t-1"))
        assert caller == Caller(
            tenant=tenant,
            key_id="jwt:t-1",
            plan="standard",
            scopes=frozenset({"jobs:read", "jobs:write"}),
        )
        await authority.tenants.create(tenant)
        await authority.tenants.update(tenant, plan=Plan.PARTNER)
        await asyncio.sleep(0.6)  # past the in-process cache
        assert (await authority.caller(token(sub=tenant))).plan == "partner"
        with pytest.raises(Unauthorized):
            await authority.caller(token(exp=int(time.time()) - 3600))
    finally:
        await redis.aclose()
