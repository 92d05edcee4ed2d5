"""Broker and database settings per kind of process (issue 6 item 2): services hold only
their own accounts, setup the administrators', operators the operator account."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from kit.config import ConfigError, amqp_vhost, env_float, env_int, env_text, read_settings

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
    settings = read_settings(
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
        read_settings(PRODUCTION)


def test_production_setup_derives_the_services_uri_and_needs_every_password():
    env = {
        **PRODUCTION,
        "ADMIN_DATABASE_URL": "postgresql://portico:pw@db:5432/portico",
        "AMQP_ADMIN_URI": "amqp://admin:adm@mq:5672/portico",
        "AMQP_SERVICES_PASSWORD": "p@ss/word:1",
        "AMQP_OPERATOR_PASSWORD": "op-pw",
    }
    settings = read_settings(env)
    assert login(settings.amqp_uri) == ("portico-services", "p@ss/word:1")
    assert amqp_vhost(settings.amqp_uri) == "portico"
    assert login(settings.operator_amqp_uri()) == ("portico-operator", "op-pw")
    missing = {k: v for k, v in env.items() if k != "AMQP_SERVICES_PASSWORD"}
    with pytest.raises(ConfigError, match="AMQP_SERVICES_PASSWORD"):
        read_settings(missing)
    no_operator = read_settings({k: v for k, v in env.items() if k != "AMQP_OPERATOR_PASSWORD"})
    with pytest.raises(ConfigError, match="AMQP_OPERATOR_PASSWORD"):
        no_operator.broker_password("operator")


def test_an_operator_shell_needs_only_the_operator_uri():
    uri = "amqp://portico-operator:op@mq:5672/portico"
    settings = read_settings({**PRODUCTION, "AMQP_OPERATOR_URI": uri})
    assert settings.operator_amqp_uri() == uri


def test_development_passwords_are_derived_per_role_and_broker():
    a = read_settings({"AMQP_ADMIN_URI": "amqp://guest:guest@127.0.0.1:5672/a"})
    b = read_settings({"AMQP_ADMIN_URI": "amqp://guest:guest@127.0.0.1:5672/b"})
    assert a.broker_password("services") == read_settings(dict(a.raw)).broker_password("services")
    assert a.broker_password("services") != a.broker_password("operator")
    assert a.broker_password("services") != b.broker_password("services")
    assert login(a.amqp_uri) == ("portico-services", a.broker_password("services"))
    prefixed = read_settings({"AMQP_USER_PREFIX": "run-1-"})
    assert login(prefixed.amqp_uri)[0] == "run-1-services"
    assert prefixed.broker_user("integration.t.erp") == "run-1-integration.t.erp"


def test_vhost_of_uris():
    assert amqp_vhost("amqp://h:5672/") == "/"
    assert amqp_vhost("amqp://h:5672") == "/"
    assert amqp_vhost("amqp://h:5672/%2F") == "/"
    assert amqp_vhost("amqp://h:5672/portico-t-1") == "portico-t-1"


# --- a service's own knobs (issue 7: one config object) -----------------------------------


def test_env_readers_give_the_default_when_the_variable_is_absent():
    assert env_text("NOTIFY_X", "d", {}) == "d"
    assert env_float("NOTIFY_SWEEP_SECONDS", 2.0, {}) == 2.0
    assert env_float("NOTIFY_LEASE_SECONDS", 60, {}) == 60.0  # an int default is a float
    assert env_int("NOTIFY_RENDER_MEMORY_MB", 512, {}) == 512


def test_env_readers_parse_what_is_set():
    env = {"A": "0.5", "B": "1024", "C": "text", "D": ""}
    assert env_float("A", 2.0, env) == 0.5
    assert env_float("B", 2.0, env) == 1024.0
    assert env_int("B", 512, env) == 1024
    assert env_text("C", "d", env) == "text"
    assert env_text("D", "d", env) == ""  # set but empty is what was set


@pytest.mark.parametrize(
    ("reader", "raw"),
    [(env_float, "fast"), (env_float, ""), (env_int, "1.5"), (env_int, "lots"), (env_int, "")],
)
def test_a_malformed_knob_is_a_config_error_naming_it(reader, raw):
    with pytest.raises(ConfigError, match="NOTIFY_KNOB"):
        reader("NOTIFY_KNOB", 1, {"NOTIFY_KNOB": raw})


def test_env_readers_read_the_process_environment_at_each_call(monkeypatch):
    monkeypatch.setenv("PORTICO_TEST_KNOB", "7")
    assert env_text("PORTICO_TEST_KNOB", "") == "7"
    assert env_int("PORTICO_TEST_KNOB", 1) == 7 and env_float("PORTICO_TEST_KNOB", 1) == 7.0
    monkeypatch.delenv("PORTICO_TEST_KNOB")
    assert env_text("PORTICO_TEST_KNOB", "gone") == "gone"


# Not Portico's runtime: the integrator's example runs without it (it imports no kit).
# kit/runner.py sets a variable for eventlet before eventlet is imported; it reads none.
_ENVIRON_ALLOWED = {
    "kit/config.py": None,
    "contracts/examples/subscriber.py": None,
    "kit/runner.py": 'os.environ.setdefault("EVENTLET_NO_GREENDNS", "yes")',
}
_ENVIRON_READ = re.compile(r"\bos\.(?:environ|getenv)\b|\bfrom os import\b.*\b(?:environ|getenv)\b")


def test_no_module_reads_the_environment_but_kit_config():
    root = Path(__file__).resolve().parents[2]
    found = []
    for package in ("kit", "contracts", "services", "portico"):
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if "/tests/" in rel:
                continue
            allowed = _ENVIRON_ALLOWED.get(rel, "")
            if allowed is None:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if _ENVIRON_READ.search(code) and code.strip() != allowed:
                    found.append(f"{rel}:{number}: {line.strip()}")
    assert found == []
