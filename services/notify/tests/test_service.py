"""The notify service's handler, sender and sweep against a real PostgreSQL.

A scratch database gets the notify migrations; the code under test connects as
``portico_notify`` so row-level security applies. Email goes to a DevMailServer on a
free port, SMS to the file sender. No broker is involved: the nameko entrypoints are
thin wrappers over the functions exercised here.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import ProgrammingError

from contracts.events import PRIVATE_EVENTS, make_envelope, parse_envelope, validate_data
from kit.context import ACTOR_KEY, Actor, Context
from kit.db import DatabaseCore, sa_url
from kit.errors import Forbidden, NotFound, ValidationFailed
from kit.handlers import UnsupportedEventVersion
from kit.providers import WorkerDb
from portico.devmail import DevMailServer
from services.notify import domain
from services.notify.channels import (
    DELIVERY_KEY_HEADER,
    EVENT_ID_HEADER,
    FileSmsSender,
    Renderer,
    SmtpSender,
)
from services.notify.models import Contact, TemplateOverride, Tenant, metadata
from services.notify.sending import Senders, claim, deliver, sweep
from services.notify.service import (
    TEMPLATE_DIR,
    Channels,
    NotifyService,
    delivery_page,
    handlers,
    mark_all_read,
    mark_read,
    notification_page,
)
from tests.support import scratch_database

PORTAL = "https://portal.test"
FROM = "Portico <no-reply@portico.test>"


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def database():
    with scratch_database("notify") as (admin, urls):
        yield admin, urls["notify"]


@pytest.fixture(scope="module")
def admin_url(database):
    return database[0]


@pytest.fixture(scope="module")
def core(database):
    core = DatabaseCore(database[1], metadata, pool_size=2)
    yield core
    core.dispose()


@pytest.fixture(scope="module")
def admin(admin_url):
    """Superuser connection: simulates time passing and crashes, bypassing RLS."""
    engine = create_engine(sa_url(admin_url), isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def no_leftover_deliveries(admin):
    # The sweep works across tenants: start each test without other tests' rows.
    with admin.connect() as conn:
        conn.execute(text("truncate notify.deliveries"))


@pytest.fixture(scope="module")
def renderer():
    return Renderer(TEMPLATE_DIR, strict=True)


@pytest.fixture
def mail(tmp_path):
    with DevMailServer("127.0.0.1", 0, tmp_path / "mail") as server:
        yield server


@pytest.fixture
def senders(mail, tmp_path, renderer):
    return Senders(
        email=SmtpSender("127.0.0.1", mail.port, FROM, timeout=5),
        sms=FileSmsSender(tmp_path / "sms"),
        renderer=renderer,
    )


@pytest.fixture
def broken_senders(tmp_path, renderer):
    return Senders(
        email=SmtpSender("127.0.0.1", closed_port(), FROM, timeout=2),
        sms=FileSmsSender(tmp_path / "sms"),
        renderer=renderer,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------- helpers


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def event(kind, data, tenant, *, actor=None, occurred_at=None):
    envelope = make_envelope(
        kind,
        data,
        tenant_id=tenant,
        actor=actor or {"kind": "system", "id": "system", "name": "Portico"},
        correlation_id=None,
        causation_id=None,
    )
    if occurred_at is not None:
        envelope["occurred_at"] = iso(occurred_at)
    return parse_envelope(envelope)


def contact(customer_id, name, *, email=None, phone=None, notify_by="email", cid=None):
    return {
        "id": cid or str(uuid.uuid4()),
        "customer_id": customer_id,
        "name": name,
        "email": email,
        "phone": phone,
        "notify_by": notify_by,
        "is_team_manager": False,
    }


class Shop:
    """One tenant with a customer, three contacts and a staff member."""

    def __init__(self, core, renderer, name="Acme Motors"):
        self.core = core
        self.renderer = renderer
        self.tenant = str(uuid.uuid4())
        self.customer = str(uuid.uuid4())
        self.staff_id = str(uuid.uuid4())
        self.alice = contact(self.customer, "Alice", email="alice@cust.test")
        self.bob = contact(
            self.customer, "Bob", email="bob@cust.test", phone="+15550001", notify_by="both"
        )
        self.carol = contact(self.customer, "Carol", email="carol@cust.test", notify_by="none")
        self.handle(
            event(
                "directory.tenant.created",
                {"id": self.tenant, "slug": "acme", "name": name},
                self.tenant,
            )
        )
        self.handle(
            event(
                "directory.customer.created", {"id": self.customer, "name": "Fleet Co"}, self.tenant
            )
        )
        for person in (self.alice, self.bob, self.carol):
            self.handle(event("directory.contact.created", person, self.tenant))
        staff = {
            "id": self.staff_id,
            "name": "Sam",
            "email": "sam@shop.test",
            "roles": ["advisor"],
            "active": True,
        }
        self.handle(event("directory.staff_user.created", staff, self.tenant))

    def handle(self, envelope):
        """Apply one event as the consumer does, without sending: the new deliveries' ids."""
        channels = SimpleNamespace(renderer=self.renderer, portal_base=PORTAL)
        new = handlers.handle(self.core, envelope, channels=channels, core=self.core).result
        return new.ids if new else []

    def quote_event(self, kind="quote_request.approval_requested", customer=None, **extra):
        data = {
            "quote_request_id": str(uuid.uuid4()),
            "number": "Q-000042",
            "customer_id": customer or self.customer,
            "status": "customer_approval_needed",
            "description": "Brakes squeal",
            "created_by": self.staff_id,
            "created_by_customer": False,
            "visible_to_customer": True,
            "version": 3,
            **extra,
        }
        actor = {"kind": "staff", "id": self.staff_id, "name": "Sam"}
        return event(kind, data, self.tenant, actor=actor)

    def staff_actor(self, **kwargs):
        return Actor(
            kind="staff", id=self.staff_id, tenant_id=self.tenant, roles=("advisor",), **kwargs
        )


