"""Bearer API-key authentication and per-token throttling for the API."""

import hashlib
import logging
import secrets

from django.core.cache import cache as default_cache
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from redis.exceptions import NoScriptError, RedisError
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


# DRF's throttle keeps each token's request times as one pickled list that it reads and writes
# back on every request (two round trips, the whole window's list each way, and concurrent requests
# overwrite each other's entries). This script keeps the same sliding log as a sorted set, in one
# atomic round trip: drop the times that left the window, count, and record the request only when
# it is allowed. Returns {allowed, count, oldest time (when refused)}.
_SLIDING_LOG = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[3]) then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, count, oldest[2]}
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, count + 1}
"""
_SLIDING_LOG_SHA = hashlib.sha1(_SLIDING_LOG.encode()).hexdigest()


class TokenRateThrottle(throttling.SimpleRateThrottle):
    """API_THROTTLE_RATE per token, counted in Redis so every API process shares it.

    The same sliding window as DRF's SimpleRateThrottle (and the same Retry-After), kept as a
    sorted set when the cache is Redis (see _SLIDING_LOG); other cache backends use DRF's list.
    """

    scope = "token"
    # Not DRF's key: the value is a sorted set, and a list left by an older release must not clash.
    cache_format = "throttle-log_%(scope)s_%(ident)s"

    def allow_request(self, request: Request, view) -> bool:
        try:
            backend = self._backend()
            if not isinstance(backend, RedisCache):
                return super().allow_request(request, view)
            return self._allow_sliding_log(request, view, backend)
        except RedisError as exc:
            # The throttle guards the service; with Redis down PostgreSQL still takes writes (the sweeper
            # forwards them later), so fail open instead of refusing every request.
            logger.warning("throttle unavailable; request allowed", extra={"error": str(exc)})
            return True

    def _backend(self) -> BaseCache:
        # DRF's `cache` is Django's proxy of the default cache; the backend behind it picks the storage.
        return caches["default"] if self.cache is default_cache else self.cache

    def _allow_sliding_log(self, request: Request, view, backend: RedisCache) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        self._count, self._oldest = 0, None
        key = backend.make_and_validate_key(self.key)
        client = backend._cache.get_client(key, write=True)
        # The member only has to be unique: two requests in the same microsecond both count.
        args = (repr(self.now), repr(self.now - self.duration), self.num_requests,
                f"{self.now!r}:{secrets.token_hex(4)}", self.duration)  # fmt: skip
        try:
            answer = client.evalsha(_SLIDING_LOG_SHA, 1, key, *args)
        except NoScriptError:  # first use on this Redis (or after SCRIPT FLUSH / a restart)
            answer = client.eval(_SLIDING_LOG, 1, key, *args)
        allowed, self._count = int(answer[0]), int(answer[1])
        if not allowed:
            self._oldest = float(answer[2])
        return bool(allowed)

    def wait(self) -> float | None:
        if not isinstance(self._backend(), RedisCache):
            return super().wait()
        # DRF's formula: the time until the oldest request leaves the window, spread over the
        # requests that will then be available.
        remaining = self.duration - (self.now - self._oldest) if self._oldest is not None else self.duration
        available = self.num_requests - self._count + 1
        if available <= 0:
            return None
        return remaining / float(available)

    def get_cache_key(self, request: Request, view) -> str | None:
        token = request.auth
        if isinstance(token, ApiToken):
            return self.cache_format % {"scope": self.scope, "ident": token.pk}
        return self.cache_format % {"scope": "anon", "ident": self.get_ident(request)}
