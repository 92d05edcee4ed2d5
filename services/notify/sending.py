"""Sending deliveries: claim rows with a lease, render, hand them over, record the outcome.

A claimed row that was never rendered is rendered first, outside any transaction
(tenant template overrides run in the sandbox worker with hard limits; one that
fails leaves the built-in template and a ``template_error`` on the row), and the
rendered message is stored before it is handed over. A claim (``status='sending'``, ``lease_until``, ``attempts + 1``) is committed before
anything leaves the process, and the outcome is recorded in a second transaction, so
no message is ever sent from inside a database transaction. A sender that dies after
claiming leaves its rows ``sending``; once the lease expires the sweep claims and sends
them again. Delivery is therefore at least once, deduplicated per (event, recipient,
channel) by ``delivery_key``, which also travels as a message header.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import Counter
from sqlalchemy import CursorResult, Table, and_, case, func, or_, select, update

from contracts.events import PRIVATE_EVENTS
from kit.blobs import BlobStore, store_from_settings
from kit.config import Settings, env_float
from kit.db import DatabaseCore
from kit.errors import NotFound
from services.notify import attachments, domain
from services.notify.channels import (
    DELIVERY_KEY_HEADER,
    EVENT_ID_HEADER,
    PARTS_BY_CHANNEL,
    DeliveryError,
    MailAttachment,
    Renderer,
    SmsSender,
    SmtpSender,
    sms_sender_from_config,
)
from services.notify.models import Delivery, TemplateOverride

log = logging.getLogger(__name__)

SWEEP_BATCH = 100
# How long a claim holds a row before the sweep may hand it to another sender. The
# default suits production; tests that kill a sender shorten it to see the take-over.
LEASE_SECONDS = env_float("NOTIFY_LEASE_SECONDS", domain.LEASE_SECONDS)

DELIVERIES = Counter(
    "portico_notify_deliveries_total",
    "Delivery attempts by channel and resulting status",
    ["channel", "status"],
)

_T = cast(Table, Delivery.__table__)
_CLAIMED = (
    _T.c.id,
    _T.c.tenant_id,
    _T.c.event_id,
    _T.c.event_type,
    _T.c.delivery_key,
    _T.c.channel,
    _T.c.address,
    _T.c.subject,
    _T.c.body_text,
    _T.c.body_html,
    _T.c.sms_body,
    _T.c.context,
    _T.c.attachments,
    _T.c.attempts,
)


@dataclass(frozen=True, slots=True)
class Senders:
    email: SmtpSender
    sms: SmsSender
    renderer: Renderer = field(default_factory=Renderer)
    blobs: BlobStore | None = None  # where attached files are read from


def senders_from_settings(settings: Settings) -> Senders:
    return Senders(
        email=SmtpSender(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_from,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password,
        ),
        sms=sms_sender_from_config(
            settings.sms_http_url, settings.sms_http_token, settings.sms_dir
        ),
        renderer=Renderer(),
        blobs=store_from_settings(settings),
    )


def _claimable() -> Any:
    expired = and_(_T.c.status == "sending", _T.c.lease_until < func.now())
    return and_(
        or_(_T.c.status == "pending", expired),
        _T.c.next_attempt_at <= func.now(),
        _T.c.attempts < domain.MAX_ATTEMPTS,
    )


def _claim(core: DatabaseCore, where: Any) -> list[Any]:
    with core.unit_of_work(worker=True) as uow:
        return list(
            uow.session.execute(
                update(_T)
                .where(where)
                .values(
                    status="sending",
                    lease_until=func.now() + timedelta(seconds=LEASE_SECONDS),
                    attempts=_T.c.attempts + 1,
                )
                .returning(*_CLAIMED)
            )
        )


def claim(core: DatabaseCore, ids: Sequence[str]) -> list[Any]:
    """Lease the given deliveries, if they are still due and not leased by another."""
    if not ids:
        return []
    return _claim(core, and_(_T.c.id.in_(list(ids)), _claimable()))


def claim_due(core: DatabaseCore, batch: int = SWEEP_BATCH) -> list[Any]:
    """Lease up to ``batch`` due deliveries of any tenant, skipping rows others hold."""
    due = (
        select(_T.c.id)
        .where(_claimable())
        .order_by(_T.c.next_attempt_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    return _claim(core, _T.c.id.in_(due.scalar_subquery()))


Overrides = dict[tuple[str, str], str]


def _overrides(core: DatabaseCore, tenant_id: str, cache: dict[str, Overrides]) -> Overrides:
    """The tenant's template overrides, read once per batch in the tenant's own scope."""
    if tenant_id not in cache:
        with core.unit_of_work(tenant_id=tenant_id) as uow:
            cache[tenant_id] = {
                (o.event_type, o.part): o.source
                for o in uow.session.scalars(select(TemplateOverride))
            }
    return cache[tenant_id]


def _rendered(core: DatabaseCore, renderer: Renderer, row: Any, cache: dict[str, Overrides]) -> Any:
    """The row with its message, rendering and storing it first if it has none yet."""
    if row.context is None:
        return row
    table = _overrides(core, str(row.tenant_id), cache)
    bound = renderer.with_overrides(lambda _tenant, name, part: table.get((name, part)))
    message = bound.render_context(row.context, PARTS_BY_CHANNEL[row.channel])
    email = row.channel == "email"
    values = {
        "subject": message.subject if email else None,
        "body_text": message.text if email else None,
        "body_html": message.html if email else None,
        "sms_body": None if email else message.sms,
        "template_error": "; ".join(message.problems)[: domain.ERROR_MAX_CHARS] or None,
        "context": None,
    }
    with core.unit_of_work(worker=True) as uow:
        uow.session.execute(update(_T).where(_T.c.id == row.id).values(**values))
    return SimpleNamespace(**{**row._asdict(), **values})


def _files(blobs: BlobStore | None, stored: Any) -> list[MailAttachment]:
    """The row's attachments read from the blob store; a missing or oversized file is a
    permanent failure (it will not appear by retrying)."""
    refs = attachments.stored(stored)
    if not refs:
        return []
    if blobs is None:
        raise DeliveryError(False, "attachments requested but this sender has no blob store")
    try:
        attachments.check_size(blobs.size(ref.sha256) for ref in refs)
        return [MailAttachment(ref, blobs.get(ref.sha256)) for ref in refs]
    except NotFound as exc:
        missing = [ref for ref in refs if not blobs.exists(ref.sha256)]
        names = ", ".join(f"{ref.filename} (sha256 {ref.sha256})" for ref in missing)
        raise DeliveryError(False, f"attachment not in the blob store: {names}") from exc


def _hand_over(senders: Senders, row: Any) -> str:
    headers = {EVENT_ID_HEADER: str(row.event_id), DELIVERY_KEY_HEADER: row.delivery_key}
    if row.channel == "email":
        files = _files(senders.blobs, row.attachments)
        return senders.email.send(
            [row.address],
            row.subject or "",
            row.body_text or "",
            row.body_html or "",
            headers,
            files,
        )
    return senders.sms.send(row.address, row.sms_body or "", headers)


# Once a message of a private event is settled (sent or given up), its body (which
# holds a secret such as a sign-in link) is wiped; subject, address and status stay.
_WIPED_BODY = {"body_text": None, "body_html": None, "sms_body": None, "context": None}


def _record(core: DatabaseCore, row: Any, outcome: domain.Settlement, provider_id: str) -> None:
    wipe = _WIPED_BODY if row.event_type in PRIVATE_EVENTS and outcome.status != "pending" else {}
    with core.unit_of_work(worker=True) as uow:
        if outcome.status == "sent":
            # Whoever handed it over first wins; a later failure report cannot undo it.
            stmt = (
                update(_T)
                .where(_T.c.id == row.id, _T.c.status != "sent")
                .values(
                    status="sent",
                    sent_at=func.now(),
                    provider_message_id=provider_id,
                    lease_until=None,
                    **wipe,
                )
            )
        else:
            # Only the holder of this attempt's lease may report its failure.
            retry_at = func.now() + timedelta(seconds=outcome.retry_in or 0)
            stmt = (
                update(_T)
                .where(_T.c.id == row.id, _T.c.status == "sending", _T.c.attempts == row.attempts)
                .values(
                    status=outcome.status,
                    last_error=outcome.error,
                    lease_until=None,
                    next_attempt_at=retry_at
                    if outcome.status == "pending"
                    else _T.c.next_attempt_at,
                    **wipe,
                )
            )
        uow.session.execute(stmt)


def send_claimed(core: DatabaseCore, senders: Senders, rows: Sequence[Any]) -> dict[str, int]:
    """Hand claimed rows over, one by one, and record each outcome; returns counts."""
    tally: Tally[str] = Tally()
    overrides: dict[str, Overrides] = {}
    for row in rows:
        provider_id = ""
        try:
            row = _rendered(core, senders.renderer, row, overrides)
            provider_id = _hand_over(senders, row)
            outcome = domain.settle(row.attempts)
        except DeliveryError as exc:
            outcome = domain.settle(row.attempts, exc.detail, transient=exc.transient)
        except ValueError as exc:  # an address or body the channel can never accept
            outcome = domain.settle(row.attempts, f"invalid message: {exc}", transient=False)
        except Exception as exc:  # noqa: BLE001 - a bug must not strand the row; retry it
            log.exception("delivery %s: unexpected error", row.id)
            outcome = domain.settle(row.attempts, f"{type(exc).__name__}: {exc}")
        if outcome.error:
            log.warning("delivery %s attempt %d: %s", row.id, row.attempts, outcome.error)
        _record(core, row, outcome, provider_id)
        DELIVERIES.labels(row.channel, outcome.status).inc()
        tally[outcome.status] += 1
    return dict(tally)


def deliver(core: DatabaseCore, senders: Senders, ids: Sequence[str]) -> dict[str, int]:
    """Send the given new deliveries now (right after the commit that created them)."""
    return send_claimed(core, senders, claim(core, ids))


def sweep(core: DatabaseCore, senders: Senders, batch: int = SWEEP_BATCH) -> dict[str, int]:
    """One round: give up on rows abandoned on their last attempt, send what is due."""
    tally: Tally[str] = Tally()
    with core.unit_of_work(worker=True) as uow:
        result = uow.session.execute(
            update(_T)
            .where(
                _T.c.status == "sending",
                _T.c.lease_until < func.now(),
                _T.c.attempts >= domain.MAX_ATTEMPTS,
            )
            .values(
                status="failed",
                lease_until=None,
                last_error=domain.abandoned_lease_error(domain.MAX_ATTEMPTS),
                **{
                    name: case((_T.c.event_type.in_(PRIVATE_EVENTS), None), else_=_T.c[name])
                    for name in _WIPED_BODY
                },
            )
        )
        abandoned = cast(CursorResult[Any], result).rowcount
    if abandoned:
        tally["failed"] += abandoned
    rows = claim_due(core, batch)
    tally.update(send_claimed(core, senders, rows))
    tally["claimed"] = len(rows)
    return dict(tally)