def rows(admin, where="true", **params):
    with admin.connect() as conn:
        return conn.execute(
            text(f"select * from notify.deliveries where {where} order by address, channel"),
            params,
        ).all()


def rcpt_to(message) -> str:
    return str(message["X-Devmail-Rcpt-To"])


def sms_lines(tmp_path):
    path = tmp_path / "sms" / "sms.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- tests


def test_directory_events_create_local_copies(core, renderer):
    shop = Shop(core, renderer)
    with core.unit_of_work(tenant_id=shop.tenant) as uow:
        contacts = {c.name: c for c in uow.session.scalars(select(Contact))}
        tenant = uow.session.scalars(select(Tenant)).one()
    assert set(contacts) == {"Alice", "Bob", "Carol"}
    bob = contacts["Bob"]
    assert (bob.id, bob.customer_id, bob.email, bob.phone, bob.notify_by) == (
        shop.bob["id"],
        shop.customer,
        "bob@cust.test",
        "+15550001",
        "both",
    )
    assert (tenant.id, tenant.tenant_id, tenant.name) == (shop.tenant, shop.tenant, "Acme Motors")


def test_directory_updates_are_order_tolerant(core, renderer, admin):
    shop = Shop(core, renderer)
    cid = str(uuid.uuid4())
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    newer = contact(shop.customer, "Dana New", email="new@cust.test", notify_by="both", cid=cid)
    older = contact(shop.customer, "Dana Old", email="old@cust.test", cid=cid)
    # the update overtakes the create on the way in
    shop.handle(event("directory.contact.updated", newer, shop.tenant, occurred_at=t0))
    shop.handle(
        event("directory.contact.created", older, shop.tenant, occurred_at=t0 - timedelta(1))
    )
    with admin.connect() as conn:
        row = conn.execute(text("select * from notify.contacts where id = :i"), {"i": cid}).one()
    assert (row.name, row.email, row.notify_by) == ("Dana New", "new@cust.test", "both")
    latest = {**newer, "name": "Dana Latest"}
    shop.handle(
        event("directory.contact.updated", latest, shop.tenant, occurred_at=t0 + timedelta(1))
    )
    with admin.connect() as conn:
        name = conn.execute(
            text("select name from notify.contacts where id = :i"), {"i": cid}
        ).scalar_one()
    assert name == "Dana Latest"


def test_approval_requested_is_delivered_to_each_contact_channel(
    core, renderer, senders, mail, admin, tmp_path
):
    shop = Shop(core, renderer)
    envelope = shop.quote_event()
    ids = shop.handle(envelope)
    planned = rows(admin)
    assert {(r.address, r.channel) for r in planned} == {
        ("alice@cust.test", "email"),
        ("bob@cust.test", "email"),
        ("+15550001", "sms"),
    }
    assert sorted(ids) == sorted(str(r.id) for r in planned)
    assert {r.status for r in planned} == {"pending"}
    assert all(
        r.delivery_key == domain.delivery_key(envelope["id"], str(r.recipient_id), r.channel)
        for r in planned
    )

    assert deliver(core, senders, ids) == {"sent": 3}

    messages = mail.messages()
    assert sorted(rcpt_to(m) for m in messages) == ["alice@cust.test", "bob@cust.test"]
    assert sorted(str(m["To"]) for m in messages) == ["alice@cust.test", "bob@cust.test"]
    for message in messages:
        assert message[EVENT_ID_HEADER] == envelope["id"]
        assert message["Subject"] == "Your quote Q-000042 from Acme Motors is ready for approval"
    keys = {r.address: r.delivery_key for r in rows(admin)}
    assert {m[DELIVERY_KEY_HEADER] for m in messages} == {
        keys["alice@cust.test"],
        keys["bob@cust.test"],
    }
    [sms] = sms_lines(tmp_path)
    assert sms["to"] == "+15550001"
    assert "Q-000042" in sms["body"] and sms["reference"] == keys["+15550001"]
    done = rows(admin)
    assert {(r.status, r.attempts) for r in done} == {("sent", 1)}
    assert all(r.sent_at is not None and r.provider_message_id for r in done)


def test_the_same_event_twice_delivers_once(core, renderer, senders, mail, admin):
    shop = Shop(core, renderer)
    envelope = shop.quote_event()
    deliver(core, senders, shop.handle(envelope))
    assert len(mail.messages()) == 2

    assert shop.handle(envelope) == []
    assert deliver(core, senders, [str(r.id) for r in rows(admin)]) == {}
    assert sweep(core, senders) == {"claimed": 0}
    # even if the processed-events record were lost, the delivery key holds
    with admin.connect() as conn:
        conn.execute(
            text("delete from notify.processed_events where handler = :h and event_id = :e"),
            {"h": handlers.ledger, "e": envelope["id"]},
        )
    assert shop.handle(envelope) == []
    assert len(rows(admin)) == 3
    assert len(mail.messages()) == 2


