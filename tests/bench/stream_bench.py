"""Live updates benchmark (not part of the test suite): starts the whole system on a
private database and vhost (as the tests do), then measures

1. memory added by 1,000 idle streams on one gateway process (RSS before/after);
2. delivery latency (the POST that writes -> the event read on a stream), p50/p99,
   while writing;
3. a two-tenant, two-customer run counting events delivered outside each caller's
   scope (must be 0).

    .venv/bin/python tests/bench/stream_bench.py [IDLE_STREAMS] [WRITES]
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from portico.seed import DEMO_PASSWORD, DEMO_PORTAL, DEMO_TENANT  # noqa: E402
from tests.support import (  # noqa: E402
    ROOT,
    Client,
    Environment,
    Process,
    invite_portal_user,
    wait_for,
    wait_ready,
)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def gateway_pid(port: int) -> int:
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    return int(out.stdout.split("pid=")[1].split(",")[0])


class Reader:
    """One stream read in a thread; records (receive time, event) pairs."""

    def __init__(self, base: str, token: str) -> None:
        self.got: list[tuple[float, dict[str, Any]]] = []
        self.r = requests.get(
            f"{base}/api/v1/events/stream",
            headers={"Authorization": f"Bearer {token}"},
            stream=True,
            timeout=600,
        )
        assert self.r.status_code == 200, self.r.text
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for raw in self.r.iter_lines(chunk_size=None):
                if raw.startswith(b"data: "):
                    self.got.append((time.perf_counter(), json.loads(raw[6:])))
        except Exception:  # noqa: BLE001,S110 - closed
            pass

    def close(self) -> None:
        # Shut the socket down under the reading thread: closing the response from
        # here would wait for that thread's read (it holds the connection's lock).
        import socket

        sock = getattr(getattr(getattr(self.r.raw, "_fp", None), "fp", None), "raw", None)
        sock = getattr(sock, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        else:
            self.r.close()


def other_tenant(env: Environment, base: str) -> Client:
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    email, password = f"admin@{slug}.example", "bench-admin-pass"
    subprocess.run(
        [sys.executable, "-m", "portico.cli", "tenant", "create", "--slug", slug, "--name", "B",
         "--admin-email", email, "--admin-password", password],
        env=env.env, cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return Client(base).login(slug, email, password)


def create(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    r = wait_for(lambda: (x := client.post("/quote-requests", body)).status_code != 404 and x)
    assert r.status_code == 201, r.text
    return r.json()


def main() -> None:
    idle_n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    writes = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    tmp = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    env = Environment(tmp)
    proc = Process([sys.executable, "-m", "portico.cli", "up"], env.env, tmp / "up.log").start()
    try:
        wait_ready(env.base + "/readyz", timeout=120, proc=proc)
        wait_for(lambda: "Portico is running" in proc.output(), timeout=60)

        class Sys:  # what tests.support.invite_portal_user reads
            base, tenant = env.base, DEMO_TENANT
            env_ = env

            def anonymous(self) -> Client:
                return Client(self.base)

        sysobj: Any = Sys()
        sysobj.env = env
        admin = Client(env.base).login(DEMO_TENANT, "admin@demo.portico.local", DEMO_PASSWORD)
        portal = Client(env.base).login(DEMO_TENANT, DEMO_PORTAL, DEMO_PASSWORD)

        # 1. idle streams
        pid = gateway_pid(env.ports["gateway"])
        time.sleep(2)
        before = rss_kb(pid)
        idle = []
        for _ in range(idle_n):
            idle.append(Reader(env.base, admin.token or ""))
        time.sleep(5)
        after = rss_kb(pid)
        print(f"idle streams: {idle_n}; gateway RSS {before / 1024:.1f} MiB -> "
              f"{after / 1024:.1f} MiB (+{(after - before) / 1024:.1f} MiB, "
              f"{(after - before) / max(idle_n, 1):.1f} KiB per stream)")  # fmt: skip
        for r in idle:
            r.close()
        time.sleep(2)

        # 2. latency while writing: one staff stream, POSTs from a portal user
        watcher = Reader(env.base, admin.token or "")
        sent: dict[str, float] = {}
        for i in range(writes):
            t0 = time.perf_counter()
            q = portal.post("/quote-requests", {"description": f"bench {i}"}).json()
            sent[q["id"]] = t0
        wait_for(lambda: len({e["data"].get("quote_request_id") for _, e in watcher.got}
                             & set(sent)) == len(sent), timeout=120)  # fmt: skip
        lat = sorted(
            (t - sent[e["data"]["quote_request_id"]]) * 1000
            for t, e in watcher.got
            if e["type"] == "quote_request.created" and e["data"]["quote_request_id"] in sent
        )
        print(f"delivery latency over {len(lat)} writes: p50 {statistics.median(lat):.1f} ms, "
              f"p99 {lat[int(len(lat) * 0.99) - 1]:.1f} ms, max {lat[-1]:.1f} ms")  # fmt: skip
        watcher.close()

        # 3. two tenants, two customers: events outside the scope
        c1 = admin.post("/customers", {"name": "Bench 1"}).json()["id"]
        c2 = admin.post("/customers", {"name": "Bench 2"}).json()["id"]
        p1, _ = invite_portal_user(sysobj, admin, c1, permissions=["quotes.request"])
        p2, _ = invite_portal_user(sysobj, admin, c2, permissions=["quotes.request"])
        other = other_tenant(env, env.base)
        cb = other.post("/customers", {"name": "Bench B"}).json()["id"]
        readers = {
            "staff_a": Reader(env.base, admin.token or ""),
            "p1": Reader(env.base, p1.token or ""),
            "p2": Reader(env.base, p2.token or ""),
            "staff_b": Reader(env.base, other.token or ""),
        }
        owner: dict[str, str] = {}
        for i in range(50):
            owner[create(p1, {"description": f"p1 {i}"})["id"]] = "c1"
            owner[create(p2, {"description": f"p2 {i}"})["id"]] = "c2"
            owner[create(admin, {"description": f"h {i}", "customer_id": c1,
                                 "visible_to_customer": False})["id"]] = "hidden"  # fmt: skip
            owner[create(other, {"description": f"b {i}", "customer_id": cb})["id"]] = "b"
        time.sleep(5)
        allowed = {"staff_a": {"c1", "c2", "hidden"}, "p1": {"c1"}, "p2": {"c2"}, "staff_b": {"b"}}
        outside = 0
        delivered = 0
        for name, reader in readers.items():
            for _, e in reader.got:
                qid = e["data"].get("quote_request_id")
                if qid in owner:
                    delivered += 1
                    outside += owner[qid] not in allowed[name]
                elif name != "staff_a" and name != "staff_b":
                    outside += 1  # a portal stream got something that is no request of its own
            reader.close()
        print(f"two tenants x two customers: {delivered} events delivered, {outside} outside scope")
    finally:
        proc.stop()
        env.close()


if __name__ == "__main__":
    main()
