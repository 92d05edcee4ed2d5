"""The running system, started once per test session exactly as the README does
(`portico up`), on its own database, vhost and ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from portico.seed import DEMO_PASSWORD, DEMO_PORTAL, DEMO_STAFF, DEMO_TENANT
from tests.support import Client, Environment, Process, wait_ready


class System:
    def __init__(self, env: Environment, proc: Process) -> None:
        self.env = env
        self.proc = proc
        self.base = env.base
        self.tenant = DEMO_TENANT
        self.password = DEMO_PASSWORD

    def anonymous(self) -> Client:
        return Client(self.base)

    def staff(self, role: str = "admin") -> Client:
        email = next(e for e, _f, _l, roles in DEMO_STAFF if role in roles)
        return self.anonymous().login(DEMO_TENANT, email, DEMO_PASSWORD)

    def portal(self) -> Client:
        return self.anonymous().login(DEMO_TENANT, DEMO_PORTAL, DEMO_PASSWORD)


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("system")
    env = Environment(tmp)
    proc = Process([sys.executable, "-m", "portico.cli", "up"], env.env, tmp / "up.log").start()
    try:
        wait_ready(env.base + "/readyz", timeout=120, proc=proc)
        # `up` prints its banner once the demo data is in: wait for it.
        from tests.support import wait_for

        wait_for(lambda: "Portico is running" in proc.output(), timeout=60)
        yield System(env, proc)
    finally:
        code = proc.stop()
        env.close()
        if code not in (0, None):
            print(proc.output(), file=sys.stderr)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that restart the shared broker run last, after everything that uses it."""
    items.sort(key=lambda item: item.get_closest_marker("broker_restart") is not None)
