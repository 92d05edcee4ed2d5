import itertools
from datetime import UTC, datetime

import pytest

from services.notify.domain import (
    CHANNELS,
    CUSTOMER_AUDIENCES,
    DEFAULT_NEW_REQUEST_ROLES,
    DELIVERY_STATUSES,
    ERROR_MAX_CHARS,
    MAX_ATTEMPTS,
    NOTIFICATION_RULES,
    PLAN_CHANNELS,
    QUOTE_EVENT_TYPES,
    Recipient,
    Settlement,
    abandoned_lease_error,
    address_for,
    backoff_seconds,
    channels_for,
    delivery_key,
    next_status,
    notifying_event_types,
    plan_deliveries,
    record_link,
    settle,
    visible_to_customer,
)

ALICE = Recipient("contact", "c-alice", "Alice", email="alice@cust.test", notify_by="email")
BOB = Recipient(
    "contact", "c-bob", "Bob", email="bob@cust.test", phone="+15550001", notify_by="both"
)
CAROL = Recipient("contact", "c-carol", "Carol", email="carol@cust.test", notify_by="none")
CONTACTS = [ALICE, BOB, CAROL]

SAM = Recipient("staff", "s-sam", "Sam", email="sam@shop.test", roles=("advisor",))
TINA = Recipient(
    "staff", "s-tina", "Tina", email="tina@shop.test", phone="+15550002", roles=("technician",)
)
STAFF = [SAM, TINA]

# The customer's people: each contact per preference, and the customer's in-app feed.
CONTACT_PLAN = {("c-alice", "email"), ("c-bob", "email"), ("c-bob", "sms"), ("cust-1", "in_app")}
ASSIGNEE_PLAN = {("s-sam", "email"), ("s-sam", "in_app")}
VISIBLE = {"customer_id": "cust-1", "visible_to_customer": True}


def plan(event_type, data, contacts=CONTACTS, staff=STAFF, **kwargs):
    return {(r.id, ch) for r, ch in plan_deliveries(event_type, data, contacts, staff, **kwargs)}


# -------------------------------------------------------------------- recipients


def test_staff_default_is_email():
    assert SAM.notify_by == "email"
    assert channels_for(SAM) == ["email"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "robot", "id": "x", "name": "X"},
        {"kind": "staff", "id": "x", "name": "X", "notify_by": "pigeon"},
        {"kind": "staff", "id": "", "name": "X"},
    ],
)
def test_recipient_rejects_invalid_values(kwargs):
    with pytest.raises(ValueError):
        Recipient(**kwargs)


def test_recipient_is_frozen():
    with pytest.raises(AttributeError):
        ALICE.email = "other@cust.test"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("notify_by", "email", "phone", "expected"),
    [
        ("email", "a@x.test", "+1555", ["email"]),
        ("email", None, "+1555", []),
        ("email", "   ", None, []),
        ("sms", "a@x.test", "+1555", ["sms"]),
        ("sms", "a@x.test", None, []),
        ("sms", None, "", []),
        ("both", "a@x.test", "+1555", ["email", "sms"]),
        ("both", "a@x.test", None, ["email"]),
        ("both", None, "+1555", ["sms"]),
        ("both", None, None, []),
        ("none", "a@x.test", "+1555", []),
    ],
)
def test_channels_for_matrix(notify_by, email, phone, expected):
    recipient = Recipient("contact", "c1", "C", email=email, phone=phone, notify_by=notify_by)
    assert channels_for(recipient) == expected


# ------------------------------------------------------------------------- table

ASSIGNED = {**VISIBLE, "assigned_to": "s-sam"}