def test_transient_smtp_failure_is_retried_by_the_sweep(
    core, renderer, senders, broken_senders, mail, admin
):
    shop = Shop(core, renderer)
    ids = shop.handle(shop.quote_event())
    assert deliver(core, broken_senders, ids) == {"pending": 2, "sent": 1}  # sms went out

    with admin.connect() as conn:
        now = conn.execute(text("select now()")).scalar_one()
    waiting = rows(admin, "channel = 'email'")
    assert len(waiting) == 2
    for row in waiting:
        assert (row.status, row.attempts, row.lease_until) == ("pending", 1, None)
        assert row.next_attempt_at > now
        assert "unavailable" in row.last_error

    assert sweep(core, senders) == {"claimed": 0}  # not due yet
    assert mail.messages() == []

    with admin.connect() as conn:  # time passes
        conn.execute(
            text("update notify.deliveries set next_attempt_at = now() - interval '1 second'")
        )
    assert sweep(core, senders) == {"claimed": 2, "sent": 2}
    assert sorted(rcpt_to(m) for m in mail.messages()) == ["alice@cust.test", "bob@cust.test"]
    assert {(r.status, r.attempts) for r in rows(admin, "channel = 'email'")} == {("sent", 2)}


def test_a_claim_whose_lease_expired_is_sent_by_the_sweep(core, renderer, senders, mail, admin):
    shop = Shop(core, renderer)
    ids = shop.handle(shop.quote_event())
    claimed = claim(core, ids)  # ...and the sender is killed before handing anything over
    assert len(claimed) == 3
    assert {(r.status, r.attempts) for r in rows(admin)} == {("sending", 1)}

    assert claim(core, ids) == []  # the lease protects it from a second sender
    assert sweep(core, senders) == {"claimed": 0}
    assert mail.messages() == []

    with admin.connect() as conn:  # the lease runs out
        conn.execute(text("update notify.deliveries set lease_until = now() - interval '1 second'"))
    assert sweep(core, senders) == {"claimed": 3, "sent": 3}
    assert sorted(rcpt_to(m) for m in mail.messages()) == ["alice@cust.test", "bob@cust.test"]
    assert {(r.status, r.attempts) for r in rows(admin)} == {("sent", 2)}


def test_a_lease_lost_on_the_last_attempt_fails_the_delivery(core, renderer, senders, admin):
    shop = Shop(core, renderer)
    ids = shop.handle(shop.quote_event())
    claim(core, ids)
    with admin.connect() as conn:
        conn.execute(
            text(
                "update notify.deliveries set attempts = :n,"
                " lease_until = now() - interval '1 second'"
            ),
            {"n": domain.MAX_ATTEMPTS},
        )
    assert sweep(core, senders) == {"failed": 3, "claimed": 0}
    assert {r.status for r in rows(admin)} == {"failed"}
    assert all("giving up" in r.last_error for r in rows(admin))


def test_an_address_the_channel_rejects_fails_permanently(core, renderer, senders, mail, admin):
    shop = Shop(core, renderer)
    customer = str(uuid.uuid4())
    shop.handle(
        event(
            "directory.contact.created",
            contact(customer, "Eve", email="not-an-address"),
            shop.tenant,
        )
    )
    ids = shop.handle(shop.quote_event(customer=customer))
    assert deliver(core, senders, ids) == {"failed": 1}
    [row] = rows(admin)
    assert (row.status, row.attempts) == ("failed", 1)
    assert "invalid" in row.last_error
    assert mail.messages() == []


def test_a_contact_who_wants_no_notifications_gets_nothing(core, renderer, senders, mail, admin):
    shop = Shop(core, renderer)
    customer = str(uuid.uuid4())
    quiet = contact(customer, "Quinn", email="quinn@cust.test", phone="+1555", notify_by="none")
    shop.handle(event("directory.contact.created", quiet, shop.tenant))
    assert shop.handle(shop.quote_event(customer=customer)) == []
    assert rows(admin) == []
    assert sweep(core, senders) == {"claimed": 0}
    assert mail.messages() == []


def test_the_tenant_template_override_is_used(core, renderer, senders, mail, admin):
    shop = Shop(core, renderer)
    with core.unit_of_work(tenant_id=shop.tenant) as uow:
        uow.session.add(
            TemplateOverride(
                event_type="quote_request.approval_requested",
                part="subject",
                source="{{ tenant_name }} says: {{ data.number }} needs you",
            )
        )
    other = Shop(core, renderer, name="Other Garage")
    deliver(core, senders, shop.handle(shop.quote_event()))
    deliver(core, senders, other.handle(other.quote_event()))
    subjects = sorted({str(m["Subject"]) for m in mail.messages()})
    assert subjects == [
        "Acme Motors says: Q-000042 needs you",
        "Your quote Q-000042 from Other Garage is ready for approval",
    ]


def test_tenant_a_cannot_see_tenant_b_rows(core, renderer, admin):
    a = Shop(core, renderer)
    b = Shop(core, renderer)
    a.handle(a.quote_event())
    b.handle(b.quote_event())
    with core.unit_of_work(tenant_id=a.tenant) as uow:
        # raw SQL bypasses the ORM's scoping: only row-level security stands in the way
        raw_contacts = uow.session.execute(text("select tenant_id from notify.contacts")).all()
        raw_deliveries = uow.session.execute(text("select tenant_id from notify.deliveries")).all()
        orm_ids = set(uow.session.scalars(select(Contact.id)))
    assert {str(r.tenant_id) for r in raw_contacts} == {a.tenant}
    assert {str(r.tenant_id) for r in raw_deliveries} == {a.tenant}
    assert b.bob["id"] not in orm_ids and a.bob["id"] in orm_ids
    with core.unit_of_work(worker=True) as uow:
        # the sweeper's worker role reaches every tenant's deliveries ...
        everyone = uow.session.scalars(text("select tenant_id from notify.deliveries"))
        tenants = {str(t) for t in everyone}
    assert tenants == {a.tenant, b.tenant}
    # ... and is refused every business table
    with (
        pytest.raises(ProgrammingError, match="permission denied"),
        core.unit_of_work(worker=True) as uow,
    ):
        uow.session.execute(text("select count(*) from notify.contacts"))


