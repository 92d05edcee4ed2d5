"""An external subscriber to Portico's events, with its own durable queue (pika).

    python contracts/examples/subscriber.py --queue erp.quotes --bind 'quote_request.*'

The queue survives restarts of both sides, so no event is missed while this program is
down. Delivery is at least once: keep the ids you have handled and skip repeats.
Acknowledge only after your own work is committed.
"""

from __future__ import annotations

import argparse
import json
import os

import pika

EXCHANGE = "portico.events"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--amqp", default=os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/%2F")
    )
    parser.add_argument("--queue", required=True, help="your durable queue, e.g. erp.quotes")
    parser.add_argument(
        "--bind", action="append", default=[], help="routing-key pattern (repeatable)"
    )
    parser.add_argument("--max", type=int, default=0, help="stop after N events (0: run forever)")
    args = parser.parse_args()

    connection = pika.BlockingConnection(pika.URLParameters(args.amqp))
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True, passive=True)
    channel.queue_declare(args.queue, durable=True)
    for pattern in args.bind or ["#"]:
        channel.queue_bind(args.queue, EXCHANGE, routing_key=pattern)
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
