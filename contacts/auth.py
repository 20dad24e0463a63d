"""Bearer API-key authentication and per-token throttling for the API."""

from django.utils import timezone
from rest_framework import authentication, exceptions, throttling
from rest_framework.request import Request

from contacts.models import ApiToken, hash_token


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


class TokenRateThrottle(throttling.SimpleRateThrottle):
    """API_THROTTLE_RATE per token, counted in Redis so every API process shares it."""

    scope = "token"

    def get_cache_key(self, request: Request, view) -> str | None:
        token = request.auth
        if isinstance(token, ApiToken):
            return self.cache_format % {"scope": self.scope, "ident": token.pk}
        return self.cache_format % {"scope": "anon", "ident": self.get_ident(request)}
