"""Django's Redis cache, keeping its redis-py client instead of building one per call.

Django's RedisCacheClient.get_client makes a new `redis.Redis` for every cache operation, and
redis-py fills a fresh case-insensitive dict of some 300 response callbacks each time, more work
than the command itself: two calls on every API write (the forwarder's "drain scheduled" flag) and
more in the workers. A `redis.Redis` is thread-safe and holds no connection of its own (each command
takes one from the pool), so one per pool is kept.
"""

from typing import Any

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient


class KeptClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))  # the pools live as long as this object: ids stay theirs
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    """`django.core.cache.backends.redis.RedisCache` with the client kept (same settings)."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = KeptClientRedisCacheClient