def test_delivery_log_for_staff(core, renderer, senders, admin):
    shop = Shop(core, renderer)
    other = Shop(core, renderer)
    envelope = shop.quote_event()
    deliver(core, senders, shop.handle(envelope))
    other.handle(other.quote_event())
    actor = shop.staff_actor()

    def page(query):
        with core.unit_of_work(actor) as uow:
            return delivery_page(uow, actor, query)

    everything = page({})
    assert len(everything["items"]) == 3 and everything["next_cursor"] is None
    item = next(i for i in everything["items"] if i["channel"] == "sms")
    assert item["event_id"] == envelope["id"]
    assert item["event_type"] == "quote_request.approval_requested"
    assert (item["recipient_kind"], item["recipient_id"]) == ("contact", shop.bob["id"])
    assert (item["address"], item["status"], item["attempts"]) == ("+15550001", "sent", 1)
    assert datetime.fromisoformat(item["sent_at"]) and datetime.fromisoformat(item["created_at"])
    assert {i["channel"] for i in page({"channel": "email"})["items"]} == {"email"}
    assert page({"status": "pending"})["items"] == []
    assert page({"event_type": "quote_request.created"})["items"] == []

    first = page({"limit": 2})
    second = page({"limit": 2, "cursor": first["next_cursor"]})
    assert len(first["items"]) == 2 and second["next_cursor"] is None
    seen = [i["id"] for i in first["items"] + second["items"]]
    assert sorted(seen) == sorted(i["id"] for i in everything["items"])

    with pytest.raises(ValidationFailed):
        page({"status": "lost"})
    portal = Actor(
        kind="portal", id=shop.alice["id"], tenant_id=shop.tenant, customer_id=shop.customer
    )
    with pytest.raises(Forbidden), core.unit_of_work(portal) as uow:
        delivery_page(uow, portal, {})


def test_unknown_versions_fail_and_unknown_types_are_recorded_and_ignored(core, renderer, admin):
    shop = Shop(core, renderer)
    future = {**shop.quote_event(), "version": 2}
    with pytest.raises(UnsupportedEventVersion):
        shop.handle(future)
    unknown = {
        **shop.quote_event(),
        "id": str(uuid.uuid4()),
        "type": "work_order.invented",
        "data": {"id": str(uuid.uuid4())},
    }
    assert shop.handle(unknown) == []
    with admin.connect() as conn:
        handled = conn.execute(
            text("select event_id from notify.processed_events where event_id in (:a, :b)"),
            {"a": future["id"], "b": unknown["id"]},
        ).all()
    assert [str(r.event_id) for r in handled] == [unknown["id"]]
    assert rows(admin) == []


# ------------------------------------------------------------- nameko entrypoints


class InlineContainer:
    """Runs managed threads at once, so a test sees their effect without eventlet."""

    def __init__(self):
        self.spawned = []

    def spawn_managed_thread(self, fn, identifier=None):
        self.spawned.append(identifier)
        fn()


def channels_for_test(monkeypatch, mail, tmp_path):
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(mail.port))
    monkeypatch.setenv("SMS_DIR", str(tmp_path / "sms"))
    monkeypatch.setenv("PORTAL_BASE_URL", PORTAL)
    monkeypatch.delenv("SMS_HTTP_URL", raising=False)
    provider = Channels()
    provider.container = InlineContainer()
    provider.setup()
    return provider


def test_entrypoints_handle_send_sweep_and_list(core, renderer, mail, admin, tmp_path, monkeypatch):
    channels = channels_for_test(monkeypatch, mail, tmp_path)
    assert isinstance(channels.senders.sms, FileSmsSender)
    shop = Shop(core, renderer)
    staff = shop.staff_actor()
    context = Context(SimpleNamespace(data={ACTOR_KEY: staff.to_json()}))
    service = worker_factory(
        NotifyService, db=WorkerDb(core, context), ctx=context, channels=channels
    )

    service.on_event(shop.quote_event())  # commit, then dispatch sends
    assert channels.container.spawned == ["notify.deliver"]
    assert sorted(rcpt_to(m) for m in mail.messages()) == ["alice@cust.test", "bob@cust.test"]
    assert [line["to"] for line in sms_lines(tmp_path)] == ["+15550001"]

    ids = shop.handle(shop.quote_event("quote_request.approved"))
    service.sweep_deliveries()  # what the timer runs
    assert {r.status for r in rows(admin, "id = any(cast(:ids as uuid[]))", ids=ids)} == {"sent"}
    assert len(mail.messages()) == 4

    listed = service.list_deliveries({"channel": "sms"})
    assert [i["address"] for i in listed["items"]] == ["+15550001", "+15550001"]


def test_dispatch_failure_is_logged_not_raised(core, mail, tmp_path, monkeypatch, caplog):
    channels = channels_for_test(monkeypatch, mail, tmp_path)
    core_for_nothing = SimpleNamespace()  # claiming fails: no unit_of_work
    channels.dispatch(core_for_nothing, [str(uuid.uuid4())])
    assert "the sweep will retry" in caplog.text


