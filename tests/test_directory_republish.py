"""`portico directory republish` fills services' local copies of directory facts that
never reached them (a service or queue added later, a restored database)."""

from __future__ import annotations

import subprocess
import sys
import uuid

from sqlalchemy import create_engine, text

from kit.db import sa_url
from tests.support import ROOT, wait_for


def test_republish_fills_a_copy_that_missed_the_facts(system) -> None:
    admin = system.staff("admin")
    tenant_id = admin.get("/me").json()["tenant_id"]
    # A customer in the directory whose created event never left: written by hand, as
    # a restored or older database would hold it.
    customer_id = str(uuid.uuid4())
    engine = create_engine(sa_url(system.env.admin_url))
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "insert into gateway.customers (id, tenant_id, name,"
                    " require_invoice_authorization, portal_features, version, created_at)"
                    " values (:i, :t, 'Missed Facts Ltd', false, '{}'::jsonb, 1, now())"
                ),
                {"i": customer_id, "t": tenant_id},
            )
    finally:
        engine.dispose()
    body = {"customer_id": customer_id, "description": "Check the hydraulics"}
    refused = admin.post("/quote-requests", body)
    assert refused.status_code in (404, 422), refused.text  # quotes has never heard of it

    done = subprocess.run(
        [sys.executable, "-m", "portico.cli", "directory", "republish", "--tenant", system.tenant],
        env=system.env.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert '"customers":' in done.stdout

    def accepted() -> bool:
        return admin.post("/quote-requests", body).status_code == 201

    wait_for(accepted, timeout=20, interval=0.5)


def test_republish_of_an_unknown_tenant_says_so(system) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "portico.cli", "directory", "republish", "--tenant", "no-such"],
        env=system.env.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "no tenant 'no-such'" in done.stderr