TABLE = [
    # (event type, data, expected contacts notified?, expected assignee notified?)
    ("quote_request.created", {**ASSIGNED, "created_by_customer": False}, True, True),
    (
        "quote_request.created",
        {**ASSIGNED, "created_by_customer": False, "visible_to_customer": False},
        False,
        True,
    ),
    ("quote_request.created", {**VISIBLE, "created_by_customer": False}, True, False),
    ("quote_request.approval_requested", ASSIGNED, True, False),
    ("quote_request.approved", ASSIGNED, True, True),
    ("quote_request.approved", VISIBLE, True, False),
    ("quote_request.denied", ASSIGNED, True, True),
    ("quote_request.cancelled", ASSIGNED, True, True),
    ("quote_request.comment_added", {**ASSIGNED, "author_kind": "staff"}, True, False),
    ("quote_request.comment_added", {**ASSIGNED, "author_kind": "portal"}, False, True),
    ("quote_request.comment_added", {**VISIBLE, "author_kind": "portal"}, False, False),
    ("quote_request.comment_added", ASSIGNED, False, False),
    ("quote_request.assigned", ASSIGNED, False, True),
    ("quote_request.assigned", {**VISIBLE, "assigned_to": "s-nobody"}, False, False),
    ("quote_request.status_changed", {**ASSIGNED, "status": "in_process"}, False, False),
    ("quote_request.updated", ASSIGNED, False, False),
    ("quote_request.attachment_added", ASSIGNED, False, False),
    ("quote_request.comment_deleted", {**ASSIGNED, "author_kind": "staff"}, False, False),
    ("work_order.created", ASSIGNED, False, False),
    ("quote_request.bogus", ASSIGNED, False, False),
]


@pytest.mark.parametrize(("event_type", "data", "contacts", "assignee"), TABLE)
def test_plan_table(event_type, data, contacts, assignee):
    expected = (CONTACT_PLAN if contacts else set()) | (ASSIGNEE_PLAN if assignee else set())
    assert plan(event_type, data) == expected


# Every quote event x visibility: a record the customer may not see reaches none of the
# customer's people by any channel; staff are told as usual.
CUSTOMER_KINDS = {"contact", "customer"}
EVERY_QUOTE_EVENT_DATA = [
    {**ASSIGNED, "created_by_customer": created, "author_kind": author}
    for created in (False, True)
    for author in ("staff", "portal", None)
]


@pytest.mark.parametrize("event_type", QUOTE_EVENT_TYPES)
@pytest.mark.parametrize("visible", [True, False, None], ids=["visible", "hidden", "unsaid"])
def test_a_record_hidden_from_the_customer_reaches_no_customer_channel(event_type, visible):
    told_customer = False
    for data in EVERY_QUOTE_EVENT_DATA:
        data = {**data, "visible_to_customer": visible}
        if visible is None:
            del data["visible_to_customer"]
        planned = plan_deliveries(event_type, data, CONTACTS, STAFF)
        to_customer = [(r, ch) for r, ch in planned if r.kind in CUSTOMER_KINDS]
        if visible is not True:
            assert to_customer == [], (data, to_customer)
        told_customer = told_customer or bool(to_customer)
        hidden = {**data, "visible_to_customer": False}
        staff_side = {(r.id, ch) for r, ch in planned if r.kind == "staff"}
        staff_hidden = {
            (r.id, ch)
            for r, ch in plan_deliveries(event_type, hidden, CONTACTS, STAFF)
            if r.kind == "staff"
        }
        assert staff_side == staff_hidden  # visibility never changes what the shop hears
    customer_facing = any(
        rule.audience in CUSTOMER_AUDIENCES for rule in NOTIFICATION_RULES.get(event_type, ())
    )
    assert told_customer == (visible is True and customer_facing)


def test_visibility_is_a_property_of_the_audience_not_of_each_rule():
    assert {"contacts"} == CUSTOMER_AUDIENCES
    assert visible_to_customer({"visible_to_customer": True})
    for data in ({}, {"visible_to_customer": False}, {"visible_to_customer": "true"}):
        assert not visible_to_customer(data)
    # A future event type with a contacts rule and no flag of its own is still covered.
    assert all(
        "visible_to_customer" not in rule.when
        for rules in NOTIFICATION_RULES.values()
        for rule in rules
    )


# A customer asks for a quote: the tenant's chosen roles hear about it, by email and in-app.
REQUEST = {**VISIBLE, "created_by_customer": True, "assigned_to": None}


def test_a_customer_request_tells_the_new_request_roles():
    assert plan("quote_request.created", REQUEST) == {("s-sam", "email"), ("s-sam", "in_app")}
    # ...not the customer's own people, who made it
    assert not [
        r
        for r, _ in plan_deliveries("quote_request.created", REQUEST, CONTACTS, STAFF)
        if r.kind != "staff"
    ]