# -------------------------------------------------------------- sign-in links


def link_event(shop, *, purpose="invitation", subject_kind="portal", token=None, email=None):
    data = {
        "purpose": purpose,
        "subject_kind": subject_kind,
        "subject_id": str(uuid.uuid4()),
        "customer_id": shop.customer if subject_kind == "portal" else None,
        "email": email or "newbie@cust.test",
        "name": "Nina Newbie",
        "token": token or f"tok/{uuid.uuid4().hex}+secret",
        "expires_at": "2030-01-02T03:04:05Z",
    }
    return event("auth.link_issued", data, shop.tenant, actor=shop_actor(shop))


def shop_actor(shop):
    return {"kind": "staff", "id": shop.staff_id, "name": "Sam"}


@pytest.mark.parametrize(
    ("purpose", "subject_kind", "path", "subject"),
    [
        (
            "invitation",
            "portal",
            "/invitations/accept",
            "You are invited to the Acme Motors portal",
        ),
        ("invitation", "staff", "/invitations/accept", "You are invited to the Acme Motors portal"),
        ("password_reset", "portal", "/password-reset", "Reset your Acme Motors password"),
        ("password_reset", "staff", "/password-reset", "Reset your Acme Motors password"),
    ],
)
def test_a_sign_in_link_is_mailed_to_its_addressee_only(
    core, renderer, senders, mail, admin, purpose, subject_kind, path, subject
):
    shop = Shop(core, renderer)
    token = "a/b+c=d&e"
    envelope = link_event(shop, purpose=purpose, subject_kind=subject_kind, token=token)
    ids = shop.handle(envelope)
    [row] = rows(admin)  # one delivery: not the customer's contacts, not the staff
    assert (row.address, row.channel, row.recipient_kind) == (
        "newbie@cust.test",
        "email",
        subject_kind,
    )
    assert str(row.recipient_id) == envelope["data"]["subject_id"]
    assert deliver(core, senders, ids) == {"sent": 1}

    [message] = mail.messages()
    assert rcpt_to(message) == "newbie@cust.test"
    assert message["Subject"] == subject
    link = f"{PORTAL}{path}?token=a%2Fb%2Bc%3Dd%26e"
    text_part = message.get_body(("plain",)).get_content()
    html_part = message.get_body(("html",)).get_content()
    assert link in text_part
    assert f'href="{link.replace("&", "&amp;")}"' in html_part or f'href="{link}"' in html_part
    assert "2030-01-02 03:04 UTC" in text_part
    assert "Nina Newbie" in text_part


def test_a_sign_in_link_never_shows_in_the_delivery_log_and_is_wiped_once_sent(
    core, renderer, senders, mail, admin
):
    shop = Shop(core, renderer)
    token = f"secret-{uuid.uuid4().hex}"
    ids = shop.handle(link_event(shop, token=token))
    # a quote event's bodies are kept, for comparison
    quote_ids = shop.handle(shop.quote_event())
    actor = shop.staff_actor()

    def log_text():
        with core.unit_of_work(actor) as uow:
            return json.dumps(delivery_page(uow, actor, {}))

    [pending] = rows(admin, "event_type = 'auth.link_issued'")
    assert token in json.dumps(pending.context)  # stored to be rendered and sent...
    assert pending.body_text is None  # (rendered when sent, outside the event transaction)
    assert token not in log_text()  # ...never shown

    deliver(core, senders, ids + quote_ids)
    [sent] = rows(admin, "event_type = 'auth.link_issued'")
    assert sent.status == "sent"
    assert (sent.body_text, sent.body_html, sent.sms_body, sent.context) == (None,) * 4
    assert sent.subject == "You are invited to the Acme Motors portal"
    assert sent.address == "newbie@cust.test"
    others = rows(admin, "event_type <> 'auth.link_issued' and channel = 'email'")
    assert others and all(r.body_text for r in others)
    listed = log_text()
    assert token not in listed and "newbie@cust.test" in listed
    [linked] = [m for m in mail.messages() if rcpt_to(m) == "newbie@cust.test"]
    assert token in linked.get_body(("plain",)).get_content()


def test_a_sign_in_link_that_fails_for_good_is_wiped_too(core, renderer, senders, admin):
    shop = Shop(core, renderer)
    ids = shop.handle(link_event(shop, email="not-an-address"))
    assert deliver(core, senders, ids) == {"failed": 1}
    [row] = rows(admin)
    assert (row.status, row.body_text, row.body_html) == ("failed", None, None)


def test_a_sign_in_link_abandoned_on_its_last_attempt_is_wiped(core, renderer, senders, admin):
    shop = Shop(core, renderer)
    claim(core, shop.handle(link_event(shop)))
    with admin.connect() as conn:
        conn.execute(
            text(
                "update notify.deliveries set attempts = :n,"
                " lease_until = now() - interval '1 second'"
            ),
            {"n": domain.MAX_ATTEMPTS},
        )
    assert sweep(core, senders)["failed"] == 1
    [row] = rows(admin)
    assert (row.status, row.body_text, row.body_html) == ("failed", None, None)


# ------------------------------------------------------- new requests and in-app feed


def add_staff(shop, name, roles, *, active=True):
    member = {
        "id": str(uuid.uuid4()),
        "name": name,
        "email": f"{name.lower()}@shop.test",
        "roles": roles,
        "active": active,
    }
    shop.handle(event("directory.staff_user.created", member, shop.tenant))
    return member["id"]


