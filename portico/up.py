"""``portico up``: everything a newcomer needs, in one command.

Checks the infrastructure (starting it with docker compose when an engine exists),
applies migrations and topology, starts the local mail catcher, every service and
the gateway as separate processes (deploy/Procfile, run by honcho), seeds the demo
tenant through the public API, prints where to sign in, and stops it all on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

from kit import registry
from kit.config import Settings
from portico import deployfiles, infra
from portico.seed import DEMO_PASSWORD, DEMO_PORTAL, DEMO_STAFF, DEMO_TENANT, seed_demo


def up(settings: Settings, seed: bool = True) -> int:
    problems = infra.check_dependencies(settings)
    if problems and infra.docker_engine_available():
        infra.start_with_compose(print)
        problems = infra.check_dependencies(settings)
    if problems:
        print("portico: cannot start:", *problems, sep="\n  ", file=sys.stderr)
        print("No Docker engine was found to start them for you.", file=sys.stderr)
        return 2
    print("Setting up database and broker ...", flush=True)
    from kit.config import ConfigError
    from portico.broker import BrokerAdminError

    try:
        infra.setup(settings, log=print)  # as the administrator (AMQP_ADMIN_URI)
    except (ConfigError, BrokerAdminError) as exc:
        print(f"portico: cannot set up: {exc}", file=sys.stderr)
        return 2
    # Every service connects with the services' own broker account (AMQP_URI): if that
    # login fails, say so now rather than wait for a gateway that cannot become ready.
    refused = infra.broker_login_problem(settings.amqp_uri, "AMQP_URI")
    if refused:
        print(f"portico: cannot start: {refused}", file=sys.stderr)
        return 2
    for folder in (settings.mail_dir, settings.blob_dir, settings.sms_dir, "var/keys"):
        os.makedirs(folder, exist_ok=True)

    env = dict(settings.raw)  # the environment as kit.config read it
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    for name, port in deployfiles.port_env().items():
        env.setdefault(name, port)
    env.setdefault("SMTP_PORT", str(settings.smtp_port))
    env["PYTHONUNBUFFERED"] = "1"
    # The services get their own broker account and never the administrator's.
    env["AMQP_URI"] = settings.amqp_uri
    env.pop("AMQP_ADMIN_URI", None)
    env.pop("RABBITMQ_MANAGEMENT_URL", None)
    env.pop("PORT", None)  # each Procfile line sets its own
    gateway = f"http://127.0.0.1:{env[registry.public().env_prefix + '_PORT']}"
    # The Procfile of the registry as it is now (deploy/Procfile is the same text).
    with tempfile.NamedTemporaryFile("w", prefix="portico-", suffix=".Procfile", delete=False) as f:
        f.write(deployfiles.procfile())
    try:
        return _run(settings, seed, env, gateway, f.name)
    finally:
        os.unlink(f.name)


def _run(settings: Settings, seed: bool, env: dict[str, str], gateway: str, procfile: str) -> int:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "honcho",
            "start",
            "-f",
            procfile,
            "-d",
            str(infra.ROOT),
            "--no-prefix" if env.get("PORTICO_QUIET") else "--no-colour",
        ],
        env=env,
        start_new_session=True,  # Ctrl-C reaches us; we stop honcho, honcho stops the rest
    )

    def stop(*_: Any) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if not infra.wait_http(f"{gateway}/readyz", timeout=60, proc=proc):
        print("portico: the gateway did not become ready; see the logs above.", file=sys.stderr)
        stop()
        proc.wait(timeout=30)
        return 1
    if seed:
        seed_demo(settings, gateway)
    print(banner(gateway, settings, seed), flush=True)
    code = proc.wait()
    print("portico: stopped.", flush=True)
    return 0 if code in (0, -signal.SIGTERM, 128 + signal.SIGTERM) else code


def banner(gateway: str, settings: Settings, seeded: bool) -> str:
    lines = [
        "",
        "=" * 72,
        f"Portico is running.  API: {gateway}/api/v1   OpenAPI: {gateway}/api/v1/openapi.json",
        f"Mail sent by the system is saved under {settings.mail_dir}/ (SMTP catcher on "
        f"127.0.0.1:{settings.smtp_port}).",
    ]
    if seeded:
        lines.append(f"Demo tenant '{DEMO_TENANT}', password for every demo login: {DEMO_PASSWORD}")
        for email, _first, _last, roles in DEMO_STAFF:
            lines.append(f"  staff  {roles[0]:<10} {email}")
        lines.append(f"  portal customer    {DEMO_PORTAL}")
        lines.append(
            f"  e.g. curl -s {gateway}/api/v1/auth/token -H 'Content-Type: application/json' "
            f'-d \'{{"tenant":"{DEMO_TENANT}","email":"{DEMO_PORTAL}","password":"{DEMO_PASSWORD}"}}\''
        )
    lines += ["Press Ctrl-C to stop everything.", "=" * 72]
    return "\n".join(lines)