def test_new_request_roles_come_from_the_tenant_setting():
    told = plan("quote_request.created", REQUEST, new_request_roles=["technician"])
    assert told == {("s-tina", "email"), ("s-tina", "in_app")}
    both = plan("quote_request.created", REQUEST, new_request_roles=["advisor", "technician"])
    assert {rid for rid, _ in both} == {"s-sam", "s-tina"}
    assert plan("quote_request.created", REQUEST, new_request_roles=[]) == set()
    assert DEFAULT_NEW_REQUEST_ROLES == ("manager", "advisor")


def test_a_staff_created_request_does_not_tell_the_roles():
    data = {**REQUEST, "created_by_customer": False}
    assert {rid for rid, _ in plan("quote_request.created", data) if rid.startswith("s-")} == set()


def test_a_role_member_who_is_also_the_assignee_is_told_once_per_channel():
    data = {**REQUEST, "assigned_to": "s-sam"}
    result = plan_deliveries("quote_request.created", data, CONTACTS, STAFF)
    assert [(r.id, ch) for r, ch in result] == [("s-sam", "email"), ("s-sam", "in_app")]


def test_in_app_goes_to_staff_and_the_customer_never_to_a_contact():
    result = plan_deliveries("quote_request.approved", ASSIGNED, CONTACTS, STAFF)
    in_app = [(r.kind, r.id) for r, ch in result if ch == "in_app"]
    assert in_app == [("customer", "cust-1"), ("staff", "s-sam")]
    assert all(ch in PLAN_CHANNELS for _, ch in result)


def test_staff_who_opted_out_of_messages_still_get_the_in_app_item():
    quiet = Recipient("staff", "s-sam", "Sam", email="sam@shop.test", notify_by="none")
    assert plan("quote_request.approved", ASSIGNED, contacts=[], staff=[quiet]) == {
        ("cust-1", "in_app"),
        ("s-sam", "in_app"),
    }


def test_assigned_event_notifies_the_new_assignee_over_all_their_channels():
    tina_both = Recipient("staff", "s-tina", "Tina", "t@shop.test", "+1555", notify_by="both")
    result = plan("quote_request.assigned", {"assigned_to": "s-tina"}, staff=[SAM, tina_both])
    assert result == {("s-tina", "email"), ("s-tina", "sms"), ("s-tina", "in_app")}


def test_contacts_with_notify_by_none_get_no_message():
    result = plan_deliveries("quote_request.approved", VISIBLE, [CAROL], STAFF)
    assert [(r.kind, ch) for r, ch in result] == [("customer", "in_app")]


def test_each_recipient_channel_pair_at_most_once():
    result = plan_deliveries(
        "quote_request.approved", ASSIGNED, [ALICE, BOB, ALICE, BOB], [SAM, SAM, TINA]
    )
    pairs = [(r.kind, r.id, ch) for r, ch in result]
    assert len(pairs) == len(set(pairs))
    assert {(rid, ch) for _, rid, ch in pairs} == CONTACT_PLAN | ASSIGNEE_PLAN


def test_same_id_as_contact_and_staff_are_distinct_recipients():
    contact = Recipient("contact", "same", "C", email="c@x.test")
    member = Recipient("staff", "same", "S", email="s@x.test")
    data = {"assigned_to": "same", "visible_to_customer": True}
    result = plan_deliveries("quote_request.approved", data, [contact], [member])
    assert [(r.kind, ch) for r, ch in result] == [
        ("contact", "email"),
        ("staff", "email"),
        ("staff", "in_app"),
    ]


def test_plan_order_is_contacts_then_assignee_with_email_first():
    result = plan_deliveries("quote_request.approved", ASSIGNED, [BOB], [SAM])
    assert [(r.id, ch) for r, ch in result] == [
        ("c-bob", "email"),
        ("c-bob", "sms"),
        ("cust-1", "in_app"),
        ("s-sam", "email"),
        ("s-sam", "in_app"),
    ]


def test_actor_is_not_notified_of_own_action():
    assert plan("quote_request.cancelled", ASSIGNED, actor_id="s-sam") == CONTACT_PLAN
    assert plan("quote_request.approved", ASSIGNED, actor_id="c-bob") == (
        {("c-alice", "email"), ("cust-1", "in_app")} | ASSIGNEE_PLAN
    )


def test_assigned_to_is_matched_as_string():
    staff = [Recipient("staff", "42", "N", email="n@shop.test")]
    assert plan("quote_request.assigned", {"assigned_to": 42}, staff=staff) == {
        ("42", "email"),
        ("42", "in_app"),
    }


