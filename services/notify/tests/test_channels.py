import json
import logging
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from aiosmtpd.controller import Controller
from jinja2.sandbox import SecurityError

from portico.devmail import DevMailServer, read_mailbox
from services.notify.channels import (
    DELIVERY_KEY_HEADER,
    EVENT_ID_HEADER,
    PART_SUFFIXES,
    PARTS,
    SMS_MAX_CHARS,
    DeliveryError,
    EmailMessageSpec,
    FileSmsSender,
    HttpSmsSender,
    Renderer,
    SmtpSender,
    sms_sender_from_config,
)
from services.notify.domain import Recipient, notifying_event_types
from services.notify.sandbox import TenantSandbox

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
REPO_ROOT = Path(__file__).resolve().parents[3]
PORTAL = "https://portal.example.test/acme/"
QUOTE_ID = "6f1c2a10-0000-4000-8000-000000000123"
QUOTE_URL = f"https://portal.example.test/acme/quote-requests/{QUOTE_ID}"

SAMPLE_DATA = {
    "quote_request_id": QUOTE_ID,
    "number": "Q-000123",
    "description": "Replace <b>hydraulic</b> pump & seals",
    "status": "customer_approval_needed",
    "po_number": "PO-7781",
    "reason": "Too expensive <right now>",
    "comment_body": "Can you do Tuesday? <script>alert(1)</script>",
    "author_name": "Dana Author",
    "customer_name": "Globex Freight",
    "assigned_to": "s-sam",
    "author_kind": "staff",
    "created_by_customer": False,
    "visible_to_customer": True,
}

CONTACT = Recipient("contact", "c-alice", "Alice Contact", email="alice@cust.test")
STAFF_EMAIL = "sam@shop.test"
STAFF = Recipient("staff", "s-sam", "Sam Staff", email=STAFF_EMAIL)

# Event-specific data each template must show (to the given recipient kinds).
MUST_SHOW = {
    "quote_request.approved": ["PO-7781"],
    "quote_request.denied": ["Too expensive"],
    "quote_request.cancelled": ["Too expensive"],
    "quote_request.comment_added": ["Can you do Tuesday?"],
}


# Events about a quote; sign-in links have their own data and tests.
QUOTE_NOTIFYING = [t for t in notifying_event_types() if t.startswith("quote_request.")]
LINK_DATA: dict[str, Any] = {
    "purpose": "invitation",
    "subject_kind": "portal",
    "subject_id": "7d1c2a10-0000-4000-8000-000000000456",
    "customer_id": None,
    "email": "nina@cust.test",
    "name": "Nina <Newbie>",
    "token": "t/k+n=1&x",
    "expires_at": "2030-01-02T03:04:05+00:00",
}


def make_event(event_type, data=None, tenant_id="tenant-1"):
    return {
        "id": "evt-0001",
        "type": event_type,
        "version": 1,
        "occurred_at": "2026-01-02T03:04:05Z",
        "tenant_id": tenant_id,
        "data": dict(SAMPLE_DATA if data is None else data),
    }


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def strict_renderer():
    return Renderer(TEMPLATES, strict=True)


# ------------------------------------------------------------------- templates


def test_every_notifying_event_has_all_template_files():
    for name in [*notifying_event_types(), "default"]:
        # sign-in links never go to a feed: no in-app text of their own
        in_app = ("in_app",) if name != "auth.link_issued" else ()
        for part in (*PARTS, *in_app):
            path = TEMPLATES / f"{name}.{PART_SUFFIXES[part]}"
            assert path.is_file(), path


@pytest.mark.parametrize("recipient", [CONTACT, STAFF], ids=["contact", "staff"])
@pytest.mark.parametrize("event_type", [*QUOTE_NOTIFYING, "something.else"])
def test_every_in_app_text_renders(strict_renderer, event_type, recipient):
    ctx = Renderer.context(
        make_event(event_type), recipient, tenant_name="Acme Repair", portal_base=PORTAL
    )
    msg = strict_renderer.render_context(ctx, ("subject", "in_app"))
    assert msg.subject and msg.in_app
    assert "\n" not in msg.in_app and len(msg.in_app) <= 500
    assert QUOTE_URL not in msg.in_app  # the item carries its link separately
    assert (msg.text, msg.html, msg.sms) == ("", "", "")
    for needle in MUST_SHOW.get(event_type, []):
        assert needle in msg.in_app


