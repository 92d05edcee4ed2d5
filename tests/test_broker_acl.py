"""The broker is a trust boundary (issue 6, item 2): services, operators and
integrations have their own RabbitMQ accounts, and RabbitMQ itself refuses what an
account may not do. Against the real broker, on this run's vhost, with the running
system (`portico up` created the services and operator accounts).

Before: every process and subscriber used guest, so anyone with broker access could
send quotes a forged ``kind: system`` RPC, forge events, and read every tenant's events.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pytest
from pika.exceptions import AMQPChannelError, AMQPConnectionError

from contracts.events import EXCHANGE, INTEGRATION_EXCHANGE, make_envelope
from kit.context import system_actor
from tests.support import ROOT, Client, free_port, strong_password, wait_for

RPC_EXCHANGE = "nameko-rpc"


def portico(system: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portico.cli", *args],
        env=system.env.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def channel(uri: str) -> Any:
    conn = pika.BlockingConnection(pika.URLParameters(uri))
    ch = conn.channel()
    ch.confirm_delivery()  # a refused publish then raises here, not silently later
    return ch


def refused(uri: str, action: Callable[..., Any]) -> str:  # lambdas bind loop values as defaults
    """Run ``action`` on a fresh channel; return the broker's refusal (fails if allowed)."""
    ch = channel(uri)
    try:
        action(ch)
    except AMQPChannelError as exc:
        return str(exc)
    finally:
        if ch.connection.is_open:
            ch.connection.close()
    pytest.fail("the broker allowed it")


def publish(ch: Any, exchange: str, routing_key: str, body: Any, **props: Any) -> None:
    ch.basic_publish(
        exchange,
        routing_key,
        json.dumps(body).encode(),
        pika.BasicProperties(content_type="application/json", delivery_mode=2, **props),
        mandatory=False,
    )


def forged_rpc(tenant_id: str) -> tuple[dict[str, Any], pika.BasicProperties]:
    """What the review sent: a quotes RPC claiming to come from the system itself."""
    body: dict[str, Any] = {"args": [{}], "kwargs": {}}
    props = pika.BasicProperties(
        content_type="application/json",
        correlation_id=uuid.uuid4().hex,
        headers={"nameko.portico_actor": system_actor(tenant_id).to_json()},
    )
    return body, props


