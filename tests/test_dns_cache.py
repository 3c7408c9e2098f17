from __future__ import annotations

from mailauth.dns import DnsCache, DnsStatus, Lookup, Query, RRType


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _answer(name: str, ttl: int) -> Lookup:
    return Lookup(name, RRType.TXT, DnsStatus.ANSWER, (b"v=spf1 -all",), ttl=ttl)


def test_answer_expires_after_its_ttl() -> None:
    clock = Clock()
    cache = DnsCache(clock=clock)
    cache.put(_answer("example.com", 60))
    hit = cache.get(Query("example.com", RRType.TXT))
    assert hit is not None and hit.records == (b"v=spf1 -all",) and hit.ttl == 60
    clock.now += 59
    remaining = cache.get(Query("example.com", RRType.TXT))
    assert remaining is not None and remaining.ttl == 1
    clock.now += 1
    assert cache.get(Query("example.com", RRType.TXT)) is None


def test_rfc2308_negative_answers_are_cached_with_a_cap() -> None:
    clock = Clock()
    cache = DnsCache(clock=clock, max_negative_ttl=300)
    cache.put(Lookup("gone.example", RRType.TXT, DnsStatus.NXDOMAIN, ttl=3600))
    cache.put(Lookup("empty.example", RRType.MX, DnsStatus.NODATA, ttl=100))
    nx = cache.get(Query("gone.example", RRType.TXT))
    assert nx is not None and nx.status is DnsStatus.NXDOMAIN and nx.ttl == 300
    clock.now += 150
    nodata = cache.get(Query("empty.example", RRType.MX))
    assert nodata is None  # its own TTL (100) was shorter than the cap
    assert cache.get(Query("gone.example", RRType.TXT)) is not None
    clock.now += 150
    assert cache.get(Query("gone.example", RRType.TXT)) is None


def test_positive_ttl_is_capped() -> None:
    clock = Clock()
    cache = DnsCache(clock=clock, max_ttl=10)
    cache.put(_answer("example.com", 86400))
    clock.now += 10
    assert cache.get(Query("example.com", RRType.TXT)) is None


def test_temporary_failures_and_zero_ttl_are_not_cached() -> None:
    cache = DnsCache()
    cache.put(Lookup("x.example", RRType.TXT, DnsStatus.TEMPFAIL, reason="DNS timeout"))
    cache.put(_answer("y.example", 0))
    assert len(cache) == 0


def test_size_bound_evicts_least_recently_used() -> None:
    cache = DnsCache(max_entries=2)
    cache.put(_answer("a.example", 60))
    cache.put(_answer("b.example", 60))
    assert cache.get(Query("a.example", RRType.TXT)) is not None  # a is now most recent
    cache.put(_answer("c.example", 60))
    assert len(cache) == 2
    assert cache.get(Query("b.example", RRType.TXT)) is None
    assert cache.get(Query("a.example", RRType.TXT)) is not None
    assert cache.get(Query("c.example", RRType.TXT)) is not None
    assert cache.hits == 3 and cache.misses == 1


def test_types_are_cached_apart() -> None:
    cache = DnsCache()
    cache.put(_answer("example.com", 60))
    assert cache.get(Query("example.com", RRType.A)) is None


def test_holds_says_what_get_would_find_without_counting() -> None:
    clock = [0.0]
    cache = DnsCache(max_entries=2, clock=lambda: clock[0])
    cache.put(_answer("a.example", 60))
    cache.put(_answer("b.example", 60))
    a, b = Query("a.example", RRType.TXT), Query("b.example", RRType.TXT)
    assert cache.holds(a) and cache.holds(b) and not cache.holds(Query("c.example", RRType.TXT))
    assert (cache.hits, cache.misses) == (0, 0)
    cache.put(_answer("c.example", 60))  # holds() left a least recently used: evicted
    assert not cache.holds(a) and cache.holds(b)
    clock[0] += 60
    assert not cache.holds(b) and cache.get(b) is None  # expired