def test_a_new_request_reads_differently_for_its_assignee_and_for_the_roles(strict_renderer):
    data = {**SAMPLE_DATA, "created_by_customer": True, "assigned_to": None}
    event = make_event("quote_request.created", data)
    told = strict_renderer.render(event, STAFF, tenant_name="Acme", portal_base=PORTAL)
    assert told.subject == "New quote request Q-000123 from Globex Freight"
    assert "is waiting for the shop" in told.text and "assigned to you" not in told.sms
    event = make_event("quote_request.created", {**data, "assigned_to": STAFF.id})
    mine = strict_renderer.render(event, STAFF, tenant_name="Acme", portal_base=PORTAL)
    assert mine.subject == "New quote request Q-000123 from Globex Freight assigned to you"


@pytest.mark.parametrize("recipient", [CONTACT, STAFF], ids=["contact", "staff"])
@pytest.mark.parametrize("event_type", [*QUOTE_NOTIFYING, "something.else"])
def test_every_template_renders_every_variable(strict_renderer, event_type, recipient):
    msg = strict_renderer.render(
        make_event(event_type), recipient, tenant_name="Acme Repair", portal_base=PORTAL
    )
    for part in (msg.subject, msg.text, msg.sms):
        assert "Q-000123" in part
    for part in (msg.text, msg.html, msg.sms):
        assert QUOTE_URL in part
    assert recipient.name in msg.text
    assert recipient.name in msg.html
    assert "Acme Repair" in msg.text
    assert "\n" not in msg.subject and msg.subject.strip() == msg.subject
    assert 0 < len(msg.sms) <= SMS_MAX_CHARS
    # html is autoescaped, text is not
    assert "<script>" not in msg.html
    assert "<right now>" not in msg.html
    assert "<b>hydraulic" not in msg.html
    assert msg.html.lstrip().startswith("<!DOCTYPE html>")
    assert f'href="{QUOTE_URL}"' in msg.html
    for needle in MUST_SHOW.get(event_type, []):
        assert needle in msg.text
        assert needle in msg.html


def test_text_part_is_not_html_escaped(strict_renderer):
    msg = strict_renderer.render(
        make_event("quote_request.comment_added"),
        CONTACT,
        tenant_name="Acme & Sons",
        portal_base=PORTAL,
    )
    assert "<script>alert(1)</script>" in msg.text
    assert "Acme & Sons" in msg.text
    assert "&lt;script&gt;" in msg.html
    assert "Acme &amp; Sons" in msg.html


def test_templates_distinguish_staff_and_customer(strict_renderer):
    event = make_event("quote_request.approved")
    to_contact = strict_renderer.render(event, CONTACT, tenant_name="Acme", portal_base=PORTAL)
    to_staff = strict_renderer.render(event, STAFF, tenant_name="Acme", portal_base=PORTAL)
    assert to_contact.subject == "Quote Q-000123 approved - thank you"
    assert to_staff.subject == "Globex Freight approved quote Q-000123"


@pytest.mark.parametrize("event_type", [*QUOTE_NOTIFYING, "default"])
@pytest.mark.parametrize("kind", ["contact", "staff"])
def test_raw_sms_templates_stay_short_with_long_values(strict_renderer, event_type, kind):
    long = dict(SAMPLE_DATA)
    for key in ("description", "reason", "comment_body", "author_name", "customer_name"):
        long[key] = "x" * 2000
    long["po_number"] = "P" * 60
    event = make_event(event_type, long)
    ctx = Renderer.context(
        event, {"name": "Y" * 200, "kind": kind}, tenant_name="T" * 200, portal_base=PORTAL
    )
    raw = strict_renderer.render_part("sms", event, ctx)
    assert len(" ".join(raw.split())) <= SMS_MAX_CHARS


