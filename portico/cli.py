"""The operator's command line: ``portico <command>``.

portico up                 set up everything and run the whole system locally
portico setup              create database, roles, schemas, migrations, broker topology
portico run SERVICE        run one service (several copies may run at once)
portico tenant create ...  create a tenant (shop) with its first admin
portico dead-letters list|replay SERVICE      (as the operator broker account)
portico integration create|list|revoke ...  broker accounts for a tenant's integrations
portico directory republish [--tenant SLUG]  re-send directory facts to services' copies
portico check              are PostgreSQL and RabbitMQ reachable?
portico keygen             print a new Ed25519 signing key (PEM) for JWT_PRIVATE_KEYS
portico asyncapi           print the event catalogue (AsyncAPI 3.0, JSON)
portico new-service NAME   generate a service skeleton, registered and deployable
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any


def _settings() -> Any:
    from kit.config import ConfigError, read_settings

    try:
        return read_settings()
    except ConfigError as exc:
        sys.exit(f"portico: configuration error: {exc}")


def cmd_check(args: argparse.Namespace) -> int:
    from portico.infra import check_dependencies

    problems = check_dependencies(_settings())
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print("PostgreSQL and RabbitMQ are reachable.")
    return 2 if problems else 0


def cmd_setup(args: argparse.Namespace) -> int:
    from portico.infra import check_dependencies, setup

    settings = _settings()
    problems = check_dependencies(settings)  # plain sentences, fast, never a hang
    if problems:
        print("portico: cannot set up:", *problems, sep="\n  ", file=sys.stderr)
        return 2
    with _plain_errors():
        setup(settings, log=print)
    return 0


@contextlib.contextmanager
def _plain_errors() -> Iterator[None]:
    """Configuration, broker-administration and broker-login failures end as one plain
    line and status 2, never a traceback."""
    import amqp.exceptions

    from kit.config import ConfigError
    from kit.messaging import BROKER_ERRORS
    from portico.broker import BrokerAdminError

    try:
        yield
    except (ConfigError, BrokerAdminError) as exc:
        print(f"portico: {exc}", file=sys.stderr)
        sys.exit(2)
    except (*BROKER_ERRORS, amqp.exceptions.AMQPError) as exc:
        print(
            f"portico: RabbitMQ refused or is unreachable ({type(exc).__name__}: {exc}); "
            "check the broker, the URI's user, password and vhost, and that setup has run.",
            file=sys.stderr,
        )
        sys.exit(2)


def cmd_run(args: argparse.Namespace) -> int:
    from kit import registry
    from kit.runner import run

    if args.service not in registry.names():
        sys.exit(f"portico: unknown service {args.service!r}; one of {', '.join(registry.names())}")
    run(args.service)
    return 0


def cmd_tenant_create(args: argparse.Namespace) -> int:
    from portico.seed import create_tenant

    tenant_id = create_tenant(
        _settings(),
        args.slug,
        args.name,
        args.admin_email,
        args.admin_password,
        args.admin_first_name,
        args.admin_last_name,
    )
    print(json.dumps({"tenant_id": tenant_id, "slug": args.slug}))
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from kit.messaging import dead_letters

    with _plain_errors():
        uri = _settings().operator_amqp_uri()
        found = dead_letters(uri, args.service, replay=args.action == "replay")
    for item in found:
        print(json.dumps(item, default=str))
    verb = "replayed" if args.action == "replay" else "dead letters"
    print(f"{len(found)} {verb} for {args.service}", file=sys.stderr)
    return 0


def cmd_integration(args: argparse.Namespace) -> int:
    from portico import broker
    from portico.infra import tenant_id_for_slug

    settings = _settings()
    with _plain_errors():
        if args.action == "list":
            for item in broker.list_integrations(settings):
                print(json.dumps(item.as_dict(settings)))
            return 0
        tenant_id = tenant_id_for_slug(settings, args.tenant)
        if tenant_id is None:
            print(f"portico: no tenant with slug {args.tenant!r}", file=sys.stderr)
            return 2
        if args.action == "create":
            issued = broker.create_integration(settings, tenant_id, args.name)
            print(json.dumps(issued.as_dict(settings), indent=2))
            print(
                "Keep the password: it is shown only now. Declare queues named "
                f"{issued.as_dict(settings)['queue_prefix']}<anything> and bind them to "
                f"{broker.INTEGRATION_EXCHANGE} with {tenant_id}.<event pattern>.",
                file=sys.stderr,
            )
            return 0
        if not broker.revoke_integration(settings, tenant_id, args.name):
            print(f"portico: no integration {args.name!r} for {args.tenant}", file=sys.stderr)
            return 2
        print(f"revoked {args.name} of {args.tenant}", file=sys.stderr)
        return 0


def cmd_directory_republish(args: argparse.Namespace) -> int:
    from portico.directory import republish

    counts = republish(_settings(), args.tenant)
    print(json.dumps(counts, sort_keys=True))
    return 0


def cmd_views_rebuild(args: argparse.Namespace) -> int:
    from services.gateway.rebuild import rebuild_views

    counts = rebuild_views(_settings(), args.view, args.tenant)
    print(json.dumps(counts, sort_keys=True))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from services.gateway.tokens import KeyRing

    print(KeyRing.generate_pem(), end="")
    return 0


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from contracts.catalogue import asyncapi

    print(json.dumps(asyncapi(), indent=2, sort_keys=True))
    return 0


def cmd_new_service(args: argparse.Namespace) -> int:
    from portico.newservice import NewServiceError, create

    try:
        written = create(args.name)
    except NewServiceError as exc:
        print(f"portico: new-service: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    print(
        f"Service {args.name!r} generated. Now write its rules (domain.py), tables (models.py "
        "and a migration), contracts and its routes in the gateway (README, Adding a service).",
        file=sys.stderr,
    )
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from portico.up import up

    return up(_settings(), seed=not args.no_seed)


def main(argv: list[str] | None = None) -> None:
    from kit.runner import silence_eventlet_deprecation

    silence_eventlet_deprecation()  # `up` and `setup` import nameko too
    parser = argparse.ArgumentParser(
        prog="portico", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="are PostgreSQL and RabbitMQ reachable?").set_defaults(
        fn=cmd_check
    )
    sub.add_parser("setup", help="database, migrations, broker topology").set_defaults(fn=cmd_setup)
    run = sub.add_parser("run", help="run one service")
    run.add_argument("service")
    run.set_defaults(fn=cmd_run)
    up = sub.add_parser("up", help="set up and run the whole system locally")
    up.add_argument("--no-seed", action="store_true", help="skip the demo tenant")
    up.set_defaults(fn=cmd_up)
    tenant = sub.add_parser("tenant", help="tenants").add_subparsers(dest="action", required=True)
    create = tenant.add_parser("create", help="create a tenant and its first admin")
    create.add_argument("--slug", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--admin-email", required=True)
    create.add_argument("--admin-password", required=True)
    create.add_argument("--admin-first-name", default="Admin")
    create.add_argument("--admin-last-name", default="User")
    create.set_defaults(fn=cmd_tenant_create)
    dl = sub.add_parser("dead-letters", help="list or replay a service's dead letters")
    dl.add_argument("action", choices=["list", "replay"])
    dl.add_argument("service")
    dl.set_defaults(fn=cmd_dead_letters)
    directory = sub.add_parser("directory", help="directory facts").add_subparsers(
        dest="action", required=True
    )
    rp = directory.add_parser(
        "republish", help="publish every directory fact again (fills services' local copies)"
    )
    rp.add_argument("--tenant", help="one tenant's slug (default: every tenant)")
    rp.set_defaults(fn=cmd_directory_republish)
    read_views = sub.add_parser("views", help="the gateway's read views").add_subparsers(
        dest="action", required=True
    )
    rb = read_views.add_parser(
        "rebuild", help="re-read views from their owners' snapshots (events keep flowing)"
    )
    rb.add_argument("view", nargs="*", help="views to rebuild (default: every view)")
    rb.add_argument("--tenant", help="one tenant's slug (default: every tenant)")
    rb.set_defaults(fn=cmd_views_rebuild)
    integ = sub.add_parser("integration", help="broker accounts for external integrations")
    integ_sub = integ.add_subparsers(dest="action", required=True)
    for action, text in (
        ("create", "issue an account that reads one tenant's events (again: new password)"),
        ("revoke", "delete an integration's account"),
    ):
        cmd = integ_sub.add_parser(action, help=text)
        cmd.add_argument("--tenant", required=True, help="tenant slug")
        cmd.add_argument("--name", default="default", help="label, e.g. erp (a-z, 0-9, -)")
        cmd.set_defaults(fn=cmd_integration)
    integ_sub.add_parser("list", help="every integration account").set_defaults(fn=cmd_integration)
    sub.add_parser("keygen", help="new Ed25519 key (PEM)").set_defaults(fn=cmd_keygen)
    sub.add_parser("asyncapi", help="print the event catalogue").set_defaults(fn=cmd_asyncapi)
    new = sub.add_parser("new-service", help="generate a service skeleton (README)")
    new.add_argument("name", help="lowercase identifier, e.g. parts")
    new.set_defaults(fn=cmd_new_service)
    args = parser.parse_args(argv)
    sys.exit(args.fn(args))


if __name__ == "__main__":
    main()
