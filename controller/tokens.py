"""JWT bearer tokens: which ones the controller accepts and what they say.

A token is accepted when its signature verifies with a configured key — HS256 with
`SEMANTEST_JWT_SECRET`, RS256 with `SEMANTEST_JWT_PUBLIC_KEY` or a key of
`SEMANTEST_JWT_JWKS_FILE` — it carries `exp` and `sub` (the tenant), and `exp`, `nbf` and `iat`
hold within `SEMANTEST_JWT_LEEWAY_S` of clock skew; with `SEMANTEST_JWT_AUDIENCE` /
`SEMANTEST_JWT_ISSUER` set, its `aud` must name the one and its `iss` be the other. The
algorithm a token names only picks which configured key checks it: an HS256 token is never
checked against an RSA key (or the reverse), and `none` is never accepted.

Every refusal is a 401 `UNAUTHORIZED` whose message says why (expired, bad signature, no `exp`,
unknown `kid`, ...); what the caller may then do (scopes, 403) is `controller.auth`'s.

Must not import the routes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from semantest.config import Settings
from semantest.errors import Unauthorized

#: The one algorithm each kind of key checks.
HS256, RS256 = "HS256", "RS256"
#: How often (seconds) the JWKS file's modification time is looked at, so a rotated key set is
#: picked up without a restart and without a `stat` on every request.
JWKS_RECHECK_S = 1.0


def looks_like_jwt(credential: str) -> bool:
    """A JWT is three base64url parts joined by dots; API keys have no dot."""
    return credential.count(".") == 2


@dataclass(frozen=True)
class TokenClaims:
    """What an accepted token says about its caller."""

    subject: str
    scopes: frozenset[str]
    #: `jti` when the token has one, else None.
    token_id: str | None


def refused(reason: str) -> Unauthorized:
    """The 401 for a token, naming why."""
    return Unauthorized(f"invalid token: {reason}", [{"field": "authorization", "reason": reason}])


class _JwksFile:
    """A JWKS file's RSA keys by `kid`, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._checked = 0.0
        self.keys: dict[str | None, jwt.PyJWK] = {}
        self._load()  # a missing or broken file fails at start, not at the first token

    def _load(self) -> None:
        mtime = self.path.stat().st_mtime
        document = json.loads(self.path.read_text(encoding="utf-8"))
        found = jwt.PyJWKSet.from_dict(document).keys
        self.keys = {k.key_id: k for k in found if isinstance(k.key, RSAPublicKey)}
        self._mtime = mtime

    def current(self) -> dict[str | None, jwt.PyJWK]:
        now = time.monotonic()
        if now - self._checked >= JWKS_RECHECK_S:
            self._checked = now
            try:
                if self.path.stat().st_mtime != self._mtime:
                    self._load()
            except (OSError, ValueError, jwt.PyJWTError):
                pass  # mid-rewrite or removed: keep the keys we have
        return self.keys


def _public_key(value: str) -> RSAPublicKey:
    """`SEMANTEST_JWT_PUBLIC_KEY`: PEM text, or the path of a PEM file."""
    pem = value if value.lstrip().startswith("-----BEGIN") else Path(value).read_text("utf-8")
    key = load_pem_public_key(pem.encode())
    if not isinstance(key, RSAPublicKey):
        raise ValueError("SEMANTEST_JWT_PUBLIC_KEY is not an RSA public key (RS256)")
    return key


class TokenVerifier:
    """Checks tokens against the keys the settings configure; one per controller process."""

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self.public_key = _public_key(settings.jwt_public_key) if settings.jwt_public_key else None
        self.jwks = _JwksFile(settings.jwt_jwks_file) if settings.jwt_jwks_file else None
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.leeway_s = settings.jwt_leeway_s

    @property
    def algorithms(self) -> list[str]:
        """The algorithms some configured key checks."""
        rsa = self.public_key is not None or self.jwks is not None
        return [a for a, on in ((HS256, self.secret is not None), (RS256, rsa)) if on]

    def verify(self, token: str) -> TokenClaims:
        """The claims of an acceptable token; `Unauthorized` naming the reason otherwise."""
        if not self.algorithms:
            raise Unauthorized(
                "JWT bearer tokens are not accepted here (no SEMANTEST_JWT_SECRET, "
                "SEMANTEST_JWT_PUBLIC_KEY or SEMANTEST_JWT_JWKS_FILE is set); send an API key"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise refused("not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            accepted = " or ".join(self.algorithms)
            raise refused(f"algorithm {algorithm!r} is not accepted (only {accepted})")
        key = self._key(algorithm, header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise refused(_reason(exc, self)) from None
        return _claims(claims)

    def _key(self, algorithm: str, kid: object) -> Any:
        """The key that checks an `algorithm` token naming `kid`."""
        if algorithm == HS256:
            return self.secret
        keys = self.jwks.current() if self.jwks is not None else {}
        if isinstance(kid, str) and kid in keys:
            return keys[kid]
        if self.public_key is not None:
            return self.public_key
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        if kid is None:
            raise refused(f"the token names no kid and the JWKS holds {len(keys)} keys")
        raise refused(f"no key with kid {kid!r} in the JWKS")


def _reason(exc: jwt.PyJWTError, verifier: TokenVerifier) -> str:
    """Why PyJWT refused a token, in a sentence."""
    leeway = f"(allowing {verifier.leeway_s} s of clock skew)"
    if isinstance(exc, jwt.ExpiredSignatureError):
        return f"expired {leeway}"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the {exc.claim!r} claim is required"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the signature does not verify"
    if isinstance(exc, jwt.ImmatureSignatureError):  # nbf, or iat, in the future
        claim = "iat" if "iat" in str(exc) else "nbf"
        return f"not valid yet ({claim}) {leeway}"
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return "iat must be a number"
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"aud does not name {verifier.audience!r}"
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"iss is not {verifier.issuer!r}"
    return f"not acceptable ({exc})"


def _claims(claims: dict[str, Any]) -> TokenClaims:
    subject = claims["sub"]
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise refused("the 'scope' claim must be a space-separated string")
    token_id = claims.get("jti")
    return TokenClaims(
        subject=str(subject),
        scopes=frozenset(scope.split()),
        token_id=str(token_id)[:64] if token_id is not None else None,
    )