@pytest.mark.parametrize("event_type", [*QUOTE_NOTIFYING, "something.else"])
def test_templates_tolerate_minimal_event_data(event_type):
    renderer = Renderer(TEMPLATES)
    event = make_event(event_type, {"quote_request_id": QUOTE_ID, "number": "Q-000009"})
    for recipient in (CONTACT, STAFF):
        msg = renderer.render(event, recipient, tenant_name="Acme", portal_base=PORTAL)
        assert "Q-000009" in msg.subject
        assert "None" not in msg.text
        assert "None" not in msg.sms


@pytest.mark.parametrize(
    ("purpose", "path", "subject"),
    [
        ("invitation", "/invitations/accept", "You are invited to the Acme Repair portal"),
        ("password_reset", "/password-reset", "Reset your Acme Repair password"),
    ],
)
def test_sign_in_link_templates(strict_renderer, purpose, path, subject):
    event = make_event("auth.link_issued", {**LINK_DATA, "purpose": purpose})
    recipient = Recipient("portal", LINK_DATA["subject_id"], "Nina <Newbie>", email="n@x.test")
    msg = strict_renderer.render(event, recipient, tenant_name="Acme Repair", portal_base=PORTAL)
    link = f"https://portal.example.test/acme{path}?token=t%2Fk%2Bn%3D1%26x"
    assert msg.subject == subject
    assert link in msg.text and link in msg.sms
    assert f'href="{link.replace("&", "&amp;")}"' in msg.html
    assert "2030-01-02 03:04 UTC" in msg.text and "2030-01-02 03:04 UTC" in msg.html
    assert "Nina <Newbie>" in msg.text and "Nina &lt;Newbie&gt;" in msg.html
    assert ("did not ask for it" in msg.text) == (purpose == "password_reset")


def test_unknown_event_uses_default_templates(strict_renderer):
    msg = strict_renderer.render(
        make_event("work_order.completed", {"status": "completed"}),
        {"name": "Zed"},
        tenant_name="Acme",
        portal_base="https://portal.example.test",
    )
    assert msg.subject == "Acme: update on your account"
    assert "work order completed" in msg.text
    assert "https://portal.example.test" in msg.sms
    assert "Zed" in msg.html


def test_portal_url_is_quoted():
    ctx = Renderer.context(
        make_event("quote_request.approved", {"quote_request_id": "a/b c"}),
        CONTACT,
        tenant_name="Acme",
        portal_base="https://p.test/",
    )
    assert ctx["portal_url"] == "https://p.test/quote-requests/a%2Fb%20c"


def test_long_override_sms_is_cut_to_limit():
    renderer = Renderer(TEMPLATES, overrides=lambda t, e, p: "{{ data.description }}")
    msg = renderer.render(
        make_event("quote_request.approved", {**SAMPLE_DATA, "description": "word " * 200}),
        CONTACT,
        tenant_name="Acme",
        portal_base=PORTAL,
    )
    assert len(msg.sms) == SMS_MAX_CHARS
    assert msg.sms.endswith("…")


# ------------------------------------------------------------ tenant overrides


class Overrides:
    def __init__(self, table):
        self.table = table
        self.calls = []

    def __call__(self, tenant_id, event_type, part):
        self.calls.append((tenant_id, event_type, part))
        return self.table.get((tenant_id, event_type, part))


def test_tenant_override_takes_precedence_over_files():
    overrides = Overrides(
        {
            ("tenant-1", "quote_request.approved", "subject"): "Yay {{ data.number }}!",
            ("tenant-1", "quote_request.approved", "html"): "<p>{{ data.comment_body }}</p>",
        }
    )
    renderer = Renderer(TEMPLATES, overrides)
    mine = renderer.render(
        make_event("quote_request.approved"), CONTACT, tenant_name="Acme", portal_base=PORTAL
    )
    assert mine.subject == "Yay Q-000123!"
    assert mine.html.startswith("<p>Can you do Tuesday? &lt;script&gt;")
    assert "Q-000123" in mine.text and "Yay" not in mine.text  # text still from file

    other = renderer.render(
        make_event("quote_request.approved", tenant_id="tenant-2"),
        CONTACT,
        tenant_name="Acme",
        portal_base=PORTAL,
    )
    assert other.subject == "Quote Q-000123 approved - thank you"
    assert ("tenant-2", "quote_request.approved", "subject") in overrides.calls


