"""Issue 8's figures for the query side (run by ``make bench`` through bench.py; prints,
asserts nothing): writes at 16 connections, read-your-writes, view lag under a steady
write rate, and two gateway + two quotes processes beside one of each.

Clients are keep-alive threads (``requests`` sessions): a write needs a fresh body or
path per request, which wrk's plain mode cannot give.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def _session(token: str) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * q))] * 1000, 2)


def timed_calls(
    base: str, token: str, calls: list[Callable[[requests.Session, str], int]], conns: int
) -> dict[str, Any]:
    """Run each call once over ``conns`` keep-alive connections: req/s and p50/p99."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    todo = iter(calls)

    def worker() -> None:
        session = _session(token)
        mine: list[float] = []
        while True:
            with lock:
                call = next(todo, None)
            if call is None:
                break
            t0 = time.perf_counter()
            status = call(session, base)
            mine.append(time.perf_counter() - t0)
            if status >= 300:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(conns)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": _pct(latencies, 0.5),
        "p99_ms": _pct(latencies, 0.99),
        "requests": len(latencies),
        "errors": errors[0],
    }


def awaiting_approval(base: str, portal: str, advisor: str, n: int) -> list[str]:
    """n requests from the customer, each waiting for its approval (a quote attached)."""
    p, a = _session(portal), _session(advisor)

    def one(i: int) -> str:
        qid = p.post(f"{base}/api/v1/quote-requests", json={"description": f"w{i}"}).json()["id"]
        a.patch(f"{base}/api/v1/quote-requests/{qid}", json={"status": "in_process"})
        a.post(
            f"{base}/api/v1/quote-requests/{qid}/attachments",
            files={"file": ("q.pdf", PDF, "application/pdf")},
            data={"kind": "quote_document"},
        )
        r = a.patch(
            f"{base}/api/v1/quote-requests/{qid}", json={"status": "customer_approval_needed"}
        )
        assert r.status_code == 200, r.text
        return str(qid)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def writes(base: str, portal: str, advisor: str, seconds_worth: int = 600) -> dict[str, Any]:
    """POST /quote-requests and POST /quote-requests/{id}/approve at 16 connections."""

    def create(s: requests.Session, b: str) -> int:
        return s.post(f"{b}/api/v1/quote-requests", json={"description": "bench"}).status_code

    out = {"POST /quote-requests": timed_calls(base, portal, [create] * seconds_worth, 16)}
    ready = awaiting_approval(base, portal, advisor, 400)

    def approve(qid: str) -> Callable[[requests.Session, str], int]:
        return lambda s, b: (
            s.post(
                f"{b}/api/v1/quote-requests/{qid}/approve", json={"po_number": "PO-1"}
            ).status_code
        )

    out["POST /quote-requests/{id}/approve"] = timed_calls(
        base, portal, [approve(q) for q in ready], 16
    )
    return out


def read_your_writes(base: str, portal: str, advisor: str, pairs: int = 1000) -> dict[str, Any]:
    """Write, then read at once (another connection): the read shows the write."""
    stale = [0]
    lock = threading.Lock()
    reader = _session(portal)
    readers = threading.local()

    def pair(i: int) -> None:
        writer = _session(advisor if i % 2 else portal)
        if not hasattr(readers, "s"):
            readers.s = _session(portal)
        if i % 2 == 0:
            r = writer.post(f"{base}/api/v1/quote-requests", json={"description": f"ryw {i}"})
            created = r.json()
            got = readers.s.get(f"{base}/api/v1/quote-requests/{created['id']}")
            ok = got.status_code == 200 and got.json()["version"] == created["version"]
        else:
            qid = reader.get(f"{base}/api/v1/quote-requests?limit=1").json()["items"][0]["id"]
            r = writer.patch(f"{base}/api/v1/quote-requests/{qid}", json={"description": f"e{i}"})
            version = r.json()["version"]
            got = writer.get(f"{base}/api/v1/quote-requests/{qid}")
            ok = got.status_code == 200 and got.json()["version"] >= version
        if not ok:
            with lock:
                stale[0] += 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(pair, range(pairs)))
    return {"pairs": pairs, "stale": stale[0]}


