"""The edge cache's rules without a database: answers only while live, every kind of
invalidation, no refill from a read that an invalidation overtook."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from kit.db import utcnow
from services.gateway.edgecache import EdgeCache

LATER = utcnow() + timedelta(days=1)


def live_cache() -> EdgeCache:
    cache = EdgeCache()
    cache.live = True
    return cache


class Loader:
    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.value


def test_a_live_cache_reads_a_session_once() -> None:
    cache, load = live_cache(), Loader(("subject-1", LATER))
    assert cache.session_alive("t1", "s1", load) and cache.session_alive("t1", "s1", load)
    assert load.calls == 1


def test_without_its_listener_the_cache_always_reads() -> None:
    cache, load = EdgeCache(), Loader(("subject-1", LATER))
    cache.session_alive("t1", "s1", load)
    cache.session_alive("t1", "s1", load)
    assert load.calls == 2


def test_an_ended_session_is_never_cached() -> None:
    cache, load = live_cache(), Loader(None)
    assert not cache.session_alive("t1", "s1", load)
    assert not cache.session_alive("t1", "s1", load)
    assert load.calls == 2


def test_a_session_of_another_tenant_or_past_its_expiry_is_read_again() -> None:
    cache, load = live_cache(), Loader(("subject-1", LATER))
    cache.session_alive("t1", "s1", load)
    cache.session_alive("t2", "s1", load)
    assert load.calls == 2
    expired = Loader(("subject-1", utcnow() - timedelta(seconds=1)))
    cache.session_alive("t1", "s2", expired)
    cache.session_alive("t1", "s2", expired)
    assert expired.calls == 2


def test_each_invalidation_drops_what_it_names() -> None:
    cache = live_cache()
    for sid, tenant, subject in (("s1", "t1", "u1"), ("s2", "t1", "u2"), ("s3", "t2", "u3")):
        cache.session_alive(tenant, sid, Loader((subject, LATER)))
    cache.switches("t1", "c1", Loader(({"quotes": True}, {})))
    cache.switches("t2", None, Loader(({"quotes": True}, None)))

    def cached(tenant: str, sid: str) -> bool:
        load = Loader(("x", LATER))
        cache.session_alive(tenant, sid, load)
        return load.calls == 0

    cache.invalidate("session:s1")
    assert not cached("t1", "s1") and cached("t1", "s2")
    cache.invalidate("subject:u2")
    assert not cached("t1", "s2") and cached("t2", "s3")
    cache.invalidate("sessions:t2")
    assert not cached("t2", "s3")
    load = Loader(({"quotes": False}, {}))
    cache.invalidate("features:t1")
    assert cache.switches("t1", "c1", load) == ({"quotes": False}, {}) and load.calls == 1
    cache.invalidate("*")
    other = Loader(({"quotes": False}, None))
    cache.switches("t2", None, other)
    assert other.calls == 1


def test_a_read_overtaken_by_an_invalidation_is_not_stored() -> None:
    cache = live_cache()

    def load_while_revoked() -> tuple[str, Any]:
        cache.invalidate("session:s1")  # committed while this read was on its way
        return ("u1", LATER)

    assert cache.session_alive("t1", "s1", load_while_revoked)
    load = Loader(None)
    assert not cache.session_alive("t1", "s1", load)
    assert load.calls == 1


def test_stale_entries_age_out() -> None:
    cache = live_cache()
    cache.ttl = 0.0
    load = Loader(("u1", LATER))
    cache.session_alive("t1", "s1", load)
    cache.session_alive("t1", "s1", load)
    assert load.calls == 2