def test_with_overrides_binds_a_lookup_and_leaves_the_original_alone():
    base = Renderer(TEMPLATES)
    bound = base.with_overrides(
        lambda _tenant, _event, part: "Bound {{ data.number }}" if part == "subject" else None
    )
    event = make_event("quote_request.approved")
    assert bound.render(event, CONTACT, tenant_name="Acme", portal_base=PORTAL).subject == (
        "Bound Q-000123"
    )
    assert base.render(event, CONTACT, tenant_name="Acme", portal_base=PORTAL).subject == (
        "Quote Q-000123 approved - thank you"
    )
    assert bound.with_overrides(None).render(
        event, CONTACT, tenant_name="Acme", portal_base=PORTAL
    ).subject == ("Quote Q-000123 approved - thank you")


def test_tenant_default_override_applies_to_events_without_own_template():
    overrides = Overrides({("tenant-1", "default", "sms"): "Acme news: {{ event.type }}"})
    renderer = Renderer(TEMPLATES, overrides)
    msg = renderer.render(
        make_event("work_order.completed", {}), CONTACT, tenant_name="Acme", portal_base=PORTAL
    )
    assert msg.sms == "Acme news: work_order.completed"
    # an event with its own file template keeps it
    quoted = renderer.render(
        make_event("quote_request.approved"), CONTACT, tenant_name="Acme", portal_base=PORTAL
    )
    assert "Acme news" not in quoted.sms


def test_override_typo_renders_leniently():
    renderer = Renderer(
        TEMPLATES, lambda t, e, p: "Quote {{ data.numbr }}{{ nope }} ok" if p == "text" else None
    )
    msg = renderer.render(
        make_event("quote_request.approved"), CONTACT, tenant_name="Acme", portal_base=PORTAL
    )
    assert msg.text == "Quote  ok\n"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ data.update({'number': 'hacked'}) }}",
        "{{ 'x' * 100000000 }}",
        "{{ 10 ** 100000 }}",
        "{% for x in %}",
        "{{ 1 + 'a' }}",
        "   ",
    ],
)
def test_broken_or_malicious_override_falls_back_to_file_template(source, caplog):
    renderer = Renderer(TEMPLATES, lambda t, e, p: source)
    with caplog.at_level(logging.WARNING, logger="services.notify.channels"):
        msg = renderer.render(
            make_event("quote_request.approved"), CONTACT, tenant_name="Acme", portal_base=PORTAL
        )
    assert msg.subject == "Quote Q-000123 approved - thank you"
    assert "Q-000123" in msg.sms and "class" not in msg.text
    if source.strip():
        assert "template override quote_request.approved/subject failed" in caplog.text


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ data.clear() }}",
        "{{ 'ab' * 6000 }}",
    ],
)
def test_sandbox_raises_security_error(source):
    with pytest.raises(SecurityError):
        TenantSandbox().from_string(source).render(data={"a": 1})


def test_sandbox_renders_plain_dunder_access_harmlessly():
    assert TenantSandbox().from_string("[{{ ''.__class__ }}]").render() == "[]"


def test_overrides_share_one_worker_process():
    renderer = Renderer(TEMPLATES, lambda t, e, p: "Hi {{ recipient.name }}")
    pids = set()
    for _ in range(3):
        msg = renderer.with_overrides(lambda t, e, p: "Hi {{ recipient.name }}").render(
            make_event("quote_request.approved"), CONTACT, tenant_name="A", portal_base=PORTAL
        )
        assert msg.subject == "Hi Alice Contact" and msg.problems == ()
        pids.add(renderer.sandbox.pid)
    assert len(pids) == 1 and None not in pids


# ------------------------------------------------------------------------ email