def test_table_names_quote_events_and_sign_in_links_and_is_data():
    assert set(NOTIFICATION_RULES) <= {*QUOTE_EVENT_TYPES, "auth.link_issued"}
    assert set(notifying_event_types()) == {
        "quote_request.created",
        "quote_request.approval_requested",
        "quote_request.approved",
        "quote_request.denied",
        "quote_request.cancelled",
        "quote_request.comment_added",
        "quote_request.assigned",
        "auth.link_issued",
    }


# ------------------------------------------------------------------ sign-in links

LINK = {
    "purpose": "invitation",
    "subject_kind": "portal",
    "subject_id": "p-nina",
    "customer_id": "cust-1",
    "email": "nina@cust.test",
    "name": "Nina",
    "token": "t/k+n",
    "expires_at": "2030-01-01T00:00:00Z",
}


@pytest.mark.parametrize("subject_kind", ["portal", "staff"])
def test_a_sign_in_link_goes_by_email_to_its_addressee_only(subject_kind):
    data = {**LINK, "subject_kind": subject_kind, "visible_to_customer": True}
    [(recipient, channel)] = plan_deliveries(
        "auth.link_issued",
        data,
        CONTACTS,
        STAFF,
        actor_id="p-nina",  # may ask for it herself
    )
    assert channel == "email"
    assert (recipient.kind, recipient.id, recipient.email, recipient.name) == (
        subject_kind,
        "p-nina",
        "nina@cust.test",
        "Nina",
    )


def test_a_sign_in_link_without_an_address_goes_nowhere():
    assert plan_deliveries("auth.link_issued", {**LINK, "email": " "}, CONTACTS, STAFF) == []


@pytest.mark.parametrize(
    ("purpose", "expected"),
    [
        ("invitation", "https://p.test/invitations/accept?token=t%2Fk%2Bn"),
        ("password_reset", "https://p.test/password-reset?token=t%2Fk%2Bn"),
        ("something_else", "https://p.test"),
    ],
)
def test_record_link_for_sign_in_links(purpose, expected):
    assert record_link("https://p.test/", "auth.link_issued", {**LINK, "purpose": purpose}) == (
        expected
    )


def test_record_link_for_quotes_and_others():
    data = {"quote_request_id": "a/b"}
    assert record_link("https://p.test", "quote_request.approved", data) == (
        "https://p.test/quote-requests/a%2Fb"
    )
    assert record_link("https://p.test/", "work_order.created", {}) == "https://p.test"


# ----------------------------------------------------------------- retry policy


def test_backoff_doubles_then_caps():
    assert [backoff_seconds(n) for n in range(1, 8)] == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
    assert backoff_seconds(9) == 300.0
    assert backoff_seconds(10_000) == 300.0
    assert backoff_seconds(3, base=1.5, cap=5.0) == 5.0
    assert backoff_seconds(2, base=0.5) == 1.0


def test_backoff_is_monotonic():
    delays = [backoff_seconds(n, base=3.0, cap=100.0) for n in range(1, 40)]
    assert delays == sorted(delays)
    assert max(delays) == 100.0


@pytest.mark.parametrize("bad", [0, -1])
def test_backoff_rejects_attempts_before_the_first(bad):
    with pytest.raises(ValueError):
        backoff_seconds(bad)


def test_next_status():
    assert MAX_ATTEMPTS == 6
    assert next_status(1, True) == "sent"
    assert next_status(MAX_ATTEMPTS, True) == "sent"
    assert [next_status(n, False) for n in range(1, MAX_ATTEMPTS)] == ["retry"] * 5
    assert next_status(MAX_ATTEMPTS, False) == "failed"
    assert next_status(MAX_ATTEMPTS + 3, False) == "failed"
    assert next_status(1, False, transient=False) == "failed"
    with pytest.raises(ValueError):
        next_status(0, False)


# ------------------------------------------------------------------------ dedupe


def test_delivery_key_is_stable_and_distinct():
    key = delivery_key("evt-1", "c-alice", "email")
    assert key == delivery_key("evt-1", "c-alice", "email")
    keys = {
        delivery_key(e, r, c)
        for e, r, c in itertools.product(["evt-1", "evt-2"], ["c-alice", "c-bob"], ["email", "sms"])
    }
    assert len(keys) == 8
    assert key.startswith("email:")


