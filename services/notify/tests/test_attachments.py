"""Email attachments: the pure rules, the MIME message, and a delivery end to end.

The service-level tests plan an event's deliveries against a real PostgreSQL (notify
migrations, RLS-bound role), store a real PDF (kit.pdf) in a real blob store and send
through the real SMTP catcher (portico.devmail).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import pytest
from marshmallow import Schema, ValidationError
from sqlalchemy import text

from contracts.notify import attachments_field
from kit.blobs import BlobStore
from kit.pdf import Document, render
from portico.devmail import DevMailServer
from services.notify import attachments as rules
from services.notify.attachments import (
    MAX_ATTACHMENTS,
    MAX_MESSAGE_BYTES,
    AttachmentError,
    AttachmentRef,
    check_size,
    requested,
    stored,
)
from services.notify.channels import (
    EmailMessageSpec,
    FileSmsSender,
    MailAttachment,
    Renderer,
    SmtpSender,
)
from services.notify.models import Contact, Customer, Tenant, metadata
from services.notify.sending import Senders, deliver
from services.notify.service import _store_plan
from tests.support import scratch_service

FROM = "Portico <no-reply@portico.test>"
PDF = render(Document(title="Estimate E-1001", paragraphs=["Brake pads: 120.00 €"]))
SHA = hashlib.sha256(PDF).hexdigest()


def ref(**changes):
    values = {"sha256": SHA, "filename": "Estimate E-1001.pdf", "content_type": "application/pdf"}
    return {**values, **changes}


# ----------------------------------------------------------------------- pure rules


def test_an_event_without_attachments_asks_for_none():
    assert requested({}) == ()
    assert requested({"attachments": None}) == ()


def test_requested_attachments_become_references():
    [one, two] = requested(
        {"attachments": [ref(), ref(filename="Zoë.png", content_type="Image/PNG")]}
    )
    assert one == AttachmentRef(SHA, "Estimate E-1001.pdf", "application/pdf")
    assert (two.filename, two.maintype, two.subtype) == ("Zoë.png", "image", "png")
    assert stored([one.as_json(), two.as_json()]) == (one, two)
    assert stored(None) == ()


@pytest.mark.parametrize(
    "attachments, message",
    [
        ("file.pdf", "must be a list"),
        (["file.pdf"], "is an object"),
        ([ref(sha256="0" * 63)], "sha256"),
        ([ref(sha256=SHA.upper())], "sha256"),
        ([{"sha256": SHA, "filename": "x.pdf"}], "content_type"),
        ([ref(filename="")], "file name"),
        ([ref(filename="../../etc/passwd")], "path or control"),
        ([ref(filename="a\r\nBcc: evil@x.test")], "path or control"),
        ([ref(filename="x" * 201)], "file name"),
        ([ref(content_type="pdf")], "content type"),
        ([ref(content_type="text/html; charset=utf-8")], "content type"),
        ([ref()] * (MAX_ATTACHMENTS + 1), "at most"),
    ],
)
def test_malformed_attachment_lists_are_refused(attachments, message):
    with pytest.raises(AttachmentError, match=message):
        requested({"attachments": attachments})


@pytest.mark.parametrize(
    "item",
    [ref(sha256="0" * 63), ref(filename=""), ref(filename="a/b.pdf"), ref(content_type="pdf")],
)
def test_the_event_contract_refuses_what_notify_refuses(item):
    schema = Schema.from_dict({"attachments": attachments_field()})()
    assert schema.load({"attachments": [ref()]}) == {"attachments": [ref()]}
    assert schema.load({}) == {"attachments": None}
    with pytest.raises(ValidationError):
        schema.load({"attachments": [item]})
    with pytest.raises(AttachmentError):
        requested({"attachments": [item]})


def test_a_message_carries_at_most_the_size_limit():
    check_size([MAX_MESSAGE_BYTES - 1, 1])
    with pytest.raises(AttachmentError, match="more than"):
        check_size([MAX_MESSAGE_BYTES, 1])


# ---------------------------------------------------------------------- MIME building


def sender() -> SmtpSender:
    return SmtpSender("127.0.0.1", 25, FROM)


def spec(*files: MailAttachment) -> EmailMessageSpec:
    return EmailMessageSpec(
        to=["alice@cust.test"],
        subject="Your estimate",
        text="Hi",
        html="<p>Hi</p>",
        attachments=files,
    )


def test_without_attachments_the_message_stays_multipart_alternative():
    message = sender().build_message(spec())
    assert message.get_content_type() == "multipart/alternative"
    assert list(message.iter_attachments()) == []


def test_attachments_are_mime_parts_after_the_text_and_html():
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    message = sender().build_message(
        spec(
            MailAttachment(AttachmentRef(SHA, "Estimate E-1001.pdf", "application/pdf"), PDF),
            MailAttachment(AttachmentRef("1" * 64, "Unterschrift Zoë.png", "image/png"), png),
        )
    )
    assert message.get_content_type() == "multipart/mixed"
    body = message.get_body(preferencelist=("html", "plain"))
    assert body is not None and "<p>Hi</p>" in body.get_content()
    pdf, image = message.iter_attachments()
    assert (pdf.get_content_type(), pdf.get_filename()) == (
        "application/pdf",
        "Estimate E-1001.pdf",
    )
    assert pdf.get_content_disposition() == "attachment"
    assert pdf.get_content() == PDF
    assert (image.get_filename(), image.get_content()) == ("Unterschrift Zoë.png", png)


def test_attachments_over_the_message_limit_are_refused_before_sending():
    big = MailAttachment(
        AttachmentRef(SHA, "big.pdf", "application/pdf"), b"0" * (MAX_MESSAGE_BYTES + 1)
    )
    with pytest.raises(AttachmentError, match="more than"):
        spec(big)


# ------------------------------------------------------------------- service level


@pytest.fixture(scope="module")
def database():
    with scratch_service("notify", metadata, autocommit=True) as scratch:
        yield scratch


@pytest.fixture(scope="module")
def core(database):
    return database.core


@pytest.fixture(scope="module")
def admin(database):
    return database.owner


@pytest.fixture
def mail(tmp_path):
    with DevMailServer("127.0.0.1", 0, tmp_path / "mail") as server:
        yield server


@pytest.fixture
def blobs(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    store.ensure_root()
    return store


@pytest.fixture
def senders(mail, tmp_path, blobs):
    return Senders(
        email=SmtpSender("127.0.0.1", mail.port, FROM, timeout=5),
        sms=FileSmsSender(tmp_path / "sms"),
        renderer=Renderer(),
        blobs=blobs,
    )


def plan(core, attachments):
    """A tenant with one contact (email and SMS) and a quote event asking for files;
    returns the ids of the deliveries the planner stored."""
    tenant, customer = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    event = {
        "id": str(uuid.uuid4()),
        "type": "quote_request.approval_requested",
        "version": 1,
        "tenant_id": tenant,
        "occurred_at": now.isoformat(),
        "actor": {"kind": "system", "id": "system", "name": "Portico"},
        "data": {
            "quote_request_id": str(uuid.uuid4()),
            "number": "Q-000042",
            "customer_id": customer,
            "status": "customer_approval_needed",
            "description": "Brakes squeal",
            "created_by": str(uuid.uuid4()),
            "created_by_customer": False,
            "visible_to_customer": True,
            "version": 3,
            "attachments": attachments,
        },
    }
    with core.unit_of_work(tenant_id=tenant) as uow:
        uow.session.add(
            Tenant(id=tenant, tenant_id=tenant, slug="acme", name="Acme", source_occurred_at=now)
        )
        uow.session.add(
            Customer(id=customer, tenant_id=tenant, name="Fleet Co", source_occurred_at=now)
        )
        uow.session.add(
            Contact(
                id=str(uuid.uuid4()),
                tenant_id=tenant,
                customer_id=customer,
                name="Bob",
                email="bob@cust.test",
                phone="+15550001",
                notify_by="both",
                source_occurred_at=now,
            )
        )
        uow.session.flush()
        return _store_plan(uow, Renderer(), event, "https://portal.test")


def rows(admin, ids):
    with admin.connect() as conn:
        return {
            r.channel: r
            for r in conn.execute(
                text("select * from notify.deliveries where id = any(cast(:ids as uuid[]))"),
                {"ids": ids},
            )
        }


def test_the_email_carries_the_pdf_from_the_blob_store(core, admin, senders, mail, blobs):
    assert blobs.put(PDF) == SHA
    ids = plan(core, [ref()])
    planned = rows(admin, ids)
    assert planned["email"].attachments == [ref()]
    assert planned["sms"].attachments is None  # files travel by email only

    assert deliver(core, senders, ids) == {"sent": 2}

    [message] = mail.messages()
    [part] = message.iter_attachments()
    assert (part.get_content_type(), part.get_filename()) == (
        "application/pdf",
        "Estimate E-1001.pdf",
    )
    assert part.get_content() == PDF
    assert "Q-000042" in message.get_body(preferencelist=("plain",)).get_content()


def test_a_file_missing_from_the_blob_store_fails_the_delivery_for_good(core, admin, senders, mail):
    ids = plan(core, [ref()])  # never stored
    assert deliver(core, senders, ids) == {"failed": 1, "sent": 1}
    email = rows(admin, ids)["email"]
    assert (email.status, email.attempts) == ("failed", 1)
    assert (
        email.last_error == f"attachment not in the blob store: Estimate E-1001.pdf (sha256 {SHA})"
    )
    assert mail.messages() == []  # the SMS went; no email without its file


def test_files_over_the_message_limit_fail_the_delivery_for_good(
    core, admin, tmp_path, mail, monkeypatch
):
    small = BlobStore(tmp_path / "small")
    first, second = small.put(b"a" * 600), small.put(b"b" * 600)
    senders = Senders(
        email=SmtpSender("127.0.0.1", mail.port, FROM, timeout=5),
        sms=FileSmsSender(tmp_path / "sms"),
        blobs=small,
    )
    ids = plan(core, [ref(sha256=first), ref(sha256=second, filename="b.pdf")])
    monkeypatch.setattr(rules, "MAX_MESSAGE_BYTES", 1000)  # two 600-byte files are over it
    assert deliver(core, senders, ids) == {"failed": 1, "sent": 1}
    email = rows(admin, ids)["email"]
    assert email.status == "failed" and "1200 bytes, more than the 1000" in email.last_error
    assert mail.messages() == []