def test_smtp_sender_delivers_multipart_message_to_devmail(tmp_path):
    with DevMailServer("127.0.0.1", 0, tmp_path / "mail") as server:
        assert server.port != 0
        sender = SmtpSender("127.0.0.1", server.port, "Acme Repair <noreply@acme.test>")
        message_id = sender.send(
            ["Alice <alice@cust.test>", "bob@cust.test"],
            "Quote Q-000123 approved",
            "Plain body ü\n",
            "<p>HTML body ü</p>",
            {EVENT_ID_HEADER: "evt-0001", DELIVERY_KEY_HEADER: "email:abc"},
        )
        messages = server.messages()
    assert len(messages) == 1
    msg = messages[0]
    assert msg["Message-ID"] == message_id
    assert message_id.endswith("@acme.test>")
    assert msg["Subject"] == "Quote Q-000123 approved"
    assert msg["From"] == "Acme Repair <noreply@acme.test>"
    assert [a.addr_spec for a in msg["To"].addresses] == ["alice@cust.test", "bob@cust.test"]
    assert msg["X-Devmail-Rcpt-To"] == "alice@cust.test, bob@cust.test"
    assert msg["X-Devmail-Mail-From"] == "noreply@acme.test"
    assert msg[EVENT_ID_HEADER] == "evt-0001"
    assert msg[DELIVERY_KEY_HEADER] == "email:abc"
    assert msg.get_content_type() == "multipart/alternative"
    assert body(msg, "plain") == "Plain body ü\n"
    assert body(msg, "html").strip() == "<p>HTML body ü</p>"
    names = os.listdir(tmp_path / "mail")
    assert len(names) == 1 and names[0].endswith(".eml")
    stamp, counter, short = names[0][: -len(".eml")].split("-")
    assert stamp.endswith("Z") and counter == "000001" and len(short) == 8


def test_rendered_message_round_trip(tmp_path, strict_renderer):
    rendered = strict_renderer.render(
        make_event("quote_request.denied"), STAFF, tenant_name="Acme", portal_base=PORTAL
    )
    with DevMailServer("127.0.0.1", 0, tmp_path) as server:
        SmtpSender("127.0.0.1", server.port, "noreply@acme.test").send(
            [STAFF_EMAIL], rendered.subject, rendered.text, rendered.html, {}
        )
        SmtpSender("127.0.0.1", server.port, "noreply@acme.test").send(
            [STAFF_EMAIL], "second", "two", "<p>two</p>"
        )
    first, second = read_mailbox(tmp_path)
    assert first["Subject"] == "Globex Freight denied quote Q-000123"
    assert "Too expensive <right now>" in body(first, "plain")
    assert "Too expensive &lt;right now&gt;" in body(first, "html")
    assert second["Subject"] == "second"


def test_smtp_sender_to_closed_port_is_transient():
    sender = SmtpSender("127.0.0.1", free_port(), "noreply@acme.test", timeout=2)
    with pytest.raises(DeliveryError) as info:
        sender.send(["a@cust.test"], "s", "t", "<p>h</p>", {})
    assert info.value.transient is True


class RefusingHandler:
    """Real SMTP server that refuses some recipients, like a production MTA would."""

    def __init__(self):
        self.delivered = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("gone"):
            return "550 5.1.1 No such user"
        if address.startswith("busy"):
            return "450 4.2.1 Mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.delivered.append(list(envelope.rcpt_tos))
        return "250 OK"


@pytest.fixture
def refusing_smtp():
    handler = RefusingHandler()
    controller = Controller(
        handler, hostname="127.0.0.1", port=free_port(), server_hostname="refuser"
    )
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


@pytest.mark.parametrize(
    ("to", "transient", "code"),
    [
        (["gone@cust.test"], False, 550),
        (["busy@cust.test"], True, 450),
        (["gone@cust.test", "busy@cust.test"], True, 550),
    ],
)
def test_smtp_recipient_refusals(refusing_smtp, to, transient, code):
    controller, handler = refusing_smtp
    sender = SmtpSender(controller.hostname, controller.port, "noreply@acme.test")
    with pytest.raises(DeliveryError) as info:
        sender.send(to, "s", "t", "<p>h</p>", {})
    assert info.value.transient is transient
    assert info.value.code == code
    assert to[0] in info.value.detail
    assert handler.delivered == []