def customer_request(shop, *, unit_id=None, visible=True, portal_id=None):
    envelope = shop.quote_event(
        "quote_request.created",
        status="new",
        created_by_customer=True,
        visible_to_customer=visible,
        unit_id=unit_id,
    )
    envelope["actor"] = {"kind": "portal", "id": portal_id or str(uuid.uuid4()), "name": "P"}
    return envelope


def settings_event(shop, roles, occurred_at=None):
    data = {"features": {"quotes": True}, "notify_new_request_roles": roles}
    return event("directory.settings.updated", data, shop.tenant, occurred_at=occurred_at)


def portal_actor(shop, unit_ids=None, **kwargs):
    return Actor(
        kind="portal",
        id=str(uuid.uuid4()),
        tenant_id=shop.tenant,
        customer_id=shop.customer,
        unit_ids=unit_ids,
        **kwargs,
    )


def feed(core, actor, **query):
    with core.unit_of_work(actor) as uow:
        return notification_page(uow, actor, query)


def test_a_customer_request_tells_the_managers_and_advisors_by_email_and_in_app(
    core, renderer, senders, mail, admin
):
    shop = Shop(core, renderer)  # Sam is an advisor
    mia = add_staff(shop, "Mia", ["manager"])
    add_staff(shop, "Ted", ["technician"])
    add_staff(shop, "Old", ["manager"], active=False)
    deliver(core, senders, shop.handle(customer_request(shop)))

    assert sorted(rcpt_to(m) for m in mail.messages()) == ["mia@shop.test", "sam@shop.test"]
    assert {str(m["Subject"]) for m in mail.messages()} == {
        "New quote request Q-000042 from Fleet Co"
    }
    for staff_id in (shop.staff_id, mia):
        actor = Actor(kind="staff", id=staff_id, tenant_id=shop.tenant, roles=("manager",))
        page = feed(core, actor)
        [item] = page["items"]
        assert page["unread_count"] == 1
        assert item["title"] == "New quote request Q-000042 from Fleet Co"
        assert item["body"] == "Fleet Co asked for a quote: Brakes squeal"
        assert item["link"].startswith(f"{PORTAL}/quote-requests/")
        assert (item["record_type"], item["read"]) == ("quote_request", False)
    # the customer made it: the customer is not told about its own request
    assert feed(core, portal_actor(shop))["items"] == []


def test_the_roles_follow_the_tenant_setting_and_ignore_stale_settings(
    core, renderer, senders, mail
):
    shop = Shop(core, renderer)
    ted = add_staff(shop, "Ted", ["technician"])
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    shop.handle(settings_event(shop, ["technician"], occurred_at=t0))
    shop.handle(settings_event(shop, ["advisor"], occurred_at=t0 - timedelta(days=1)))  # late
    deliver(core, senders, shop.handle(customer_request(shop)))
    assert [rcpt_to(m) for m in mail.messages()] == ["ted@shop.test"]
    ted_actor = Actor(kind="staff", id=ted, tenant_id=shop.tenant, roles=("technician",))
    assert feed(core, ted_actor)["unread_count"] == 1

    shop.handle(settings_event(shop, [], occurred_at=t0 + timedelta(days=1)))
    assert shop.handle(customer_request(shop)) == []  # nobody wants to hear


def test_the_feed_pages_unread_first_and_marks_read_per_reader(core, renderer):
    shop = Shop(core, renderer)
    staff = shop.staff_actor()
    for _ in range(5):
        shop.handle(shop.quote_event("quote_request.approved", assigned_to=shop.staff_id))
    # another staff member caused these: Sam (the assignee) is told
    page = feed(core, staff)
    assert page["unread_count"] == 0  # Sam approved them himself: the actor is never told
    other = add_staff(shop, "Mia", ["manager"])
    for _ in range(5):
        envelope = shop.quote_event("quote_request.approved", assigned_to=shop.staff_id)
        envelope["actor"] = {"kind": "staff", "id": other, "name": "Mia"}
        shop.handle(envelope)
    page = feed(core, staff, limit=2)
    assert page["unread_count"] == 5 and len(page["items"]) == 2
    newest = page["items"][0]
    with core.unit_of_work(staff) as uow:
        mark_read(uow, staff, page["items"][1]["id"])
    with core.unit_of_work(staff) as uow:
        mark_read(uow, staff, page["items"][1]["id"])  # again: no change, no error

    seen, cursor = [], None
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = feed(core, staff, **query)
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and len({i["id"] for i in seen}) == 5
    assert [i["read"] for i in seen] == [False] * 4 + [True]  # unread first
    assert seen[0]["id"] == newest["id"]  # then newest first
    assert seen[-1]["read_at"] is not None
    assert page["unread_count"] == 4

    with core.unit_of_work(staff) as uow:
        mark_all_read(uow, staff)
    page = feed(core, staff)
    assert page["unread_count"] == 0 and all(i["read"] for i in page["items"])
    # Mia's own feed is hers: nothing of Sam's
    mia = Actor(kind="staff", id=other, tenant_id=shop.tenant, roles=("manager",))
    assert feed(core, mia)["items"] == []
    with pytest.raises(ValidationFailed):
        feed(core, staff, cursor="bm90LWEtY3Vyc29y")


