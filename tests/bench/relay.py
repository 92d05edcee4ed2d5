"""Events/s of the path every event leaves by (run on demand; prints, asserts nothing).

    .venv/bin/python tests/bench/relay.py [N]

1. ``EventPublisher.publish`` (publisher confirms; since issue 6 also the second
   publish on the integration exchange), N envelopes one after the other; beside it
   private events, which are published once only, as every event was before.
2. ``relay_once`` draining N outbox rows of a scratch quotes database (claim, publish,
   mark sent), as the relay does after a broker outage.
Both on a private vhost and database, dropped afterwards.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests import support  # noqa: E402


def private_envelopes(n: int) -> list[dict]:
    from contracts.events import make_envelope

    data = {
        "purpose": "invitation",
        "subject_kind": "portal",
        "subject_id": str(uuid.uuid4()),
        "email": "x@example.com",
        "token": "t" * 43,
        "expires_at": "2099-01-01T00:00:00Z",
    }
    actor = {"kind": "system", "id": "bench"}
    tenant = str(uuid.uuid4())
    return [
        make_envelope(
            "auth.link_issued",
            data,
            tenant_id=tenant,
            actor=actor,
            correlation_id=None,
            causation_id=None,
        )
        for _ in range(n)
    ]


def envelopes(n: int) -> list[dict]:
    from contracts.events import make_envelope

    tenant = str(uuid.uuid4())
    data = {
        "quote_request_id": str(uuid.uuid4()),
        "number": "Q-1",
        "customer_id": str(uuid.uuid4()),
        "status": "new",
        "description": "Brakes squeal",
        "created_by": "bench",
        "created_by_customer": False,
        "visible_to_customer": True,
        "version": 1,
    }
    actor = {"kind": "system", "id": "bench"}
    return [
        make_envelope(
            "quote_request.updated",
            data,
            tenant_id=tenant,
            actor=actor,
            correlation_id=None,
            causation_id=None,
        )
        for _ in range(n)
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    from sqlalchemy import create_engine, insert

    from kit.db import DatabaseCore, sa_url, utcnow
    from kit.messaging import EventPublisher, declare_topology, relay_once
    from services.quotes.models import metadata, outbox

    support.ensure_infrastructure()
    vhost = f"portico-bench-{uuid.uuid4().hex[:8]}"
    support.make_vhost(vhost)
    uri = f"{support.AMQP_BASE}/{quote(vhost, safe='')}"
    try:
        declare_topology(uri)
        publisher = EventPublisher(uri)
        for label, batch in (
            ("publish, once (private)", private_envelopes(n)),
            ("publish, twice (others)", envelopes(n)),
        ):
            publisher.publish(batch[0])  # connect outside the timing
            started = time.perf_counter()
            for envelope in batch:
                publisher.publish(envelope)
            elapsed = time.perf_counter() - started
            print(f"{label}: {n} events in {elapsed:.2f} s = {n / elapsed:,.0f} events/s")

        with support.scratch_database("quotes") as (admin, urls):
            engine = create_engine(sa_url(admin))
            rows = envelopes(n)
            with engine.begin() as conn:
                conn.execute(
                    insert(outbox),
                    [
                        {
                            "id": e["id"],
                            "tenant_id": e["tenant_id"],
                            "type": e["type"],
                            "envelope": e,
                            "created_at": utcnow(),
                            "attempts": 0,
                        }
                        for e in rows
                    ],
                )
            engine.dispose()
            core = DatabaseCore(urls["quotes"], metadata, pool_size=2)
            try:
                started = time.perf_counter()
                done = 0
                while True:
                    sent = relay_once(core, publisher, min_age=0)
                    done += sent
                    if sent == 0:
                        break
                elapsed = time.perf_counter() - started
            finally:
                core.dispose()
            print(
                f"relay (twice): {done} events in {elapsed:.2f} s = {done / elapsed:,.0f} events/s"
            )
    finally:
        support.drop_vhost(vhost)


if __name__ == "__main__":
    main()
