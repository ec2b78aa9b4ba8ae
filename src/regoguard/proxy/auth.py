"""Bearer JWTs on the HTTP front: ``serve`` as an OAuth 2.1 resource server (PyJWT does the cryptography).

A token is accepted only when its signature verifies against a key of the configured JWKS (a file, or a
URL fetched and cached, fetched again when a token names an unknown ``kid``, at most once per
``JWKS_REFRESH_SECONDS``) or, for development, an HS256 secret; when it has not expired and is already
valid (``exp``, ``nbf``, a small leeway); when its ``iss`` is the configured issuer and its ``aud`` names this
gateway; and when it carries every required scope. Algorithms follow the key: asymmetric ones for JWKS
keys, HS256 for the secret, never ``none``, so a token signed with the public key as an HMAC secret (the
RS/HS confusion) fails.

The principal is the ``sub`` claim (or ``principal_claim``); every claim is kept for the input document.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import structlog

log = structlog.get_logger("regoguard.auth")

ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
JWKS_REFRESH_SECONDS = 30.0
JWKS_MAX_AGE_SECONDS = 600.0
LEEWAY_SECONDS = 30
MAX_TOKEN_BYTES = 16 * 1024


@dataclass(frozen=True)
class Principal:
    id: str
    claims: dict[str, Any] = field(default_factory=dict)


class AuthError(Exception):
    """A request that may not pass: 401 (no token, or a bad one) or 403 (too few scopes)."""

    def __init__(self, status: int, error: str, description: str, scope: str | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.scope = scope


@dataclass(frozen=True)
class AuthOptions:
    jwks: str | None = None  # a file or an https URL
    secret: str | None = None  # HS256, for development
    issuer: str | None = None
    audience: str | None = None
    required_scopes: tuple[str, ...] = ()
    principal_claim: str = "sub"

    @property
    def enabled(self) -> bool:
        return self.jwks is not None or self.secret is not None


class KeySet:
    """The JWKS: loaded from a file once, or from a URL at start, then again in the background when a
    token names a key it lacks (at most every ``JWKS_REFRESH_SECONDS``) and every ``JWKS_MAX_AGE_SECONDS``
    (so a key the issuer revoked stops being trusted). A fetch never runs on a request's path, and one
    that fails or brings no usable key leaves the keys as they were."""

    def __init__(self, source: str, fetch_timeout: float = 10.0) -> None:
        self.source = source
        self._timeout = fetch_timeout
        self._keys: dict[str | None, jwt.PyJWK] = self._load()
        self._loaded_at = time.monotonic()
        self._refetched_at = -JWKS_REFRESH_SECONDS  # the first unknown kid is fetched for at once
        self._lock = threading.Lock()
        self._fetching = False
        self.fetched = threading.Event()  # set after each background fetch (tests wait on it)

    @property
    def remote(self) -> bool:
        return self.source.startswith(("http://", "https://"))

    def _load(self) -> dict[str | None, jwt.PyJWK]:
        if self.remote:
            import httpx2

            response = httpx2.get(self.source, timeout=self._timeout, follow_redirects=False)
            response.raise_for_status()
            document = response.json()
        else:
            document = json.loads(Path(self.source).read_text(encoding="utf-8"))
        keys: dict[str | None, jwt.PyJWK] = {}
        for raw in document.get("keys", []) if isinstance(document, dict) else []:
            try:
                key = jwt.PyJWK.from_dict(raw)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
                log.warning("skipped a key of the JWKS that cannot be used", kid=raw.get("kid"), error=str(exc))
                continue
            if key.algorithm_name not in ASYMMETRIC:
                log.warning("skipped a JWKS key that is not asymmetric", kid=raw.get("kid"))
                continue
            keys[raw.get("kid")] = key
        return keys

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._fetching:
                return
            self._fetching = True
            self.fetched.clear()

        def fetch() -> None:
            try:
                keys = self._load()
                if keys:
                    self._keys = keys
                    self._loaded_at = time.monotonic()
                else:
                    log.warning("the JWKS came back without a usable key; keeping the keys already known")
            except Exception as exc:
                log.warning("could not fetch the JWKS again; keeping the keys already known", source=self.source,
                            error=str(exc))
            finally:
                self._fetching = False
                self.fetched.set()

        threading.Thread(target=fetch, name="regoguard-jwks", daemon=True).start()

    def key_for(self, kid: str | None) -> jwt.PyJWK | None:
        keys = self._keys
        key = keys.get(kid)
        if key is None and kid is None and len(keys) == 1:
            key = next(iter(keys.values()))
        if not self.remote:
            return key
        now = time.monotonic()
        if now - self._loaded_at >= JWKS_MAX_AGE_SECONDS:
            self._refresh_in_background()
        elif key is None and now - self._refetched_at >= JWKS_REFRESH_SECONDS:
            # an unknown kid: the keys may have rotated; this token is refused, a retry finds the new key
            self._refetched_at = now
            self._refresh_in_background()
        return key


class Verifier:
    def __init__(self, options: AuthOptions, audience: str) -> None:
        self.options = options
        self.audience = options.audience or audience
        self.keys = KeySet(options.jwks) if options.jwks is not None else None

    def verify(self, authorization: str | None) -> Principal:
        """The principal a request's ``Authorization`` header proves, or :class:`AuthError`."""
        if not authorization:
            raise AuthError(401, "invalid_request", "a bearer token is required")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "invalid_request", "the Authorization header must be `Bearer <token>`")
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(401, "invalid_token", "the token is too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(401, "invalid_token", f"the token cannot be read: {exc}") from None
        alg = header.get("alg")
        key: Any
        if self.keys is not None and alg in ASYMMETRIC:
            found = self.keys.key_for(header.get("kid"))
            if found is None:
                raise AuthError(401, "invalid_token", "the token is signed with a key this gateway does not know")
            if found.algorithm_name != alg:
                raise AuthError(401, "invalid_token", "the token's algorithm does not match its key")
            key, algorithms = found.key, [alg]
        elif self.options.secret is not None and alg == "HS256":
            key, algorithms = self.options.secret, ["HS256"]
        else:
            raise AuthError(401, "invalid_token", f"tokens signed with {alg!r} are not accepted here")
        try:
            claims = jwt.decode(token, key, algorithms=algorithms, audience=self.audience, issuer=self.options.issuer,
                                leeway=LEEWAY_SECONDS,
                                options={"require": ["exp", *(["iss"] if self.options.issuer else [])]})
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "invalid_token", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "invalid_token", "the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise AuthError(401, "invalid_token", f"the token is not for this gateway ({self.audience})") from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, "invalid_token", "the token comes from another issuer") from None
        except jwt.PyJWTError as exc:
            raise AuthError(401, "invalid_token", f"the token is not valid: {exc}") from None
        subject = claims.get(self.options.principal_claim)
        if not isinstance(subject, str | int) or isinstance(subject, bool) or str(subject) == "":
            raise AuthError(401, "invalid_token", f"the token has no {self.options.principal_claim!r} claim")
        granted = set(_scopes(claims))
        missing = [s for s in self.options.required_scopes if s not in granted]
        if missing:
            raise AuthError(403, "insufficient_scope", f"the token lacks the scope(s) {' '.join(missing)}",
                            scope=" ".join(self.options.required_scopes))
        return Principal(str(subject), claims)


def _scopes(claims: dict[str, Any]) -> list[str]:
    """Scopes from ``scope`` (a space-separated string, RFC 8693) and ``scp`` (a list or a string)."""
    found: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.extend(value.split())
        elif isinstance(value, list):
            found.extend(s for s in value if isinstance(s, str))
    return found


def challenge(error: AuthError | None, metadata_url: str) -> str:
    """The ``WWW-Authenticate`` value of a refusal (RFC 6750, with RFC 9728's ``resource_metadata``)."""
    parts = [f'resource_metadata="{metadata_url}"']
    if error is not None and error.error != "invalid_request":
        parts.append(f'error="{error.error}"')
        # a header value: printable ASCII only (the description may quote a token's header)
        text = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "?" for ch in error.description)
        parts.append(f'error_description="{text}"')
        if error.scope:
            parts.append(f'scope="{error.scope}"')
    return "Bearer " + ", ".join(parts)


def resource_metadata(resource: str, options: AuthOptions) -> dict[str, Any]:
    """RFC 9728 protected resource metadata for this gateway."""
    doc: dict[str, Any] = {"resource": resource, "bearer_methods_supported": ["header"]}
    if options.issuer:
        doc["authorization_servers"] = [options.issuer]
    if options.required_scopes:
        doc["scopes_supported"] = list(options.required_scopes)
    return doc