def test_a_customer_feed_is_shared_by_its_accounts_within_their_units(core, renderer):
    shop = Shop(core, renderer)
    unit_a, unit_b = str(uuid.uuid4()), str(uuid.uuid4())
    shop.handle(shop.quote_event(unit_id=unit_a))
    shop.handle(shop.quote_event(unit_id=unit_b))
    shop.handle(shop.quote_event())  # no unit
    shop.handle(shop.quote_event(unit_id=unit_a, visible_to_customer=False))  # hidden

    everyone = portal_actor(shop)
    restricted = portal_actor(shop, unit_ids=(unit_a,))
    assert feed(core, everyone)["unread_count"] == 3
    mine = feed(core, restricted)
    assert mine["unread_count"] == 2
    assert {i["unit_id"] for i in mine["items"]} == {unit_a, None}
    assert mine["items"][0]["title"] == "Your quote Q-000042 from Acme Motors is ready for approval"

    # each account reads for itself
    with core.unit_of_work(restricted) as uow:
        mark_all_read(uow, restricted)
    assert feed(core, restricted)["unread_count"] == 0
    assert feed(core, everyone)["unread_count"] == 3
    # an item of another unit is not the restricted account's to mark
    other_unit = next(i for i in feed(core, everyone)["items"] if i["unit_id"] == unit_b)
    with pytest.raises(NotFound), core.unit_of_work(restricted) as uow:
        mark_read(uow, restricted, other_unit["id"])


def test_a_preview_reads_but_never_marks_and_token_holders_have_no_feed(core, renderer):
    shop = Shop(core, renderer)
    shop.handle(shop.quote_event())
    preview = portal_actor(shop, read_only=True)
    [item] = feed(core, preview)["items"]
    for mark in (
        lambda uow: mark_read(uow, preview, item["id"]),
        lambda uow: mark_all_read(uow, preview),
    ):
        with pytest.raises(Forbidden), core.unit_of_work(preview) as uow:
            mark(uow)
    assert feed(core, preview)["unread_count"] == 1
    token = Actor(kind="token", id="t", tenant_id=shop.tenant, customer_id=shop.customer)
    with pytest.raises(Forbidden), core.unit_of_work(token) as uow:
        notification_page(uow, token, {})


def test_another_tenants_item_is_not_found(core, renderer):
    a, b = Shop(core, renderer), Shop(core, renderer)
    b.handle(b.quote_event())
    [item] = feed(core, portal_actor(b))["items"]
    intruder = portal_actor(a)
    intruder = Actor(**{**intruder.__dict__, "customer_id": b.customer})  # even with b's id
    assert feed(core, intruder)["items"] == []
    for bad in (item["id"], "not-a-uuid"):
        with pytest.raises(NotFound), core.unit_of_work(intruder) as uow:
            mark_read(uow, intruder, bad)


def test_hidden_quotes_reach_no_customer_channel_but_staff_still_hear(core, renderer, admin):
    shop = Shop(core, renderer)
    for kind, extra in [
        ("quote_request.comment_added", {"author_kind": "staff", "comment_body": "secret"}),
        ("quote_request.cancelled", {}),
        ("quote_request.approval_requested", {}),
        ("quote_request.approved", {}),
        ("quote_request.denied", {}),
    ]:
        envelope = shop.quote_event(
            kind, visible_to_customer=False, assigned_to=shop.staff_id, **extra
        )
        envelope["actor"] = {"kind": "staff", "id": str(uuid.uuid4()), "name": "Boss"}
        shop.handle(envelope)
    assert {r.recipient_kind for r in rows(admin)} <= {"staff"}
    assert feed(core, portal_actor(shop))["items"] == []
    assert feed(core, shop.staff_actor())["unread_count"] == 3  # cancelled, approved, denied


# ------------------------------------------------------------ tenant overrides, bounded


def test_overrides_render_after_the_event_transaction_within_bounds(
    core, renderer, senders, mail, admin, monkeypatch
):
    shop = Shop(core, renderer)
    loops = (
        "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}"
        "{% endfor %}{% endfor %}{% endfor %}"
    )
    with core.unit_of_work(tenant_id=shop.tenant) as uow:
        uow.session.add(
            TemplateOverride(
                event_type="quote_request.approval_requested", part="subject", source=loops
            )
        )
        uow.session.add(
            TemplateOverride(
                event_type="quote_request.approval_requested",
                part="text",
                source="Custom {{ data.number }}",
            )
        )
    started = time.monotonic()
    ids = shop.handle(shop.quote_event())
    assert time.monotonic() - started < 1.0  # the event transaction renders nothing
    pending = rows(admin)
    assert {(r.subject, r.body_text) for r in pending} == {(None, None)}
    assert all(r.context["data"]["number"] == "Q-000042" for r in pending)

    started = time.monotonic()
    assert deliver(core, senders, ids) == {"sent": 3}
    assert time.monotonic() - started < 3 * 2.5  # each message at most the bound (+ slack)
    subjects = {str(m["Subject"]) for m in mail.messages()}
    assert subjects == {"Your quote Q-000042 from Acme Motors is ready for approval"}
    assert all(
        m.get_body(("plain",)).get_content().startswith("Custom Q-000042") for m in mail.messages()
    )
    emails = rows(admin, "channel = 'email'")
    assert all(r.context is None and "longer than" in r.template_error for r in emails)
    actor = shop.staff_actor()
    with core.unit_of_work(actor) as uow:
        logged = delivery_page(uow, actor, {"channel": "email"})["items"]
    assert all(
        "quote_request.approval_requested/subject failed" in i["template_error"] for i in logged
    )