@pytest.fixture(scope="module")
def tenants(system: Any) -> dict[str, Any]:
    """Tenant A (demo) with an integration account, and a second tenant B."""
    slug = f"acl-{uuid.uuid4().hex[:8]}"
    email, password = f"admin@{slug}.example", strong_password()
    done = portico(
        system, "tenant", "create", "--slug", slug, "--name", "ACL Other Shop",
        "--admin-email", email, "--admin-password", password,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    b_id = json.loads(done.stdout.strip().splitlines()[-1])["tenant_id"]
    done = portico(system, "integration", "create", "--tenant", system.tenant, "--name", "erp")
    assert done.returncode == 0, done.stderr
    issued = json.loads(done.stdout)
    return {
        "a": issued["tenant_id"],
        "b": b_id,
        "b_slug": slug,
        "b_login": (email, password),
        "integration": issued,
    }


def own_queue(tenants: dict[str, Any], suffix: str) -> str:
    return tenants["integration"]["queue_prefix"] + suffix


# ------------------------------------------------------- issuing accounts ---


def test_integration_create_prints_what_to_connect_to(system, tenants):
    issued = tenants["integration"]
    assert issued["exchange"] == INTEGRATION_EXCHANGE == "portico.integration"
    assert issued["binding_key"] == f"{tenants['a']}.#"
    assert issued["queue_prefix"] == f"integration.{tenants['a']}.erp."
    assert issued["user"].startswith(system.env.broker_prefix)
    assert issued["password"] and issued["password"] in issued["amqp_uri"]
    listed = portico(system, "integration", "list")
    assert listed.returncode == 0, listed.stderr
    users = [json.loads(line) for line in listed.stdout.splitlines()]
    (mine,) = [u for u in users if u["user"] == issued["user"]]
    assert mine["tenant_id"] == tenants["a"] and "password" not in mine
    unknown = portico(system, "integration", "create", "--tenant", "no-such-shop")
    assert unknown.returncode == 2 and "no tenant" in unknown.stderr


def test_revoked_integration_cannot_connect(system, tenants):
    done = portico(system, "integration", "create", "--tenant", system.tenant, "--name", "gone")
    assert done.returncode == 0, done.stderr
    uri = json.loads(done.stdout)["amqp_uri"]
    live = channel(uri)  # works while issued
    done = portico(system, "integration", "revoke", "--tenant", system.tenant, "--name", "gone")
    assert done.returncode == 0, done.stderr
    with pytest.raises(AMQPConnectionError):  # the broker closed the open connection
        live.connection.process_data_events(time_limit=1)
        live.queue_declare("integration.x.gone.q", passive=True)
    with pytest.raises(AMQPConnectionError):  # and refuses new ones
        channel(uri)


# --------------------------------------------------- (a) no RPC, no forging ---


def test_forged_system_rpc_works_with_a_broker_admin_login(system, tenants):
    """The hole itself, as a control: whoever may publish on nameko-rpc is believed.
    Only the services' and the administrator's accounts may; nothing else can."""
    ch = channel(system.env.amqp_uri)
    try:
        reply_queue = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(reply_queue, RPC_EXCHANGE, reply_queue)
        body, props = forged_rpc(tenants["a"])
        props.reply_to = reply_queue
        ch.basic_publish(RPC_EXCHANGE, "quotes.snapshot_quote_requests", json.dumps(body), props)
        deadline = time.monotonic() + 15
        reply = None
        while reply is None and time.monotonic() < deadline:
            _method, _props, reply = ch.basic_get(reply_queue, auto_ack=True)
            time.sleep(0.1)
        assert reply is not None, "quotes did not answer the forged call"
    finally:
        ch.connection.close()


def test_integration_cannot_publish_rpc(tenants):
    uri = tenants["integration"]["amqp_uri"]
    body, props = forged_rpc(tenants["a"])
    rpc = refused(uri, lambda ch: publish(ch, RPC_EXCHANGE, "quotes.snapshot_quote_requests", body))
    assert "ACCESS_REFUSED" in rpc and RPC_EXCHANGE in rpc

    def forged_system_call(ch: Any) -> None:
        ch.basic_publish(
            RPC_EXCHANGE, "quotes.snapshot_comments", json.dumps({"args": [{}]}), props
        )

    assert "ACCESS_REFUSED" in refused(uri, forged_system_call)
    # nor straight into the RPC queue through the default exchange
    direct = refused(uri, lambda ch: publish(ch, "", "rpc-quotes", body))
    assert "ACCESS_REFUSED" in direct and "amq.default" in direct


# ---------------------------------------------------------- (b) no forged events ---


@pytest.mark.parametrize(
    ("exchange", "routing_key"),
    [
        (EXCHANGE, "directory.customer.updated"),
        (INTEGRATION_EXCHANGE, "{a}.directory.customer.updated"),
        ("", "portico.notify.events"),  # the default exchange, to a service queue by name
        ("portico.replay", "portico.notify.events"),
    ],
)
def test_integration_cannot_publish_events(tenants, exchange, routing_key):
    envelope = make_envelope(
        "directory.customer.updated",
        {"id": str(uuid.uuid4()), "name": "Forged"},
        tenant_id=tenants["a"],
        actor={"kind": "system", "id": "system"},
        correlation_id=None,
        causation_id=None,
    )
    key = routing_key.format(a=tenants["a"])
    error = refused(
        tenants["integration"]["amqp_uri"], lambda ch: publish(ch, exchange, key, envelope)
    )
    assert "ACCESS_REFUSED" in error


# ------------------------------------------- (c) only its own queues and tenant ---


@pytest.mark.parametrize("binding", ["#", "*.#", "{b}.#", "{b}.quote_request.*", "*.directory.#"])
def test_integration_cannot_bind_beyond_its_tenant(tenants, binding):
    uri = tenants["integration"]["amqp_uri"]
    queue = own_queue(tenants, "probe")
    key = binding.format(b=tenants["b"])

    def bind(ch: Any) -> None:
        ch.queue_declare(queue, durable=True)
        ch.queue_bind(queue, INTEGRATION_EXCHANGE, key)

    assert "ACCESS_REFUSED" in refused(uri, bind)


def test_integration_cannot_reach_service_queues_or_other_names(tenants):
    uri = tenants["integration"]["amqp_uri"]
    for queue in ("portico.notify.events", "portico.notify.dead", "rpc-quotes"):
        assert "ACCESS_REFUSED" in refused(uri, lambda ch, q=queue: ch.basic_get(q))
        assert "ACCESS_REFUSED" in refused(
            uri, lambda ch, q=queue: ch.basic_consume(q, lambda *a: None)
        )
    # the events exchange is not readable at all, whatever the binding key
    queue = own_queue(tenants, "probe")
    assert "ACCESS_REFUSED" in refused(
        uri,
        lambda ch: (
            ch.queue_declare(queue, durable=True),
            ch.queue_bind(queue, EXCHANGE, f"{tenants['a']}.#"),
        ),
    )
    # queues outside its prefix, another integration's included
    for name in (
        "erp.quotes",
        f"integration.{tenants['a']}.other.q",
        f"integration.{tenants['b']}.erp.q",
    ):
        assert "ACCESS_REFUSED" in refused(uri, lambda ch, n=name: ch.queue_declare(n))
    # and no dead-lettering its own queue into a service's queue
    assert "ACCESS_REFUSED" in refused(
        uri,
        lambda ch: ch.queue_declare(
            own_queue(tenants, "dlx"),
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "rpc-quotes"},
        ),
    )


