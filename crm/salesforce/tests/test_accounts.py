"""The Account caches and the IN-clause chunking (pure parts of accounts.py)."""

from crm.salesforce.accounts import LRU, chunk_for_in
from sandbox.testing import ManualClock


def test_lru_forgets_the_least_recently_used():
    cache = LRU(2, ttl=60)
    cache.put("a", "1")
    cache.put("b", "2")
    assert cache.get("a") == "1"  # "a" is now the most recent
    cache.put("c", "3")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("1", None, "3")
    assert cache.pop("c") == "3"
    assert cache.get("c") is None


def test_lru_entries_expire():
    clock = ManualClock()
    cache = LRU(10, ttl=0.05, clock=clock)
    cache.put("a", "1")
    clock.advance(0.049)
    assert cache.get("a") == "1"
    clock.advance(0.001)
    assert cache.get("a") is None


def test_in_chunks_respect_count_and_length():
    assert list(chunk_for_in(["a", "b", "c"], max_items=2)) == [["a", "b"], ["c"]]
    long = [f"{n:03d}" + "x" * 96 for n in range(100)]  # ~100 characters each once quoted
    chunks = list(chunk_for_in(long, max_chars=1000))
    assert [value for chunk in chunks for value in chunk] == long
    assert all(sum(len(v) + 4 for v in chunk) <= 1000 for chunk in chunks)
    assert list(chunk_for_in([])) == []