# ------------------------------------------- the events that keep the gateway's feed view


def outbox(admin, tenant, event_type):
    """The envelopes of ``event_type`` in the tenant's outbox, oldest first."""
    with admin.connect() as conn:
        return [
            row.envelope
            for row in conn.execute(
                text(
                    "select envelope from notify.outbox where tenant_id = :t and type = :k"
                    " order by created_at, id"
                ),
                {"t": tenant, "k": event_type},
            )
        ]


def test_each_in_app_item_stored_is_emitted_whole_once(core, renderer, admin):
    shop = Shop(core, renderer)
    unit = str(uuid.uuid4())
    envelope = shop.quote_event(unit_id=unit)
    shop.handle(envelope)
    shop.handle(envelope)  # redelivered: the ledger skips it
    portal = portal_actor(shop)
    [item] = feed(core, portal)["items"]
    [created] = outbox(admin, shop.tenant, "notification.created")
    assert created["tenant_id"] == shop.tenant
    assert created["causation_id"] == envelope["id"]  # same unit of work as the item
    data = created["data"]
    assert data == {
        "notification_id": item["id"],
        "recipient_kind": "customer",
        "recipient_id": shop.customer,
        "unit_id": unit,
        "event_id": envelope["id"],
        "event_type": envelope["type"],
        "record_type": "quote_request",
        "record_id": envelope["data"]["quote_request_id"],
        "title": item["title"],
        "body": item["body"],
        "link": item["link"],
        "created_at": data["created_at"],
        "version": 1,
    }
    assert datetime.fromisoformat(data["created_at"]) == datetime.fromisoformat(item["created_at"])
    assert "notification.created" in PRIVATE_EVENTS and "notification.read" in PRIVATE_EVENTS


def test_a_mark_answers_its_read_at_and_is_emitted_once(core, renderer, admin):
    shop = Shop(core, renderer)
    shop.handle(shop.quote_event())
    reader = portal_actor(shop)
    [item] = feed(core, reader)["items"]
    with core.unit_of_work(reader) as uow:
        first = mark_read(uow, reader, item["id"])
    assert first["reader_kind"] == "portal" and first["reader_id"] == reader.id
    assert first["notification_ids"] == [item["id"]]
    with core.unit_of_work(reader) as uow:
        again = mark_read(uow, reader, item["id"])
    assert again == first  # the first read_at stands
    [read] = outbox(admin, shop.tenant, "notification.read")
    assert read["data"] == first
    assert feed(core, reader)["items"][0]["read_at"] is not None


def test_read_all_answers_and_emits_the_items_it_marked_in_batches(
    core, renderer, admin, monkeypatch
):
    from services.notify import feed as notify_feed

    monkeypatch.setattr(notify_feed, "READ_EVENT_BATCH", 2)
    shop = Shop(core, renderer)
    for _ in range(5):
        shop.handle(shop.quote_event())
    reader = portal_actor(shop)
    items = feed(core, reader)["items"]
    with core.unit_of_work(reader) as uow:
        mark_read(uow, reader, items[0]["id"])
    with core.unit_of_work(reader) as uow:
        marks = mark_all_read(uow, reader)
    assert sorted(marks["notification_ids"]) == sorted(i["id"] for i in items[1:])
    reads = outbox(admin, shop.tenant, "notification.read")
    assert [len(r["data"]["notification_ids"]) for r in reads] == [1, 2, 2]
    assert {r["data"]["read_at"] for r in reads[1:]} == {marks["read_at"]}
    with core.unit_of_work(reader) as uow:
        nothing = mark_all_read(uow, reader)
    assert nothing["notification_ids"] == [] and nothing["read_at"]
    assert len(outbox(admin, shop.tenant, "notification.read")) == 3  # no new event


def test_the_snapshot_pages_every_item_with_its_marks_for_the_system_only(core, renderer):
    shop = Shop(core, renderer)
    for _ in range(3):
        shop.handle(shop.quote_event())
    reader = portal_actor(shop)
    newest = feed(core, reader)["items"][0]
    with core.unit_of_work(reader) as uow:
        marks = mark_read(uow, reader, newest["id"])

    def service_as(actor):
        context = Context(SimpleNamespace(data={ACTOR_KEY: actor.to_json()}))
        return worker_factory(NotifyService, db=WorkerDb(core, context), ctx=context)

    system = Actor(kind="system", id="system", tenant_id=shop.tenant)
    service = service_as(system)
    first = service.snapshot_notifications({"limit": 2})
    rest = service.snapshot_notifications({"limit": 2, "cursor": first["next_cursor"]})
    assert rest["next_cursor"] is None
    items = first["items"] + rest["items"]
    assert len(items) == 3
    assert [i["created_at"] for i in items] == sorted(i["created_at"] for i in items)
    by_id = {i["notification_id"]: i for i in items}
    assert by_id[newest["id"]]["reads"] == [
        {
            "reader_kind": "portal",
            "reader_id": reader.id,
            "read_at": by_id[newest["id"]]["reads"][0]["read_at"],
        }
    ]
    assert datetime.fromisoformat(
        by_id[newest["id"]]["reads"][0]["read_at"]
    ) == datetime.fromisoformat(marks["read_at"])
    for item in items:  # the shape of notification.created, plus the marks
        assert validate_data(
            "notification.created", {k: v for k, v in item.items() if k != "reads"}
        )
    for caller in (shop.staff_actor(), reader):
        with pytest.raises(Forbidden):
            service_as(caller).snapshot_notifications({})