# --------------------------------------------- (d) its tenant's events only ---


def test_integration_receives_its_tenant_events_only(system, tenants):
    a, b = tenants["a"], tenants["b"]
    uri = tenants["integration"]["amqp_uri"]
    queue = own_queue(tenants, "events")
    ch = channel(uri)
    ch.queue_declare(queue, durable=True)
    ch.queue_bind(queue, INTEGRATION_EXCHANGE, f"{a}.#")
    # An observer with the admin login sees everything the integration exchange carries,
    # so that B's absence below means "not delivered", not "not published".
    observer = channel(system.env.amqp_uri)
    watch = observer.queue_declare("", exclusive=True).method.queue
    observer.queue_bind(watch, INTEGRATION_EXCHANGE, "#")

    suffix = uuid.uuid4().hex[:6]
    admin_a = system.staff("admin")
    r = admin_a.post("/customers", {"name": f"ACL A {suffix}"})
    assert r.status_code == 201, r.text
    a_customer = r.json()["id"]
    email, password = tenants["b_login"]
    admin_b = Client(system.base).login(tenants["b_slug"], email, password)
    r = admin_b.post("/customers", {"name": f"ACL B {suffix}"})
    assert r.status_code == 201, r.text
    b_customer = r.json()["id"]
    # A private event of tenant A (a password link): for Portico's own services only.
    private = make_envelope(
        "auth.link_issued",
        {
            "purpose": "password_reset",
            "subject_kind": "staff",
            "subject_id": str(uuid.uuid4()),
            "email": f"nobody-{suffix}@acl.example",
            "name": "Nobody",
            "token": "secret-link-token",
            "expires_at": "2099-01-01T00:00:00Z",
        },
        tenant_id=a,
        actor={"kind": "system", "id": "test"},
        correlation_id=None,
        causation_id=None,
    )
    from kit.messaging import EventPublisher

    EventPublisher(system.env.settings().amqp_uri).publish(private)

    def drain(c: Any, q: str, into: list[dict[str, Any]]) -> None:
        while True:
            method, props, body = c.basic_get(q, auto_ack=True)
            if method is None:
                return
            into.append({"key": method.routing_key, "event": json.loads(body)})

    seen: list[dict[str, Any]] = []
    watched: list[dict[str, Any]] = []

    def both_customers_published() -> bool:
        drain(ch, queue, seen)
        drain(observer, watch, watched)
        ids = {w["event"]["data"].get("id") for w in watched}
        return a_customer in ids and b_customer in ids

    wait_for(both_customers_published, timeout=30, interval=0.3)
    drain(ch, queue, seen)
    assert any(s["event"]["data"].get("id") == a_customer for s in seen)
    assert seen and all(s["event"]["tenant_id"] == a for s in seen)
    assert all(s["key"] == f"{a}.{s['event']['type']}" for s in seen)
    assert not [s for s in seen if s["event"]["tenant_id"] == b]
    assert b in {w["event"]["tenant_id"] for w in watched}
    # the private event went out (notify's queue) but never on the integration exchange
    assert not [w for w in watched + seen if w["event"]["type"] == "auth.link_issued"]
    ch.connection.close()
    observer.connection.close()


