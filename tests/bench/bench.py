"""Benchmarks (run on demand: `make bench`); prints figures, asserts nothing.

1. Gateway: authenticated GET /quote-requests/{id} and GET /quote-requests?limit=50 at
   1, 16 and 64 concurrent keep-alive connections; beside it, in the same run, the same
   reads from a plain process querying PostgreSQL directly (tests/bench/baseline.py).
2. Event path: approve -> email accepted by the SMTP catcher, p50/p99 at light load;
   a burst of 10,000 events drained by notify.
3. Resident memory of each idle service process.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench import edge  # noqa: E402
from tests.support import Client, Environment, Process, free_port, wait_for, wait_ready  # noqa: E402

DURATION = float(os.environ.get("BENCH_SECONDS", "8"))
# BENCH_CONNECTIONS=64 measures only the target point
CONNECTIONS = tuple(int(c) for c in os.environ.get("BENCH_CONNECTIONS", "1,16,64").split(","))


def load(port: int, path: str, headers: dict[str, str], conns: int, seconds: float) -> dict:
    """wrk when installed (Debian package `wrk`): a Python client on 2 cores measures
    itself more than the server. Falls back to keep-alive client threads."""
    if shutil.which("wrk"):
        return load_wrk(port, path, headers, conns, seconds)
    return load_threads(port, path, headers, conns, seconds)


def load_wrk(port: int, path: str, headers: dict[str, str], conns: int, seconds: float) -> dict:
    args = ["wrk", f"-t{min(2, conns)}", f"-c{conns}", f"-d{int(seconds)}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(
        args + [f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout

    def ms(label: str) -> float | None:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return None
        return round(float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)], 2)

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "errors": (int(bad.group(1)) if bad else 0)
        + (sum(int(x) for x in errs.groups()) if errs else 0),
        "requests": int(total.group(1)) if total else 0,
    }


def load_threads(port: int, path: str, headers: dict[str, str], conns: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - t0)
            if not ok:
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
    latencies.sort()
    n = len(latencies)
    return {
        "rps": round(n / elapsed, 1),
        "p50_ms": round(latencies[n // 2] * 1000, 2) if n else None,
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 2) if n else None,
        "errors": errors[0],
        "requests": n,
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def service_pids(run_id: str) -> dict[str, int]:
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes()
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PORTICO_TEST_RUN={run_id}".encode() in env and b"run" in cmd:
            name = cmd[cmd.index(b"run") + 1].decode() if cmd.index(b"run") + 1 < len(cmd) else ""
            if name in ("gateway", "quotes", "notify"):
                found[name] = int(proc.name)
    return found


def main() -> None:
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="portico-bench-"))
    env = Environment(tmp)
    env.env["LOG_LEVEL"] = "WARNING"
    up = Process([sys.executable, "-m", "portico.cli", "up"], env.env, tmp / "up.log").start()
    baseline = None
    try:
        wait_ready(env.base + "/readyz", 120, up)
        wait_for(lambda: "Portico is running" in up.output(), timeout=60)
        results: dict = {"duration_s": DURATION}
        portal = Client(env.base).login("demo", "fleet@acme.example", "portico-demo-pass")
        advisor = Client(env.base).login("demo", "advisor@demo.portico.local", "portico-demo-pass")
        ids = [
            portal.post("/quote-requests", {"description": f"bench {i}"}).json()["id"]
            for i in range(60)
        ]
        qid = ids[0]
        auth = {"Authorization": f"Bearer {portal.token}"}
        time.sleep(3)
        pids = service_pids(env.run_id)
        results["idle_rss_mb"] = {name: rss_mb(pid) for name, pid in pids.items()}

        bport = free_port()
        dsn = env.admin_url.replace("postgresql://", "postgresql://")
        baseline = Process(
            [sys.executable, str(ROOT / "tests/bench/baseline.py"), dsn, str(bport)],
            env.env,
            tmp / "baseline.log",
        ).start()
        time.sleep(1.5)
        gport = env.ports["gateway"]
        assert portal.token and advisor.token
        portal_token, advisor_token = portal.token, advisor.token
        customer = portal.get("/me").json()["customer_id"]
        advisor_id = advisor.get("/me").json()["id"]
        edge.awaiting_approval(env.base, portal_token, advisor_token, 10)
        staff_auth = {"Authorization": f"Bearer {advisor.token}"}
        for label, gpath, bpath, headers in (
            (
                "GET /quote-requests/{id}",
                f"/api/v1/quote-requests/{qid}",
                f"/quote-requests/{qid}",
                auth,
            ),
            (
                "GET /quote-requests?limit=50",
                "/api/v1/quote-requests?limit=50",
                "/quote-requests",
                auth,
            ),
            (
                "GET /action-required",
                "/api/v1/action-required",
                f"/action-required?customer={customer}",
                auth,
            ),
            (
                "GET /notifications (staff)",
                "/api/v1/notifications",
                f"/notifications?recipient={advisor_id}",
                staff_auth,
            ),
        ):
            for conns in CONNECTIONS:
                g = load(gport, gpath, headers, conns, DURATION)
                b = load(bport, bpath, {}, conns, DURATION)
                results.setdefault("gateway", []).append(
                    {
                        "read": label,
                        "connections": conns,
                        "gateway": g,
                        "baseline": b,
                        "ratio": round(g["rps"] / b["rps"], 2) if b["rps"] else None,
                    }
                )
                print(json.dumps(results["gateway"][-1]), flush=True)

        if os.environ.get("BENCH_ONLY") == "gateway":
            print(json.dumps(results, indent=2))
            return
        # issue 8: writes, read-your-writes, view lag, two of each process
        results["writes_16_conns"] = edge.writes(env.base, portal_token, advisor_token)
        print(json.dumps({"writes_16_conns": results["writes_16_conns"]}), flush=True)
        results["read_your_writes"] = edge.read_your_writes(env.base, portal_token, advisor_token)
        print(json.dumps({"read_your_writes": results["read_your_writes"]}), flush=True)
        results["view_lag"] = edge.view_lag(env.base, portal_token)
        print(json.dumps({"view_lag": results["view_lag"]}), flush=True)

        def start(service: str, port: int) -> Process:
            proc = Process(
                [sys.executable, "-m", "portico.cli", "run", service],
                {**env.env, "PORT": str(port)},
                tmp / f"{service}-{port}.log",
            ).start()
            wait_ready(f"http://127.0.0.1:{port}/readyz", 60, proc)
            return proc

        results["scale_out"] = edge.scale_out(
            start,
            free_port,
            gport,
            lambda port, conns: load(port, f"/api/v1/quote-requests/{qid}", auth, conns, DURATION),
            portal_token,
        )
        print(json.dumps({"scale_out": results["scale_out"]}), flush=True)
        # event path: approve -> email at the SMTP catcher, light load (sequential)
        for q in ids[1:41]:
            advisor.patch(f"/quote-requests/{q}", {"status": "in_process"})
            advisor.post(
                f"/quote-requests/{q}/attachments",
                files={"file": ("q.pdf", b"%PDF-1.4\n%%EOF\n", "application/pdf")},
                data={"kind": "quote_document"},
            )
            advisor.patch(f"/quote-requests/{q}", {"status": "customer_approval_needed"})
        time.sleep(3)
        mail = Path(env.mail_dir)
        lat = []
        for q in ids[1:41]:
            number = portal.get(f"/quote-requests/{q}").json()["number"]
            before = set(mail.iterdir())
            t0 = time.time()
            assert (
                portal.post(f"/quote-requests/{q}/approve", {"po_number": "PO-1"}).status_code
                == 200
            )

            def arrived(number: str = number, before: set = before) -> float | None:
                for f in set(mail.iterdir()) - before:
                    if (
                        f.suffix == ".eml"
                        and number in f.read_text(errors="ignore")
                        and "approved" in f.read_text(errors="ignore")
                    ):
                        return f.stat().st_mtime
                return None

            lat.append(wait_for(arrived, timeout=30, interval=0.002) - t0)
            time.sleep(0.05)
        lat.sort()
        results["approve_to_smtp_ms"] = {
            "n": len(lat),
            "p50": round(lat[len(lat) // 2] * 1000, 1),
            "p99": round(lat[-1] * 1000, 1),
        }
        print(json.dumps({"approve_to_smtp_ms": results["approve_to_smtp_ms"]}), flush=True)

        # burst: 10,000 events published on the exchange, drained by notify
        results["burst"] = burst(env, 10000)
        print(json.dumps({"burst": results["burst"]}), flush=True)
        results["after_burst_rss_mb"] = {
            name: rss_mb(pid) for name, pid in service_pids(env.run_id).items()
        }
        print(json.dumps(results, indent=2))
    finally:
        if baseline:
            baseline.stop()
        up.stop()
        env.close()


def burst(env: Environment, count: int) -> dict:
    import eventlet

    eventlet.monkey_patch()
    from sqlalchemy import create_engine, text

    from contracts.events import make_envelope
    from kit.db import sa_url
    from kit.messaging import EventPublisher

    engine = create_engine(sa_url(env.admin_url))
    with engine.connect() as conn:
        tenant = conn.execute(text("select id from gateway.tenants where slug='demo'")).scalar_one()
        before = conn.execute(text("select count(*) from notify.processed_events")).scalar_one()
        gateway_before = conn.execute(
            text("select count(*) from gateway.processed_events")
        ).scalar_one()
    publisher = EventPublisher(env.amqp_uri)
    data = {
        "quote_request_id": str(uuid.uuid4()),
        "number": "Q-999999",
        "customer_id": str(uuid.uuid4()),
        "status": "pending",
        "description": "burst",
        "created_by": str(uuid.uuid4()),
        "created_by_customer": False,
        "visible_to_customer": False,
        "version": 1,
    }
    t0 = time.monotonic()
    for _ in range(count):
        publisher.publish(
            make_envelope(
                "quote_request.updated",
                data,
                tenant_id=str(tenant),
                actor={"kind": "system", "id": "bench"},
                correlation_id=None,
                causation_id=None,
            )
        )
    published = time.monotonic() - t0

    def drained() -> int | None:
        with engine.connect() as conn:
            n = (
                conn.execute(text("select count(*) from notify.processed_events")).scalar_one()
                - before
            )
        return n if n >= count else None

    try:
        wait_for(drained, timeout=120, interval=0.25)
        total = time.monotonic() - t0
    except TimeoutError:
        total = None
    with engine.connect() as conn:
        handled = (
            conn.execute(text("select count(*) from notify.processed_events")).scalar_one() - before
        )

    def gateway_drained() -> int | None:  # the views and the stream log, beside notify
        with engine.connect() as conn:
            n = (
                conn.execute(text("select count(*) from gateway.processed_events")).scalar_one()
                - gateway_before
            )
        return n if n >= count else None

    try:
        wait_for(gateway_drained, timeout=300, interval=0.25)
        gateway_total: float | None = time.monotonic() - t0
    except TimeoutError:
        gateway_total = None
    engine.dispose()
    return {
        "events": count,
        "handled": handled,
        "lost": count - handled,
        "publish_s": round(published, 2),
        "drained_s": round(total, 2) if total else None,
        "events_per_s": round(count / total, 1) if total else None,
        "gateway_drained_s": round(gateway_total, 2) if gateway_total else None,
        "gateway_events_per_s": round(count / gateway_total, 1) if gateway_total else None,
    }


if __name__ == "__main__":
    main()
