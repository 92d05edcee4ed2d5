"""Events over RabbitMQ: topology, publishing with confirms, the outbox relay,
and a consumer entrypoint with back-off retries and a dead-letter queue.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

import amqp.exceptions
from kombu import Connection, Exchange, Queue
from kombu.exceptions import OperationalError
from nameko.amqp.publish import Publisher
from nameko.messaging import Consumer, QueueConsumer
from sqlalchemy import select, update

from contracts.catalogue import (
    SUBSCRIPTIONS,
    dead_queue_name,
    queue_name,
    retry_queue_name,
)
from contracts.events import (
    EXCHANGE,
    INTEGRATION_EXCHANGE,
    PRIVATE_EVENTS,
    integration_routing_key,
    parse_envelope,
)
from kit.db import DatabaseCore, utcnow

log = logging.getLogger(__name__)

events_exchange = Exchange(EXCHANGE, type="topic", durable=True)
# Every event but the private ones again, keyed <tenant_id>.<type>, for integrations.
integration_exchange = Exchange(INTEGRATION_EXCHANGE, type="topic", durable=True)
# Operators replay dead letters through this exchange, which routes only to the services'
# event queues (routing key = queue name): the default exchange would reach every queue,
# the RPC queues included, so operator accounts may not publish there.
REPLAY_EXCHANGE = "portico.replay"
replay_exchange = Exchange(REPLAY_EXCHANGE, type="direct", durable=True)
MAX_RETRY_TIERS = 4  # retry queues declared per consumer; delays come from config


def consumer_queue(service: str) -> Queue:
    # The binding keys live in the catalogue; the setup step declares them.
    return Queue(
        queue_name(service),
        exchange=events_exchange,
        routing_key=None,
        durable=True,
        no_declare=True,
    )


def declare_topology(amqp_uri: str, services: Iterable[str] | None = None) -> list[str]:
    """Declare the exchange, every consumer queue, binding, retry tier and DLQ.

    Idempotent, like a migration: run by ``portico setup`` before services start.
    """
    declared = []
    with Connection(amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        events_exchange(channel).declare()
        integration_exchange(channel).declare()
        replay_exchange(channel).declare()
        for service, patterns in SUBSCRIPTIONS.items():
            if services is not None and service not in services:
                continue
            main = Queue(queue_name(service), durable=True, channel=channel)
            main.declare()
            for pattern in patterns:
                channel.queue_bind(queue_name(service), EXCHANGE, pattern)
            channel.queue_bind(queue_name(service), REPLAY_EXCHANGE, queue_name(service))
            for tier in range(1, MAX_RETRY_TIERS + 1):
                Queue(
                    retry_queue_name(service, tier),
                    durable=True,
                    channel=channel,
                    # expired messages go back to the main queue via the default exchange
                    queue_arguments={
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": queue_name(service),
                    },
                ).declare()
            Queue(dead_queue_name(service), durable=True, channel=channel).declare()
            declared.append(queue_name(service))
    return declared


class EventPublisher:
    """Publishes envelopes with publisher confirms: returns only once the broker has them.

    Every event leaves here, so here it is also published a second time, with its own
    confirm, on the integration exchange (except private events). A failure of either
    leaves the outbox row unsent; the relay then publishes both again (at least once).
    """

    def __init__(self, amqp_uri: str) -> None:
        self._publisher = Publisher(
            amqp_uri,
            use_confirms=True,
            serializer="json",
            exchange=events_exchange,
            delivery_mode=2,
            retry=True,
            retry_policy={
                "max_retries": 2,
                "interval_start": 0.2,
                "interval_step": 0.5,
                "interval_max": 1,
            },
        )

    def publish(self, envelope: dict[str, Any]) -> None:
        self._publisher.publish(
            envelope,
            routing_key=envelope["type"],
            message_id=envelope["id"],
            type=envelope["type"],
            headers={
                "x-tenant-id": envelope["tenant_id"],
                "x-correlation-id": envelope.get("correlation_id") or "",
            },
        )
        if envelope["type"] not in PRIVATE_EVENTS:
            self._publisher.publish(
                envelope,
                exchange=integration_exchange,
                routing_key=integration_routing_key(envelope),
                message_id=envelope["id"],
                type=envelope["type"],
            )


def publish_committed(
    core: DatabaseCore, publisher: EventPublisher, envelopes: list[dict[str, Any]]
) -> None:
    """Right after a commit: publish its events and mark them sent.

    A failure here loses nothing: the rows stay unsent and the relay retries them.
    """
    sent = []
    try:
        for envelope in envelopes:
            publisher.publish(envelope)
            sent.append(envelope["id"])
    except Exception as exc:  # noqa: BLE001 - the relay will pick them up
        log.warning("post-commit publish failed, relay will retry: %s", exc)
    if sent and core.outbox is not None:
        try:
            # One commit's events belong to one tenant: mark them in that tenant's scope.
            with core.unit_of_work(tenant_id=envelopes[0]["tenant_id"]) as uow:
                uow.session.execute(
                    update(core.outbox)
                    .where(core.outbox.c.id.in_(sent))
                    .values(published_at=utcnow())
                )
        except Exception as exc:  # noqa: BLE001 - duplicates are harmless, consumers dedupe
            log.warning("could not mark events sent: %s", exc)


def relay_once(
    core: DatabaseCore, publisher: EventPublisher, *, min_age: float = 2.0, batch: int = 500
) -> int:
    """Publish outbox rows the post-commit step missed; safe with many relays at once."""
    if core.outbox is None:
        return 0
    outbox = core.outbox
    published = 0
    with core.unit_of_work(worker=True) as uow:  # every tenant's unpublished rows
        rows = uow.session.execute(
            select(outbox.c.id, outbox.c.envelope)
            .where(outbox.c.published_at.is_(None))
            .where(outbox.c.created_at < _ago(min_age))
            .order_by(outbox.c.created_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            try:
                publisher.publish(row.envelope)
            except Exception as exc:  # noqa: BLE001 - keep what was sent, retry the rest
                log.warning("relay publish failed (%d sent this round): %s", published, exc)
                uow.session.execute(
                    update(outbox)
                    .where(outbox.c.id == row.id)
                    .values(attempts=outbox.c.attempts + 1)
                )
                break
            uow.session.execute(
                update(outbox).where(outbox.c.id == row.id).values(published_at=utcnow())
            )
            published += 1
    return published


def _ago(seconds: float) -> Any:
    from datetime import timedelta

    return utcnow() - timedelta(seconds=seconds)


# What a lost broker connection raises: the socket's own errors (a broken pipe on an
# ack), amqp's connection errors and kombu's wrapper around both.
BROKER_ERRORS = (OSError, amqp.exceptions.ConnectionError, OperationalError)


class SafeQueueConsumer(QueueConsumer):
    """nameko's queue consumer, but an ack or requeue that meets a connection already
    gone is only logged. nameko catches amqp's ``ConnectionError`` there but not the
    socket's own (``BrokenPipeError``), which escaped and killed the whole service
    when the broker dropped while a worker was finishing. An unacked message is given
    back by the broker when the connection dies, and every consumer here is idempotent.
    """

    def ack_message(self, message: Any) -> None:
        try:
            super().ack_message(message)
        except BROKER_ERRORS as exc:
            log.warning("could not ack (connection lost; the broker redelivers): %s", exc)

    def requeue_message(self, message: Any) -> None:
        try:
            super().requeue_message(message)
        except BROKER_ERRORS as exc:
            log.warning("could not requeue (connection lost; the broker redelivers): %s", exc)


class EventConsumer(Consumer):
    """Consumes a service's event queue; on failure retries with back-off, then dead-letters.

    The handler gets the validated envelope (services declare theirs with
    :class:`kit.handlers.Handlers`, whose ``consumer()`` is this entrypoint). The message
    is acked only after the handler returned (its unit of work has committed) or after
    it was re-queued to a retry tier or the DLQ, so a crash at any point means
    redelivery, never loss.
    """

    queue_consumer = SafeQueueConsumer()

    def __init__(self, service: str, **kwargs: Any) -> None:
        self.service = service
        super().__init__(queue=consumer_queue(service), requeue_on_error=False, **kwargs)

    def setup(self) -> None:
        from kit.config import read_settings

        settings = read_settings()
        self.delays = settings.retry_delays_ms[:MAX_RETRY_TIERS]
        self.retry_publisher = Publisher(
            settings.amqp_uri, use_confirms=True, serializer="json", delivery_mode=2
        )
        super().setup()

    def handle_message(self, body: Any, message: Any) -> None:
        try:
            parse_envelope(body)
        except Exception as exc:  # noqa: BLE001 - malformed events are dead-lettered at once
            self._dead_letter(body, message, f"invalid envelope: {exc}")
            self.queue_consumer.ack_message(message)
            return
        super().handle_message(body, message)

    def handle_message_processed(
        self, message: Any, result: Any = None, exc_info: Any = None
    ) -> None:
        if exc_info is not None:
            attempt = int((message.headers or {}).get("x-attempt", 0)) + 1
            error = "".join(str(exc_info[1]))[:500] or exc_info[0].__name__
            try:
                if attempt <= len(self.delays):
                    self._retry(message, attempt, error)
                else:
                    self._dead_letter(message.payload, message, error, attempt)
            except Exception:  # noqa: BLE001 - could not park it: let the broker redeliver
                log.exception("could not park failed event; requeueing")
                self.queue_consumer.requeue_message(message)
                return
        self.queue_consumer.ack_message(message)

    def _headers(self, message: Any, **extra: Any) -> dict[str, Any]:
        headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-death")}
        headers.update(extra)
        return headers

    def _retry(self, message: Any, attempt: int, error: str) -> None:
        delay_ms = self.delays[attempt - 1]
        log.warning(
            "event %s failed (attempt %d), retrying in %d ms: %s",
            message.properties.get("message_id"),
            attempt,
            delay_ms,
            error,
        )
        self.retry_publisher.publish(
            message.payload,
            exchange="",
            routing_key=retry_queue_name(self.service, attempt),
            expiration=delay_ms / 1000.0,
            headers=self._headers(message, **{"x-attempt": attempt, "x-last-error": error}),
            message_id=message.properties.get("message_id"),
            type=message.properties.get("type"),
        )

    def _dead_letter(self, body: Any, message: Any, error: str, attempt: int = 0) -> None:
        log.error(
            "event %s dead-lettered after %d attempts: %s",
            message.properties.get("message_id"),
            attempt,
            error,
        )
        self.retry_publisher.publish(
            body,
            exchange="",
            routing_key=dead_queue_name(self.service),
            headers=self._headers(
                message, **{"x-attempt": attempt, "x-last-error": error, "x-dead-at": time.time()}
            ),
            message_id=message.properties.get("message_id"),
            type=message.properties.get("type"),
        )


event_consumer = EventConsumer.decorator


def dead_letters(
    amqp_uri: str, service: str, *, replay: bool = False, limit: int = 1000
) -> list[dict[str, Any]]:
    """List (and optionally replay) a service's dead letters: the operator's tool.

    Listing gets each message and puts it back (nack with requeue) after reading all,
    so the queue is unchanged; replay republishes to the service's queue through the
    replay exchange (the one place an operator account may publish), then acks.
    """
    found: list[dict[str, Any]] = []
    with Connection(amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        if replay:
            # passive: fails with 404 (not an unroutable, lost message) before `setup` ran
            channel.exchange_declare(REPLAY_EXCHANGE, "direct", durable=True, passive=True)
        queue = Queue(dead_queue_name(service), durable=True, channel=channel)
        held = []
        producer = conn.Producer(channel=channel) if replay else None
        for _ in range(limit):
            message = queue.get(no_ack=False, accept=["json"])
            if message is None:
                break
            headers = dict(message.headers or {})
            found.append(
                {
                    "message_id": message.properties.get("message_id"),
                    "type": message.properties.get("type"),
                    "attempts": headers.get("x-attempt"),
                    "error": headers.get("x-last-error"),
                    "body": message.payload,
                }
            )
            if replay and producer is not None:
                headers.pop("x-attempt", None)
                producer.publish(
                    json.dumps(message.payload),
                    exchange=REPLAY_EXCHANGE,
                    routing_key=queue_name(service),
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=2,
                    headers=headers,
                    message_id=message.properties.get("message_id"),
                    type=message.properties.get("type"),
                )
                message.ack()
            else:
                held.append(message)
        for message in held:
            message.requeue()
    return found