def test_smtp_partial_refusal_still_delivers_to_the_rest(refusing_smtp, caplog):
    controller, handler = refusing_smtp
    sender = SmtpSender(controller.hostname, controller.port, "noreply@acme.test")
    with caplog.at_level(logging.WARNING, logger="services.notify.channels"):
        sender.send(["ok@cust.test", "gone@cust.test"], "s", "t", "<p>h</p>", {})
    assert handler.delivered == [["ok@cust.test"]]
    assert "gone@cust.test" in caplog.text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"to": []},
        {"to": ["not-an-address"]},
        {"to": ["a@x.test\r\nBcc: evil@x.test"]},
        {"headers": {"Subject": "x"}},
        {"headers": {"Bcc": "evil@x.test"}},
        {"headers": {"X-Bad Name": "x"}},
        {"headers": {EVENT_ID_HEADER: "evt\r\nBcc: evil@x.test"}},
    ],
)
def test_email_spec_validation(kwargs):
    base = {"to": ["a@x.test"], "subject": "s", "text": "t", "html": "h", "headers": {}}
    with pytest.raises(ValueError):
        EmailMessageSpec(**{**base, **kwargs})


def test_subject_line_breaks_cannot_inject_headers():
    sender = SmtpSender("127.0.0.1", 25, "noreply@acme.test")
    msg = sender.build_message(
        EmailMessageSpec(["a@x.test"], "Hi\r\nBcc: evil@x.test", "t", "<p>h</p>")
    )
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Hi Bcc: evil@x.test"


def test_smtp_sender_rejects_bad_from_address():
    with pytest.raises(ValueError):
        SmtpSender("127.0.0.1", 25, "nobody")


# ------------------------------------------------------------------------ devmail


def test_read_mailbox_ignores_missing_dir_and_partial_files(tmp_path):
    assert read_mailbox(tmp_path / "missing") == []
    (tmp_path / ".incoming-abc.tmp").write_bytes(b"Subject: partial\r\n\r\nhalf")
    (tmp_path / "20260101T000000.000000Z-000001-aaaaaaaa.eml").write_bytes(
        b"Subject: whole\r\n\r\nbody\r\n"
    )
    assert [m["Subject"] for m in read_mailbox(tmp_path)] == ["whole"]


def test_devmail_server_cannot_start_twice(tmp_path):
    with DevMailServer("127.0.0.1", 0, tmp_path) as server, pytest.raises(RuntimeError):
        server.start()
    assert not server.running


