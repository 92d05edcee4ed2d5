"""End to end, through the public HTTP API only: a customer requests a quote, staff
attach the quote document and ask for approval, the customer approves with a PO
number, and the email reaches the SMTP catcher with the right recipients."""

from __future__ import annotations

import io

from portico.devmail import read_mailbox
from tests.support import wait_for

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def _mails_for(system, quote_number: str, subject_word: str) -> list:
    return [
        m
        for m in read_mailbox(system.env.mail_dir)
        if quote_number in str(m["Subject"]) and subject_word in str(m["Subject"]).lower()
    ]


def test_quote_request_from_customer_to_inbox(system):
    customer = system.portal()
    advisor = system.staff("advisor")

    r = customer.post("/quote-requests", {"description": "Replace hydraulic hoses on EX-7"})
    assert r.status_code == 201, r.text
    quote = r.json()
    assert quote["created_by_customer"] is True and quote["status"] == "pending"
    qid, number = quote["id"], quote["number"]

    # staff see it with the star, in the pending tab
    listed = advisor.get("/quote-requests", params={"created_by_customer": "true"}).json()
    assert qid in [i["id"] for i in listed["items"]]
    assert advisor.get("/quote-requests/summary").json()["counts"]["pending"] >= 1

    r = advisor.patch(f"/quote-requests/{qid}", {"status": "in_process", "version": 1})
    assert r.status_code == 200, r.text
    # asking for approval without a quote document is refused
    r = advisor.patch(f"/quote-requests/{qid}", {"status": "customer_approval_needed"})
    assert r.status_code == 422 and r.json()["code"] == "quote_document_required"

    r = advisor.post(
        f"/quote-requests/{qid}/attachments",
        files={"file": ("quote.pdf", io.BytesIO(PDF), "application/pdf")},
        data={"kind": "quote_document"},
    )
    assert r.status_code == 201, r.text
    att = r.json()
    r = advisor.patch(f"/quote-requests/{qid}", {"status": "customer_approval_needed"})
    assert r.status_code == 200, r.text

    r = advisor.post(f"/quote-requests/{qid}/comments", {"body": "Quote attached, 2 hoses."})
    assert r.status_code == 201

    # the customer sees it waiting, downloads the document, and approves with a PO
    waiting = customer.get("/action-required").json()["items"]
    assert any(i["id"] == qid for i in waiting)
    dl = customer.get(f"/quote-requests/{qid}/attachments/{att['id']}")
    assert dl.status_code == 200 and dl.content == PDF
    assert dl.headers["Content-Disposition"].startswith("attachment")
    r = customer.post(f"/quote-requests/{qid}/approve", {"po_number": "PO-7781"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved" and r.json()["po_number"] == "PO-7781"
    # approving twice is a state error, not a second approval
    assert customer.post(f"/quote-requests/{qid}/approve", {}).status_code == 409

    # the customer's contacts are told (Casey: email+sms, Jordan: email)
    contacts = {"casey@acme.example", "jordan@acme.example"}
    approved = wait_for(
        lambda: (
            (mails := _mails_for(system, number, "approved"))
            and contacts <= {str(m["To"]) for m in mails}
            and mails
        ),
        timeout=30,
    )
    body = approved[0].get_body(preferencelist=("plain",)).get_content()
    assert "PO-7781" in body and number in body
    # the ready-for-approval mail went out too, exactly once per contact
    asked = _mails_for(system, number, "ready for approval")
    assert sorted(str(m["To"]) for m in asked) == ["casey@acme.example", "jordan@acme.example"]

    deliveries = advisor.get("/deliveries", params={"limit": 200}).json()["items"]
    assert any(d["status"] == "sent" and d["channel"] == "email" for d in deliveries)


def test_every_process_serves_health_readiness_and_metrics(system):
    import requests

    for service in ("gateway", "quotes", "notify"):
        base = f"http://127.0.0.1:{system.env.ports[service]}"
        assert requests.get(base + "/healthz", timeout=5).json() == {"status": "ok"}
        ready = requests.get(base + "/readyz", timeout=5).json()
        assert ready == {"status": "ready", "checks": {"database": "up", "broker": "up"}}
        metrics = requests.get(base + "/metrics", timeout=10).text
        assert (
            f'portico_entrypoint_seconds_count{{entrypoint="readyz",service="{service}"}}'
            in metrics
        )
        if service != "notify":  # services with an outbox report its lag
            assert f'portico_outbox_unpublished{{service="{service}"}}' in metrics
    notify = requests.get(f"http://127.0.0.1:{system.env.ports['notify']}/metrics", timeout=10).text
    assert 'portico_queue_depth{queue="portico.notify.events",service="notify"}' in notify
    assert 'portico_queue_depth{queue="portico.notify.dead",service="notify"}' in notify
