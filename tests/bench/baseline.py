"""Baseline for the gateway benchmark: one plain process serving the same reads straight
from PostgreSQL (eventlet WSGI + green psycopg2, no broker, no auth, no RPC): a quote
request by id and the newest 50 from the quotes schema, and the gateway's own view
queries behind /action-required (``?customer=``) and /notifications (``?recipient=``)."""

from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import json  # noqa: E402
import sys  # noqa: E402

import eventlet.queue  # noqa: E402
import psycopg2  # noqa: E402
from eventlet import wsgi  # noqa: E402
from eventlet.support.psycopg2_patcher import make_psycopg_green  # noqa: E402

make_psycopg_green()
DSN, PORT = sys.argv[1], int(sys.argv[2])
# A green queue of connections: waiting for one yields to other requests.
pool: eventlet.queue.LightQueue = eventlet.queue.LightQueue()
for _ in range(20):
    pool.put(psycopg2.connect(DSN))
COLUMNS = "id, number, customer_id, description, status, created_at, updated_at, version"


def app(environ, start_response):  # type: ignore[no-untyped-def]
    path = environ["PATH_INFO"].rstrip("/")
    conn = pool.get()
    try:
        with conn.cursor() as cur:
            query = dict(
                part.split("=", 1)
                for part in environ.get("QUERY_STRING", "").split("&")
                if "=" in part
            )
            if path == "/action-required":  # the view query, without scope, auth or paging
                cur.execute(
                    "select id, number, created_at from gateway.quote_request_views"
                    " where customer_id = %s and status = 'customer_approval_needed'"
                    " and visible_to_customer order by created_at desc, id desc limit 50",
                    (query["customer"],),
                )
                body = {
                    "items": [
                        dict(zip(("id", "number", "created_at"), r, strict=True)) for r in cur
                    ]
                }
            elif path == "/notifications":
                cur.execute(
                    "select n.id, n.title, n.body, n.link, n.created_at, r.read_at"
                    " from gateway.notification_views n left join gateway.notification_read_views r"
                    " on r.notification_id = n.id and r.reader_id = n.recipient_id"
                    " where n.recipient_id = %s order by r.read_at is not null,"
                    " n.created_at desc, n.id desc limit 50",
                    (query["recipient"],),
                )
                names = ("id", "title", "body", "link", "created_at", "read_at")
                items = [dict(zip(names, r, strict=True)) for r in cur]
                cur.execute(
                    "select count(*) from gateway.notification_views n where n.recipient_id = %s"
                    " and not exists (select 1 from gateway.notification_read_views r"
                    " where r.notification_id = n.id and r.reader_id = n.recipient_id)",
                    (query["recipient"],),
                )
                body = {"items": items, "unread_count": cur.fetchone()[0]}
            elif path == "/quote-requests":
                cur.execute(
                    f"select {COLUMNS} from quotes.quote_requests order by created_at desc, id desc limit 50"
                )
                rows = cur.fetchall()
                body = {"items": [dict(zip(COLUMNS.split(", "), r, strict=True)) for r in rows]}
            else:
                cur.execute(
                    f"select {COLUMNS} from quotes.quote_requests where id = %s",
                    (path.rsplit("/", 1)[-1],),
                )
                row = cur.fetchone()
                body = dict(zip(COLUMNS.split(", "), row, strict=True)) if row else {}
        conn.commit()
    finally:
        pool.put(conn)
    data = json.dumps(body, default=str).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


wsgi.server(
    eventlet.listen(("127.0.0.1", PORT), backlog=1024), app, log_output=False, max_size=1000
)
