"""Security matrix, unit-restricted portal accounts (issue 6 item 20): an account
restricted to some of its customer's units sees the records of those units and the
records it created itself, nothing else, through every read: get, list, summary,
export, comments, attachments (list and download)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.support import Client, invite_portal_user

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PERMISSIONS = ["quotes.request", "quotes.approve"]


def ok(r: requests.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    return r.json() if r.content else None


@dataclass
class Target:
    quote: dict[str, Any]
    attachment_id: str


@dataclass
class World:
    restricted: Client
    restricted_id: str
    seen: dict[str, Target]  # what the restricted account must see
    unseen: dict[str, Target]  # what it must never see


def staff_quote(admin: Client, customer: str, unit: str | None, description: str) -> Any:
    body = {"description": description, "customer_id": customer, "unit_id": unit}
    return ok(admin.post("/quote-requests", body), 201)


def with_files(admin: Client, quote: dict[str, Any]) -> Target:
    qid = quote["id"]
    ok(admin.post(f"/quote-requests/{qid}/comments", {"body": f"about {quote['number']}"}), 201)
    att = ok(
        admin.post(
            f"/quote-requests/{qid}/attachments",
            files={"file": ("doc.pdf", io.BytesIO(PDF), "application/pdf")},
        ),
        201,
    )
    return Target(quote, att["id"])


@pytest.fixture(scope="module")
def world(system: Any) -> World:
    admin = system.staff("admin")
    customer = ok(system.portal().get("/me"))["customer_id"]
    units = ok(admin.get(f"/customers/{customer}/units"))["items"]
    assert len(units) >= 2, "the demo customer has two units"
    unit_a, unit_b = units[0]["id"], units[1]["id"]

    restricted, account = invite_portal_user(
        system, admin, customer, permissions=PERMISSIONS, unit_ids=[unit_a]
    )
    neighbour, _ = invite_portal_user(
        system, admin, customer, permissions=PERMISSIONS, unit_ids=[unit_a]
    )
    own = ok(restricted.post("/quote-requests", {"description": "Mine, no unit"}), 201)
    neighbours = ok(neighbour.post("/quote-requests", {"description": "Neighbour's"}), 201)
    seen = {
        "unit_a": with_files(admin, staff_quote(admin, customer, unit_a, "Unit A")),
        "own_without_unit": with_files(admin, own),
    }
    unseen = {
        "unit_b": with_files(admin, staff_quote(admin, customer, unit_b, "Unit B")),
        "no_unit": with_files(admin, staff_quote(admin, customer, None, "No unit")),
        "neighbours_own": with_files(admin, neighbours),
    }
    return World(restricted, account["id"], seen, unseen)


UNSEEN = ["unit_b", "no_unit", "neighbours_own"]
SEEN = ["unit_a", "own_without_unit"]
BY_ID = {
    "get": "/quote-requests/{id}",
    "comments": "/quote-requests/{id}/comments",
    "attachments": "/quote-requests/{id}/attachments",
    "download": "/quote-requests/{id}/attachments/{aid}",
}


def path_for(route: str, target: Target) -> str:
    return BY_ID[route].format(id=target.quote["id"], aid=target.attachment_id)


@pytest.mark.parametrize("route", sorted(BY_ID))
@pytest.mark.parametrize("name", UNSEEN)
def test_a_unit_restricted_account_never_reaches_other_records_by_id(world, name, route):
    r = world.restricted.get(path_for(route, world.unseen[name]))
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "not_found"


@pytest.mark.parametrize("route", sorted(BY_ID))
@pytest.mark.parametrize("name", SEEN)
def test_a_unit_restricted_account_reaches_its_units_and_its_own_records(world, name, route):
    assert world.restricted.get(path_for(route, world.seen[name])).status_code == 200


@pytest.mark.parametrize("name", UNSEEN)
def test_a_unit_restricted_account_cannot_act_on_other_records(world, name):
    qid = world.unseen[name].quote["id"]
    for r in (
        world.restricted.post(f"/quote-requests/{qid}/comments", {"body": "hello?"}),
        world.restricted.post(f"/quote-requests/{qid}/cancel", {}),
        world.restricted.post(f"/quote-requests/{qid}/approve", {}),
    ):
        assert r.status_code == 404, r.text


def listed(client: Client) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = ok(client.get("/quote-requests", params=params))
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def test_lists_summary_and_export_hold_only_its_units_and_its_own(world):
    items = listed(world.restricted)
    unit_a = world.seen["unit_a"].quote["unit_id"]
    for item in items:
        assert item["unit_id"] == unit_a or item["created_by"] == world.restricted_id, item
    ids = {i["id"] for i in items}
    assert {t.quote["id"] for t in world.seen.values()} <= ids
    assert not ({t.quote["id"] for t in world.unseen.values()} & ids)

    summary = ok(world.restricted.get("/quote-requests/summary"))
    assert summary["total"] == len(items)

    export = world.restricted.get("/quote-requests/export.csv")
    assert export.status_code == 200, export.text
    numbers = [row[0] for row in list(csv.reader(io.StringIO(export.text)))[1:]]
    assert sorted(numbers) == sorted(i["number"] for i in items)

    # filters cannot reach past the scope either
    for target in world.unseen.values():
        q = target.quote
        params = {"q": q["number"]}
        assert ok(world.restricted.get("/quote-requests", params=params))["items"] == []
        assert ok(world.restricted.get("/quote-requests/summary", params=params))["total"] == 0
        one = world.restricted.get("/quote-requests/export.csv", params=params)
        assert list(csv.reader(io.StringIO(one.text)))[1:] == []