def wait_for_port(port, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.recv(1024)
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} never opened")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_devmail_cli_stores_messages_and_stops_cleanly_on_signal(tmp_path, sig):
    port = free_port()
    maildir = tmp_path / "var" / "mail"
    proc = subprocess.Popen(
        [sys.executable, "-m", "portico.devmail", "--port", str(port), "--dir", str(maildir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port)
        for n in range(2):
            with smtplib.SMTP("127.0.0.1", port, local_hostname="test", timeout=5) as smtp:
                smtp.sendmail(
                    "a@x.test", ["b@x.test"], f"Subject: hello {n}\r\n\r\nbody\r\n".encode()
                )
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert [m["Subject"] for m in read_mailbox(maildir)] == ["hello 0", "hello 1"]
    assert sorted(p.suffix for p in maildir.iterdir()) == [".eml", ".eml"]
    stored_lines = [line for line in output.splitlines() if " stored " in line]
    assert len(stored_lines) == 2
    assert "subject='hello 0'" in stored_lines[0]
    assert "shutting down" in output


# -------------------------------------------------------------------------- sms


def test_file_sms_sender_appends_json_lines(tmp_path):
    sender = FileSmsSender(tmp_path / "sms")
    first = sender.send("+15550001", "Quote Q-1 ready", {DELIVERY_KEY_HEADER: "sms:k1"})
    second = sender.send("+15550002", "Second ✓")
    assert first != second
    lines = (tmp_path / "sms" / "sms.log").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [first, second]
    assert records[0]["to"] == "+15550001"
    assert records[0]["body"] == "Quote Q-1 ready"
    assert records[0]["reference"] == "sms:k1"
    assert records[1]["body"] == "Second ✓"


@pytest.mark.parametrize(("to", "body"), [("", "hi"), ("+1555", "  ")])
def test_sms_senders_reject_empty_input(tmp_path, to, body):
    with pytest.raises(ValueError):
        FileSmsSender(tmp_path).send(to, body)


def body(msg: EmailMessage, kind: str) -> str:
    """The message's ``text/<kind>`` part, decoded."""
    part = msg.get_body((kind,))
    assert part is not None, f"no text/{kind} part"
    return part.get_content()


class RecordingServer(ThreadingHTTPServer):
    requests: list[tuple[str, dict[str, str], Any]]


class SmsGateway(BaseHTTPRequestHandler):
    server: RecordingServer

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        self.server.requests.append((self.path, dict(self.headers), json.loads(body)))
        if self.path == "/slow":
            time.sleep(1.0)
        status, payload = {
            "/ok": (200, {"id": "prov-42"}),
            "/ok-no-id": (202, {}),
            "/slow": (200, {}),
            "/fail": (500, {"error": "boom"}),
            "/busy": (429, {"error": "slow down"}),
            "/bad": (400, {"error": "invalid number"}),
            "/auth": (401, {"error": "bad token"}),
        }[self.path]
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def gateway():
    server = RecordingServer(("127.0.0.1", 0), SmsGateway)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_sms_sender_posts_json_with_bearer_token(gateway):
    server, base = gateway
    sender = HttpSmsSender(f"{base}/ok", "s3cret", timeout=5)
    result = sender.send("+15550001", "Quote ready", {DELIVERY_KEY_HEADER: "sms:key-1"})
    assert result == "prov-42"
    path, headers, body = server.requests[0]
    assert body == {"to": "+15550001", "body": "Quote ready", "reference": "sms:key-1"}
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Idempotency-Key"] == "sms:key-1"
    assert headers["Content-Type"] == "application/json"


def test_http_sms_sender_falls_back_to_reference_as_id(gateway):
    server, base = gateway
    sender = HttpSmsSender(f"{base}/ok-no-id", "t", timeout=5)
    assert sender.send("+1", "hi", {EVENT_ID_HEADER: "evt-9"}) == "evt-9"


@pytest.mark.parametrize(
    ("path", "transient", "code"),
    [("/fail", True, 500), ("/busy", True, 429), ("/bad", False, 400), ("/auth", False, 401)],
)
def test_http_sms_sender_classifies_errors(gateway, path, transient, code):
    _, base = gateway
    with pytest.raises(DeliveryError) as info:
        HttpSmsSender(f"{base}{path}", "s3cret", timeout=5).send("+1", "hi", {})
    assert info.value.transient is transient
    assert info.value.code == code
    assert "s3cret" not in info.value.detail


def test_http_sms_sender_timeout_is_transient(gateway):
    _, base = gateway
    with pytest.raises(DeliveryError) as info:
        HttpSmsSender(f"{base}/slow", "t", timeout=0.2).send("+1", "hi", {})
    assert info.value.transient is True


def test_http_sms_sender_connection_refused_is_transient():
    with pytest.raises(DeliveryError) as info:
        HttpSmsSender(f"http://127.0.0.1:{free_port()}/sms", "t", timeout=2).send("+1", "hi")
    assert info.value.transient is True


def test_http_sms_sender_invalid_url_is_permanent():
    with pytest.raises(DeliveryError) as info:
        HttpSmsSender("not a url", "t").send("+1", "hi")
    assert info.value.transient is False


def test_http_sms_sender_uses_given_session(gateway):
    server, base = gateway
    session = requests.Session()
    session.headers["User-Agent"] = "portico-notify-test"
    HttpSmsSender(f"{base}/ok", "t", session=session, timeout=5).send("+1", "hi")
    assert server.requests[0][1]["User-Agent"] == "portico-notify-test"


def test_sms_sender_from_config(tmp_path):
    http = sms_sender_from_config("https://sms.example.test/send", "tok", tmp_path)
    assert isinstance(http, HttpSmsSender) and http.url == "https://sms.example.test/send"
    local = sms_sender_from_config(None, None, tmp_path)
    assert isinstance(local, FileSmsSender) and local.path == tmp_path / "sms.log"
    assert isinstance(sms_sender_from_config("", "tok", tmp_path), FileSmsSender)
    with pytest.raises(ValueError):
        sms_sender_from_config("https://sms.example.test/send", None, tmp_path)
