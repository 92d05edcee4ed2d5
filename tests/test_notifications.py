"""Who hears of what, through the running system: hidden quotes reach no customer by any
channel (issue 6 item 1), a customer's request tells the shop's managers and advisors by
email and in-app (item 18), and the in-app feed through the public API."""

from __future__ import annotations

import time
import uuid

from portico.devmail import read_mailbox
from tests.support import wait_for

CONTACTS = {"casey@acme.example", "jordan@acme.example"}
MANAGER, ADVISOR, TECH = (
    "manager@demo.portico.local",
    "advisor@demo.portico.local",
    "tech@demo.portico.local",
)


def _mail_to(system, number: str) -> dict[str, list[str]]:
    """Recipients of every mail about quote ``number`` -> subjects."""
    out: dict[str, list[str]] = {}
    for message in read_mailbox(system.env.mail_dir):
        if number in str(message["Subject"]):
            out.setdefault(str(message["To"]).strip().lower(), []).append(str(message["Subject"]))
    return out


def _customer_id(system) -> str:
    return system.portal().get("/me").json()["customer_id"]


def _staff_quote(system, advisor, *, visible: bool, marker: str) -> dict:
    r = advisor.post(
        "/quote-requests",
        {
            "customer_id": _customer_id(system),
            "description": f"Internal estimate {marker}",
            "visible_to_customer": visible,
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


def _comment_and_cancel(advisor, quote: dict) -> None:
    qid = quote["id"]
    r = advisor.post(f"/quote-requests/{qid}/comments", {"body": "Margin is 40% on this one"})
    assert r.status_code == 201, r.text
    r = advisor.post(f"/quote-requests/{qid}/cancel", {})
    assert r.status_code == 200, r.text


def test_a_hidden_quote_reaches_no_customer_channel_and_a_visible_one_does(system):
    advisor = system.staff("advisor")
    portal = system.portal()
    hidden = _staff_quote(system, advisor, visible=False, marker=uuid.uuid4().hex[:8])
    visible = _staff_quote(system, advisor, visible=True, marker=uuid.uuid4().hex[:8])
    _comment_and_cancel(advisor, hidden)
    _comment_and_cancel(advisor, visible)

    # the visible quote's creation, comment and cancellation reach the contacts...
    told = wait_for(
        lambda: (
            (m := _mail_to(system, visible["number"]))
            and all(len(m.get(c, [])) >= 3 for c in CONTACTS)
            and m
        ),
        timeout=30,
    )
    assert any("cancelled" in subject for subject in told["casey@acme.example"]), told
    # ...and its items are in the customer's feed
    feed = wait_for(
        lambda: (
            [
                i
                for i in portal.get("/notifications").json()["items"]
                if i["record_id"] == visible["id"]
            ]
            or None
        ),
        timeout=30,
    )
    assert {i["event_type"] for i in feed} >= {"quote_request.cancelled"}

    # the hidden one, handled by the same consumer before it, reached nobody there
    time.sleep(1)
    assert not CONTACTS & set(_mail_to(system, hidden["number"]))
    items = portal.get("/notifications", params={"limit": 200}).json()["items"]
    assert hidden["id"] not in {i["record_id"] for i in items}
    assert hidden["number"] not in str(items)


def test_a_customer_request_tells_managers_and_advisors_by_email_and_in_app(system):
    portal = system.portal()
    r = portal.post("/quote-requests", {"description": "Trailer lights out on TR-12"})
    assert r.status_code == 201, r.text
    quote = r.json()
    number = quote["number"]

    told = wait_for(
        lambda: (m := _mail_to(system, number)) and {MANAGER, ADVISOR} <= set(m) and m,
        timeout=30,
    )
    assert TECH not in told  # technicians are not in the default roles
    assert told[MANAGER] == [f"New quote request {number} from Acme Logistics"]

    for role in ("manager", "advisor"):
        staff = system.staff(role)
        page = wait_for(
            lambda staff=staff: (
                (p := staff.get("/notifications").json())
                and any(i["record_id"] == quote["id"] for i in p["items"])
                and p
            ),
            timeout=30,
        )
        [item] = [i for i in page["items"] if i["record_id"] == quote["id"]]
        assert item["read"] is False and page["unread_count"] >= 1
        assert item["title"] == f"New quote request {number} from Acme Logistics"
        assert item["link"].endswith(f"/quote-requests/{quote['id']}")
        r = staff.post(f"/notifications/{item['id']}/read")
        assert r.status_code == 204, r.text
        again = staff.get("/notifications", params={"limit": 200}).json()
        assert next(i for i in again["items"] if i["id"] == item["id"])["read"] is True
        assert again["unread_count"] == page["unread_count"] - 1
        assert staff.post("/notifications/read-all").status_code == 204
        assert staff.get("/notifications").json()["unread_count"] == 0
    tech = system.staff("technician")
    assert quote["id"] not in {
        i["record_id"] for i in tech.get("/notifications", params={"limit": 200}).json()["items"]
    }


def test_the_feed_refuses_bad_input_and_other_callers_items(system):
    portal, advisor = system.portal(), system.staff("advisor")
    r = portal.get("/notifications", params={"cursor": "not-a-cursor"})
    assert r.status_code == 422 and r.json()["code"] == "validation_failed"
    assert portal.get("/notifications", params={"limit": 0}).status_code == 422
    assert portal.post(f"/notifications/{uuid.uuid4()}/read").status_code == 404
    # an item of the advisor's feed is not the customer's to mark
    items = advisor.get("/notifications").json()["items"]
    if items:
        assert portal.post(f"/notifications/{items[0]['id']}/read").status_code == 404
    assert system.anonymous().get("/notifications").status_code == 401
