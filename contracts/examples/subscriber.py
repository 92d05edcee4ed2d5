"""An external subscriber to one tenant's Portico events, with its own durable queue (pika).

An operator issues the account (``portico integration create --tenant <slug> --name erp``)
and hands over what it prints: the AMQP URI, the tenant id and the queue-name prefix.

    python contracts/examples/subscriber.py --amqp "$INTEGRATION_AMQP_URI" \\
        --tenant <tenant_id> --queue integration.<tenant_id>.erp.quotes --bind 'quote_request.*'

Events arrive on the topic exchange ``portico.integration`` with the routing key
``<tenant_id>.<event type>``; the broker lets this account bind only keys of its own
tenant and only queues under its prefix, and publish nowhere. The queue survives
restarts of both sides, so no event is missed while this program is down. Delivery is
at least once: keep the ids you have handled and skip repeats. Acknowledge only after
your own work is committed.
"""

from __future__ import annotations

import argparse
import json
import os

import pika

EXCHANGE = "portico.integration"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--amqp",
        default=os.environ.get("INTEGRATION_AMQP_URI"),
        help="the integration account's URI (or INTEGRATION_AMQP_URI)",
    )
    parser.add_argument("--tenant", required=True, help="your tenant id (the routing-key prefix)")
    parser.add_argument(
        "--queue", required=True, help="your durable queue: integration.<tenant>.<name>.<any>"
    )
    parser.add_argument(
        "--bind",
        action="append",
        default=[],
        help="event-type pattern, e.g. 'quote_request.*' (repeatable; default: everything)",
    )
    parser.add_argument("--max", type=int, default=0, help="stop after N events (0: run forever)")
    args = parser.parse_args()
    if not args.amqp:
        parser.error("--amqp (or INTEGRATION_AMQP_URI) is required")

    connection = pika.BlockingConnection(pika.URLParameters(args.amqp))
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True, passive=True)
    channel.queue_declare(args.queue, durable=True)
    for pattern in args.bind or ["#"]:
        # Binding keys are <tenant_id>.<event type pattern>: the broker refuses any other.
        channel.queue_bind(args.queue, EXCHANGE, routing_key=f"{args.tenant}.{pattern}")
    channel.basic_qos(prefetch_count=50)
    seen: set[str] = set()  # use your database in real life
    for handled, (method, _properties, body) in enumerate(channel.consume(args.queue), 1):
        event = json.loads(body)
        if event["id"] not in seen:
            seen.add(event["id"])
            print(
                json.dumps(
                    {"type": event["type"], "tenant": event["tenant_id"], "data": event["data"]}
                )
            )
        channel.basic_ack(method.delivery_tag)
        if args.max and handled >= args.max:
            break
    channel.cancel()
    connection.close()


if __name__ == "__main__":
    main()
