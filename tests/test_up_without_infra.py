"""`portico up` on a machine without PostgreSQL or RabbitMQ: a plain message naming
what is missing, exit status 2, within seconds (never a hang)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.support import ROOT, free_port


def test_up_says_what_is_missing_and_exits_fast(tmp_path):
    env = {
        **os.environ,
        "ADMIN_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/portico",
        "AMQP_URI": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        "PATH": "/usr/bin:/bin",  # no docker on PATH: nothing may try to start containers
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "portico.cli", "up"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert "PostgreSQL is not reachable" in done.stderr
    assert "RabbitMQ is not reachable" in done.stderr
    assert elapsed < 20
