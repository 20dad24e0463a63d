"""The cache backend (syncroot.cache): Django's Redis cache with its redis-py client kept."""

import threading
import uuid

from django.core.cache import cache, caches

from syncroot.cache import RedisCache


def test_the_configured_cache_keeps_one_client_per_pool():
    backend = caches["default"]
    assert isinstance(backend, RedisCache)
    first = backend._cache.get_client(write=True)

    assert backend._cache.get_client(write=True) is first  # Django's own client made a new one each call
    assert backend._cache.get_client() is first  # one server: reads use the same pool


def test_it_caches_as_djangos_redis_cache_does():
    key = f"cache-test:{uuid.uuid4().hex}"

    assert cache.add(key, 1, timeout=30) is True
    assert cache.add(key, 2, timeout=30) is False  # NX: the drain flag relies on it
    assert cache.get(key) == 1
    assert cache.incr(key) == 2
    cache.set(key, {"a": [1, 2]}, timeout=30)
    assert cache.get(key) == {"a": [1, 2]}
    cache.delete(key)
    assert cache.get(key) is None


def test_each_thread_has_its_own_cache_and_client_and_all_work():
    key = f"cache-test:{uuid.uuid4().hex}"
    seen: list[tuple[int, bool]] = []

    def work(index: int) -> None:
        mine = caches["default"]
        client = mine._cache.get_client(write=True)
        seen.append((id(client), mine.add(f"{key}:{index}", index, timeout=30)))
        caches.close_all()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert [added for _, added in seen] == [True] * 4
    assert cache.get_many([f"{key}:{i}" for i in range(4)]) == {f"{key}:{i}": i for i in range(4)}