# ------------------------------------------------------------- operators ---


def test_operator_cannot_publish_rpc_or_events(system):
    uri = system.env.settings().operator_amqp_uri()
    body, _props = forged_rpc(str(uuid.uuid4()))
    for exchange, key in (
        (RPC_EXCHANGE, "quotes.snapshot_quote_requests"),
        (EXCHANGE, "directory.customer.updated"),
        (INTEGRATION_EXCHANGE, f"{uuid.uuid4()}.directory.customer.updated"),
        ("", "rpc-quotes"),
    ):
        error = refused(uri, lambda ch, x=exchange, k=key: publish(ch, x, k, body))
        assert "ACCESS_REFUSED" in error, (exchange, error)
    for queue in ("portico.notify.events", "rpc-quotes"):
        assert "ACCESS_REFUSED" in refused(uri, lambda ch, q=queue: ch.basic_get(q))
    # what it is for: reading dead letters (test_dead_letters replays them)
    ch = channel(uri)
    ch.basic_get("portico.notify.dead")
    ch.connection.close()


def test_services_account_is_not_the_admin(system):
    settings = system.env.settings()
    assert settings.amqp_uri != system.env.amqp_uri
    assert f"{system.env.broker_prefix}services" in settings.amqp_uri
    # services cannot read an integration's queue
    error = refused(settings.amqp_uri, lambda ch: ch.basic_get(own_queue_any(system)))
    assert "ACCESS_REFUSED" in error


def own_queue_any(system: Any) -> str:
    return f"integration.{uuid.uuid4()}.erp.events"


# ------------------------------------------------------- bad credentials ---


