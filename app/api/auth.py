"""Who is calling: a JWT bearer token, a static API key, or the single local user."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import jwt

from app.config import AuthSettings
from app.errors import Unauthorized


@dataclass(frozen=True, slots=True)
class User:
    """The authenticated caller; `id` owns sessions."""

    id: str
    via: str


class Authenticator:
    """Checks credentials against the configured secrets (built once at start-up)."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.key_hashes = settings.api_key_hashes()
        self.local = not settings.configured
        self.metrics_digest: str | None = None
        if settings.metrics_token is not None:
            token = settings.metrics_token.get_secret_value()
            self.metrics_digest = hashlib.sha256(token.encode()).hexdigest()
        self.verify_key: str | None = None
        self.algorithms: list[str] = []
        if settings.jwt_public_key is not None:
            self.verify_key = settings.jwt_public_key.get_secret_value()
            self.algorithms = [a for a in settings.jwt_algorithms if a[:2] in ("RS", "ES", "PS")]
        elif settings.jwt_secret is not None:
            self.verify_key = settings.jwt_secret.get_secret_value()
            self.algorithms = [a for a in settings.jwt_algorithms if a.startswith("HS")]

    def authenticate(self, authorization: str | None, api_key: str | None) -> User:
        """The caller for these headers, or Unauthorized with the reason."""
        if self.local:
            return User(id=self.settings.local_user, via="local")
        if api_key is not None and self.key_hashes:
            digest = hashlib.sha256(api_key.encode()).hexdigest()
            for known, user_id in self.key_hashes.items():
                if hmac.compare_digest(known, digest):
                    return User(id=user_id, via="api_key")
            raise Unauthorized("the X-API-Key is not valid", code="invalid_api_key")
        if authorization is None:
            raise Unauthorized(
                "missing credentials: send 'Authorization: Bearer <token>' or 'X-API-Key'",
                code="missing_credentials",
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "the Authorization header must be 'Bearer <token>'", code="malformed_credentials"
            )
        return User(id=self.decode(token.strip()), via="jwt")

    def authorize_metrics(self, authorization: str | None) -> None:
        """Unauthorized unless no metrics token is set or the header carries it as a bearer."""
        if self.metrics_digest is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, self.metrics_digest):
            raise Unauthorized(
                "/metrics needs 'Authorization: Bearer <COPILOT_METRICS_TOKEN>'",
                code="invalid_metrics_token",
            )

    def decode(self, token: str) -> str:
        """The `sub` of a valid token."""
        if self.verify_key is None:
            raise Unauthorized("bearer tokens are not accepted here", code="invalid_token")
        options: dict[str, object] = {"require": ["sub", "exp"]}
        try:
            claims = jwt.decode(
                token,
                self.verify_key,
                algorithms=self.algorithms,
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options=options,  # type: ignore[arg-type]
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the token has expired", code="token_expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthorized("the token is for another audience", code="invalid_token") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthorized("the token has another issuer", code="invalid_token") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthorized("the token's signature is not valid", code="invalid_token") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid: {exc}", code="invalid_token") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 255:
            raise Unauthorized("the token's 'sub' must be a user id string", code="invalid_token")
        return subject


def issue_token(settings: AuthSettings, user_id: str, ttl_s: int | None = None) -> str:
    """A HS256 token for `user_id`, signed with the configured secret."""
    if settings.jwt_secret is None:
        raise RuntimeError("COPILOT_JWT_SECRET is not set: there is no key to sign with")
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": user_id,
        "iat": now,
        "exp": now + (ttl_s or settings.jwt_ttl_s),
    }
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")