def test_delivery_key_known_value():
    # Stored in the deliveries table: it must never change between releases.
    assert delivery_key("evt-1", "c-alice", "email") == (
        "email:80c517611d6fca98ca882907006b113cbd33e083"
    )


def test_delivery_key_is_not_ambiguous_about_field_boundaries():
    assert delivery_key("a:b", "c", "sms") != delivery_key("a", "b:c", "sms")


@pytest.mark.parametrize(
    ("event_id", "recipient_id", "channel"), [("e", "r", "fax"), ("", "r", "sms"), ("e", "", "sms")]
)
def test_delivery_key_rejects_bad_input(event_id, recipient_id, channel):
    with pytest.raises(ValueError):
        delivery_key(event_id, recipient_id, channel)


# ------------------------------------------------------------ delivery lifecycle


def test_settle_sent():
    assert settle(1) == Settlement("sent")
    assert settle(MAX_ATTEMPTS) == Settlement("sent")


def test_settle_transient_failure_is_retried_with_backoff_until_the_last_attempt():
    for attempt in range(1, MAX_ATTEMPTS):
        outcome = settle(attempt, "SMTP down")
        assert outcome == Settlement("pending", backoff_seconds(attempt), "SMTP down")
    assert settle(MAX_ATTEMPTS, "SMTP down") == Settlement("failed", None, "SMTP down")


def test_settle_permanent_failure_fails_at_once():
    assert settle(1, "550 no such user", transient=False) == Settlement(
        "failed", None, "550 no such user"
    )


def test_settle_truncates_long_errors_and_names_empty_ones():
    assert settle(1, "x" * 5000).error == "x" * ERROR_MAX_CHARS
    assert settle(1, "").error == "unknown error"


def test_settle_rejects_attempt_zero():
    with pytest.raises(ValueError):
        settle(0)


def test_abandoned_lease_error_names_the_attempt():
    assert abandoned_lease_error(6) == "sender lost the lease on attempt 6 of 6; giving up"


def test_address_for():
    assert address_for(BOB, "email") == "bob@cust.test"
    assert address_for(BOB, "sms") == "+15550001"
    with pytest.raises(ValueError):
        address_for(ALICE, "sms")
    with pytest.raises(ValueError):
        address_for(ALICE, "fax")


def test_the_delivery_contract_agrees_with_the_domain():
    from contracts import notify

    assert notify.DELIVERY_STATUSES == DELIVERY_STATUSES
    assert notify.CHANNELS == CHANNELS


# ------------------------------------------------------------------------ in-app feed


def test_feed_cursor_round_trip_and_matches_the_contract_pattern():
    import re

    from contracts.notify import FEED_CURSOR_PATTERN
    from services.notify.domain import decode_feed_cursor, encode_feed_cursor

    moment = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    item = "6f1c2a10-0000-4000-8000-000000000123"
    for read in (False, True):
        cursor = encode_feed_cursor(read, moment, item)
        assert re.fullmatch(FEED_CURSOR_PATTERN, cursor)
        assert decode_feed_cursor(cursor) == (read, moment, item)
    for bad in ("", "2-1-" + "0" * 32, "0-1-XYZ", "0-" + "1" * 17 + "-" + "0" * 32, None):
        with pytest.raises(ValueError):
            decode_feed_cursor(bad)  # type: ignore[arg-type]  # None on purpose: a wrong type is refused too


def test_feed_owner():
    from services.notify.domain import FeedOwner, NoFeed, feed_owner

    assert feed_owner("staff", "s-1", None, None) == FeedOwner("staff", "s-1", None, "staff", "s-1")
    assert feed_owner("portal", "p-1", "cust-1", ["u-1"]) == FeedOwner(
        "customer", "cust-1", ("u-1",), "portal", "p-1"
    )
    assert feed_owner("portal", "p-1", "cust-1", None).unit_ids is None
    for kind, customer in (("token", "cust-1"), ("system", None), ("portal", None)):
        with pytest.raises(NoFeed):
            feed_owner(kind, "x", customer, None)


def test_record_of():
    from services.notify.domain import record_of

    assert record_of("quote_request.approved", {"quote_request_id": "q-1"}) == (
        "quote_request",
        "q-1",
    )
    assert record_of("work_order.completed", {"id": "w-1"}) == ("work_order", "w-1")
    assert record_of("auth.link_issued", {}) == ("auth", None)