def test_up_with_bad_broker_admin_login_exits_fast(tmp_path):
    env = {
        **os.environ,
        "AMQP_ADMIN_URI": "amqp://guest:not-the-password@127.0.0.1:5672/",
        "PATH": "/usr/bin:/bin",
        "GATEWAY_PORT": str(free_port()),
    }
    env.pop("AMQP_URI", None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "portico.cli", "up"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "RabbitMQ refused the login of AMQP_ADMIN_URI" in done.stderr
    assert time.monotonic() - started < 20


# ------------------------------------------------- what subscribers are told ---


def test_example_subscriber_reads_its_tenant_events(system, tenants):
    """contracts/examples/subscriber.py, run as the README says, with the account."""
    a = tenants["a"]
    uri = tenants["integration"]["amqp_uri"]
    queue = own_queue(tenants, "example")
    ch = channel(uri)  # the queue exists (as after the example's first run), then events
    ch.queue_declare(queue, durable=True)
    ch.queue_bind(queue, INTEGRATION_EXCHANGE, f"{a}.directory.customer.*")
    ch.connection.close()
    r = system.staff("admin").post("/customers", {"name": f"ACL sub {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    done = subprocess.run(
        [
            sys.executable, "contracts/examples/subscriber.py", "--amqp", uri, "--tenant", a,
            "--queue", queue, "--bind", "directory.customer.*", "--max", "1",
        ],
        env=system.env.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    event = json.loads(line)
    assert event["tenant"] == a and event["data"]["id"] == r.json()["id"]


def test_asyncapi_describes_the_integration_exchange():
    from contracts.catalogue import asyncapi
    from contracts.events import EVENTS, PRIVATE_EVENTS

    doc = asyncapi()
    for event_type in EVENTS:
        key = event_type.replace(".", "_")
        channel_doc = doc["channels"].get(f"integration_{key}")
        if event_type in PRIVATE_EVENTS:
            assert channel_doc is None, event_type
            continue
        assert channel_doc["address"] == f"{{tenant_id}}.{event_type}"
        assert channel_doc["bindings"]["amqp"]["exchange"]["name"] == INTEGRATION_EXCHANGE
        assert doc["operations"][f"receive_integration_{key}"]["action"] == "receive"


# ------------------------------------------- both ways of creating accounts ---


@pytest.mark.parametrize("backend", ["management-api", "rabbitmqctl"])
def test_setup_accounts_through_either_backend(backend):
    """Setup creates the same users and permissions through the management HTTP API (what
    a Kubernetes Job uses) and through rabbitmqctl (a broker on this machine), idempotently."""
    from kit.config import read_settings
    from portico import broker
    from tests import support

    vhost = f"portico-t-acl-{uuid.uuid4().hex[:8]}"
    support.make_vhost(vhost)
    settings = read_settings(
        {
            "AMQP_ADMIN_URI": f"{support.AMQP_BASE}/{vhost}",
            "AMQP_USER_PREFIX": f"portico-t-{uuid.uuid4().hex[:8]}-",
            "RABBITMQ_MANAGEMENT_URL": support.MGMT,
        }
    )
    admin = broker.BrokerAdmin(support.MGMT if backend == "management-api" else None)
    try:
        from kit.messaging import declare_topology

        declare_topology(settings.admin_amqp_uri())
        for _ in range(2):  # idempotent
            users = broker.provision(settings, admin)
        tenant = str(uuid.uuid4())
        issued = broker.create_integration(settings, tenant, "erp", admin)
        perms = admin.permissions(vhost)
        assert set(users) | {issued.user} <= set(perms)
        assert perms[settings.broker_user("operator")]["configure"] == "^$"
        topics = admin.topic_permissions(vhost)[issued.user]
        assert topics[INTEGRATION_EXCHANGE] == ("^$", rf"^{re.escape(tenant)}\.")
        assert topics[EXCHANGE] == ("^$", "^$")
        assert [i.user for i in broker.list_integrations(settings, admin)] == [issued.user]
        uri = issued.as_dict(settings)["amqp_uri"]
        queue = f"integration.{tenant}.erp.q"
        assert "ACCESS_REFUSED" in refused(
            uri,
            lambda ch: (
                ch.queue_declare(queue),
                ch.queue_bind(queue, INTEGRATION_EXCHANGE, "#"),
            ),
        )
        ch = channel(uri)
        ch.queue_declare(queue)
        ch.queue_bind(queue, INTEGRATION_EXCHANGE, f"{tenant}.#")
        ch.connection.close()
        channel(settings.amqp_uri).connection.close()  # the services' login works
        assert broker.revoke_integration(settings, tenant, "erp", admin)
        assert not broker.revoke_integration(settings, tenant, "erp", admin)
    finally:
        broker.drop_users(settings, admin)
        support.drop_vhost(vhost)
    assert not [u for u in admin.users() if u.startswith(settings.amqp_user_prefix)]


def test_operator_tools_with_bad_broker_logins_say_so_plainly(tmp_path):
    base = {**os.environ, "PATH": "/usr/bin:/bin"}
    base.pop("AMQP_URI", None)
    cases = [
        (["setup"], {"AMQP_ADMIN_URI": "amqp://guest:wrong@127.0.0.1:5672/"}, "AMQP_ADMIN_URI"),
        (
            ["dead-letters", "list", "notify"],
            {"AMQP_OPERATOR_URI": "amqp://portico-operator:wrong@127.0.0.1:5672/"},
            "RabbitMQ refused",
        ),
        (
            ["dead-letters", "list", "notify"],
            {"AMQP_OPERATOR_URI": f"amqp://portico-operator:x@127.0.0.1:{free_port()}/"},
            "RabbitMQ refused or is unreachable",
        ),
    ]
    for args, env, message in cases:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "portico.cli", *args],
            env={**base, **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert time.monotonic() - started < 20
