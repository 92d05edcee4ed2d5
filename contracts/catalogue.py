"""Who subscribes to what, and the broker topology derived from it.

``portico setup`` declares exactly this before any service starts, so no event is
lost for lack of a queue. Each consuming service has one durable queue, retry queues
that hold a failed event for a delay and send it back, and a dead-letter queue.
"""

from __future__ import annotations

from typing import Any

from contracts.events import EVENTS, EXCHANGE, INTEGRATION_EXCHANGE, PRIVATE_EVENTS

# service -> routing-key patterns it consumes (topic syntax)
SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    # Every event: the read views and the live stream's log (services.gateway.events);
    # private events arrive too (the gateway publishes them itself) and are skipped.
    "gateway": ("#",),
    "notify": ("quote_request.*", "directory.#", "auth.#"),
    "quotes": ("directory.#",),
}

DEFAULT_RETRY_DELAYS_MS = (1000, 5000, 30000, 120000)


def queue_name(service: str) -> str:
    return f"portico.{service}.events"


def retry_queue_name(service: str, attempt: int) -> str:
    return f"portico.{service}.retry.{attempt}"


def dead_queue_name(service: str) -> str:
    return f"portico.{service}.dead"


def asyncapi() -> dict[str, Any]:
    """An AsyncAPI 3.0 document of the exchanges, routing keys and payloads: the events
    exchange of Portico's services and the integration exchange external subscribers read."""
    from apispec import APISpec
    from apispec.ext.marshmallow.openapi import OpenAPIConverter

    converter = OpenAPIConverter(
        openapi_version="3.1.0",
        schema_name_resolver=lambda s: None,
        spec=APISpec("Portico events", "1.0.0", "3.1.0"),
    )
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for event_type, (schema_cls, publisher, summary) in sorted(EVENTS.items()):
        key = event_type.replace(".", "_")
        payload = converter.schema2jsonschema(schema_cls())
        messages[key] = {
            "name": event_type,
            "summary": summary,
            "contentType": "application/json",
            "payload": {
                "type": "object",
                "required": [
                    "id",
                    "type",
                    "version",
                    "occurred_at",
                    "tenant_id",
                    "correlation_id",
                    "causation_id",
                    "actor",
                    "data",
                ],
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "type": {"const": event_type},
                    "version": {"type": "integer", "minimum": 1},
                    "occurred_at": {"type": "string", "format": "date-time"},
                    "tenant_id": {"type": "string", "format": "uuid"},
                    "correlation_id": {"type": ["string", "null"]},
                    "causation_id": {"type": ["string", "null"]},
                    "actor": {"type": "object"},
                    "data": payload,
                },
            },
        }
        channels[key] = {
            "address": event_type,
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {"name": EXCHANGE, "type": "topic", "durable": True},
                }
            },
        }
        operations[f"publish_{key}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": f"Published by the {publisher} service.",
        }
        if event_type in PRIVATE_EVENTS:
            continue  # carries a secret: Portico's own services only
        # What integration accounts read: the same message, routed by tenant; the
        # broker lets an account bind only keys that start with its own tenant id.
        channels[f"integration_{key}"] = {
            "address": f"{{tenant_id}}.{event_type}",
            "parameters": {"tenant_id": {"description": "The tenant the event belongs to."}},
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {"name": INTEGRATION_EXCHANGE, "type": "topic", "durable": True},
                }
            },
        }
        operations[f"receive_integration_{key}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/integration_{key}"},
            "summary": "Read by integration accounts, each bound to <tenant_id>.# of its tenant.",
        }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Portico events", "version": "1.0.0"},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
