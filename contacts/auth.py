"""Bearer API-key authentication and per-token throttling for the API."""

import logging

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from redis.exceptions import RedisError
from rest_framework import authentication, exceptions, throttling
from rest_framework.request import Request

from contacts.models import ApiToken, hash_token

logger = logging.getLogger(__name__)


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiToken, ApiToken] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        raw = raw.strip()
        if scheme.lower() != "bearer" or not raw or " " in raw:
            raise exceptions.AuthenticationFailed("Malformed Authorization header; expected 'Bearer <token>'.")
        token = ApiToken.objects.filter(key_hash=hash_token(raw), is_active=True).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        now = timezone.now()
        # Written at most once a minute per token so the hot path stays read-only.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Documents the bearer token in the OpenAPI schema (Swagger UI's Authorize button uses it)."""

    target_class = BearerTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema) -> dict:
        return build_bearer_security_scheme_object(header_name="AUTHORIZATION", token_prefix="Bearer")


class TokenRateThrottle(throttling.SimpleRateThrottle):
    """API_THROTTLE_RATE per token, counted in Redis so every API process shares it."""

    scope = "token"

    def allow_request(self, request: Request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except RedisError as exc:
            # The throttle guards the service; with Redis down PostgreSQL still takes writes (the sweeper
            # forwards them later), so fail open instead of refusing every request.
            logger.warning("throttle unavailable; request allowed", extra={"error": str(exc)})
            return True

    def get_cache_key(self, request: Request, view) -> str | None:
        token = request.auth
        if isinstance(token, ApiToken):
            return self.cache_format % {"scope": self.scope, "ident": token.pk}
        return self.cache_format % {"scope": "anon", "ident": self.get_ident(request)}
