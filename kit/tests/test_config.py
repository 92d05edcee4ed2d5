"""Broker and database settings per kind of process (issue 6 item 2): services hold only
their own accounts, setup the administrators', operators the operator account."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest

from kit.config import ConfigError, amqp_vhost, load

PRODUCTION = {
    "PORTICO_ENV": "production",
    "BLOB_DIR": "/var/lib/portico/blobs",
    "SMTP_HOST": "smtp.example.com",
    "SMTP_FROM": "Portico <no-reply@example.com>",
    "PORTAL_BASE_URL": "https://portal.example.com",
}


def login(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    return unquote(parts.username or ""), unquote(parts.password or "")


def test_a_production_service_needs_neither_admin_url():
    """A service's pod has DATABASE_URL and AMQP_URI only (it used to be refused for
    lacking ADMIN_DATABASE_URL, the owner role it must not have)."""
    settings = load(
        {
            **PRODUCTION,
            "DATABASE_URL": "postgresql://portico_quotes:pw@db:5432/portico",
            "AMQP_URI": "amqp://portico-services:s3cret@mq:5672/portico",
        }
    )
    assert settings.amqp_uri == "amqp://portico-services:s3cret@mq:5672/portico"
    assert settings.amqp_admin_uri is None
    with pytest.raises(ConfigError, match="AMQP_ADMIN_URI"):
        settings.admin_amqp_uri()


def test_production_refuses_a_missing_broker_account():
    with pytest.raises(ConfigError, match="AMQP_URI"):
        load(PRODUCTION)


def test_production_setup_derives_the_services_uri_and_needs_every_password():
    env = {
        **PRODUCTION,
        "ADMIN_DATABASE_URL": "postgresql://portico:pw@db:5432/portico",
        "AMQP_ADMIN_URI": "amqp://admin:adm@mq:5672/portico",
        "AMQP_SERVICES_PASSWORD": "p@ss/word:1",
        "AMQP_OPERATOR_PASSWORD": "op-pw",
    }
    settings = load(env)
    assert login(settings.amqp_uri) == ("portico-services", "p@ss/word:1")
    assert amqp_vhost(settings.amqp_uri) == "portico"
    assert login(settings.operator_amqp_uri()) == ("portico-operator", "op-pw")
    missing = {k: v for k, v in env.items() if k != "AMQP_SERVICES_PASSWORD"}
    with pytest.raises(ConfigError, match="AMQP_SERVICES_PASSWORD"):
        load(missing)
    no_operator = load({k: v for k, v in env.items() if k != "AMQP_OPERATOR_PASSWORD"})
    with pytest.raises(ConfigError, match="AMQP_OPERATOR_PASSWORD"):
        no_operator.broker_password("operator")


def test_an_operator_shell_needs_only_the_operator_uri():
    uri = "amqp://portico-operator:op@mq:5672/portico"
    settings = load({**PRODUCTION, "AMQP_OPERATOR_URI": uri})
    assert settings.operator_amqp_uri() == uri


def test_development_passwords_are_derived_per_role_and_broker():
    a = load({"AMQP_ADMIN_URI": "amqp://guest:guest@127.0.0.1:5672/a"})
    b = load({"AMQP_ADMIN_URI": "amqp://guest:guest@127.0.0.1:5672/b"})
    assert a.broker_password("services") == load(dict(a.raw)).broker_password("services")
    assert a.broker_password("services") != a.broker_password("operator")
    assert a.broker_password("services") != b.broker_password("services")
    assert login(a.amqp_uri) == ("portico-services", a.broker_password("services"))
    prefixed = load({"AMQP_USER_PREFIX": "run-1-"})
    assert login(prefixed.amqp_uri)[0] == "run-1-services"
    assert prefixed.broker_user("integration.t.erp") == "run-1-integration.t.erp"


def test_vhost_of_uris():
    assert amqp_vhost("amqp://h:5672/") == "/"
    assert amqp_vhost("amqp://h:5672") == "/"
    assert amqp_vhost("amqp://h:5672/%2F") == "/"
    assert amqp_vhost("amqp://h:5672/portico-t-1") == "portico-t-1"