_BUCKET = re.compile(
    r'^portico_view_lag_seconds_bucket\{le="([^"]+)",view="quote_requests"\} ([0-9.e+]+)$', re.M
)


def _lag_buckets(base: str) -> list[tuple[float, float]]:
    text = requests.get(f"{base}/metrics", timeout=10).text
    return [
        (float("inf") if le == "+Inf" else float(le), float(n)) for le, n in _BUCKET.findall(text)
    ]


def _bucket_pct(deltas: list[tuple[float, float]], q: float) -> float | None:
    total = deltas[-1][1] if deltas else 0
    if not total:
        return None
    for le, n in deltas:
        if n >= total * q:
            return le * 1000
    return None


def view_lag(base: str, portal: str, rate: int = 200, seconds: int = 10) -> dict[str, Any]:
    """Event time -> applied to the views (the gateway's histogram), under ``rate``
    writes/s; p50/p99 are bucket upper bounds."""
    before = dict(_lag_buckets(base))
    sent = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def writer(k: int) -> None:
        s = _session(portal)
        interval = 16 / rate
        next_at = time.monotonic() + k * interval / 16
        while time.monotonic() < stop:
            s.post(f"{base}/api/v1/quote-requests", json={"description": "lag"})
            with lock:
                sent[0] += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(3)  # the queue drains
    after = _lag_buckets(base)
    deltas = [(le, n - before.get(le, 0.0)) for le, n in after]
    return {
        "writes_per_s": round(sent[0] / seconds, 1),
        "events": int(deltas[-1][1]) if deltas else 0,
        "lag_p50_ms_le": _bucket_pct(deltas, 0.5),
        "lag_p99_ms_le": _bucket_pct(deltas, 0.99),
    }


def scale_out(
    start: Callable[[str, int], Any],
    free_port: Callable[[], int],
    gateway_port: int,
    read_load: Callable[[int, int], dict[str, Any]],
    portal: str,
) -> dict[str, Any]:
    """Two gateway and two quotes processes beside one of each: the read (``read_load(port,
    conns)``, wrk) split over both gateways, and creates at 16 connections split too.
    ``start(service, port)`` starts one more process of a service and waits until ready."""
    one_read = read_load(gateway_port, 64)

    def create(s: requests.Session, b: str) -> int:
        return s.post(f"{b}/api/v1/quote-requests", json={"description": "scale"}).status_code

    base_1 = f"http://127.0.0.1:{gateway_port}"
    one_write = timed_calls(base_1, portal, [create] * 600, 16)
    port_2 = free_port()
    extra = [start("gateway", port_2), start("quotes", free_port())]
    try:
        with ThreadPoolExecutor(2) as pool:
            reads = list(pool.map(lambda p: read_load(p, 32), (gateway_port, port_2)))
            halves = list(
                pool.map(
                    lambda b: timed_calls(b, portal, [create] * 300, 8),
                    (base_1, f"http://127.0.0.1:{port_2}"),
                )
            )
    finally:
        for proc in extra:
            proc.stop()
    return {
        "read GET /quote-requests/{id}, 64 conns": {
            "one_gateway_rps": one_read["rps"],
            "two_gateways_rps": round(sum(r["rps"] for r in reads), 1),
            "two_gateways_p99_ms": max((r["p99_ms"] or 0) for r in reads),
        },
        "POST /quote-requests, 16 conns": {
            "one_each_rps": one_write["rps"],
            "two_each_rps": round(sum(h["rps"] for h in halves), 1),
            "two_each_p99_ms": max((h["p99_ms"] or 0) for h in halves),
        },
    }
