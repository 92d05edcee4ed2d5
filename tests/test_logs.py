"""A service's output is its log: one JSON object a line, from the first line on, and a
client's mistake is not an error of the system (issue 6 item 25).

Runs ``portico run quotes`` as operators do, on a database and vhost of its own, and
calls it over RPC the way the gateway does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

import kit.rpcerrors  # noqa: F401 - registers DomainError with nameko for this raw caller
from kit.context import ACTOR_KEY, REQUEST_ID_KEY, system_actor
from kit.errors import DomainError
from tests.support import ROOT, Environment, Process, wait_ready


@pytest.fixture(scope="module")
def quotes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Environment, Process]]:
    tmp = tmp_path_factory.mktemp("logs")
    env = Environment(tmp)
    try:
        subprocess.run(
            [sys.executable, "-m", "portico.cli", "setup"],
            env=env.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=120,
        )
        run_env = {**env.env, "LOG_LEVEL": "INFO", "PORT": str(env.ports["quotes"])}
        # stdout and stderr apart: both must be JSON lines, stderr preferably empty
        proc = _SplitProcess(
            [sys.executable, "-m", "portico.cli", "run", "quotes"], run_env, tmp / "quotes"
        ).start()
        try:
            wait_ready(f"http://127.0.0.1:{env.ports['quotes']}/readyz", timeout=60, proc=proc)
            yield env, proc
        finally:
            proc.stop()
    finally:
        env.close()


class _SplitProcess(Process):
    def __init__(self, args: list[str], env: dict[str, str], base: Path) -> None:
        super().__init__(args, env, base.with_suffix(".out"))
        self.err_path = base.with_suffix(".err")

    def start(self) -> _SplitProcess:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.err = open(self.err_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.args, env=self.env, cwd=ROOT, stdout=self.log, stderr=self.err
        )
        return self

    def output(self) -> str:
        return super().output() + self.err_path.read_text(errors="replace")[-8000:]


def test_every_line_is_json_and_a_bad_cursor_is_not_an_error(
    quotes: tuple[Environment, Process],
) -> None:
    env, proc = quotes
    request_id = f"logs-{uuid.uuid4().hex}"
    actor = system_actor(str(uuid.uuid4()))
    context = {ACTOR_KEY: actor.to_json(), REQUEST_ID_KEY: request_id}
    with ClusterRpcProxy(
        {"AMQP_URI": env.amqp_uri, "serializer": "json"}, timeout=20, context_data=context
    ) as rpc:
        with pytest.raises(DomainError) as err:
            rpc.quotes.snapshot_quote_requests({"cursor": "not-a-cursor"})
        assert err.value.code == "validation_failed"
        assert rpc.quotes.snapshot_quote_requests({"limit": 1})["items"] == []
    proc.stop()

    assert isinstance(proc, _SplitProcess)
    out = proc.log_path.read_text()
    err_text = proc.err_path.read_text()
    records = []
    for stream, text in (("stdout", out), ("stderr", err_text)):
        for line in text.splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                pytest.fail(f"{stream} has a line that is not JSON: {line!r}\n{out}{err_text}")
    assert records, "the service logged nothing"
    assert not any("Eventlet is deprecated" in r.get("msg", "") for r in records)
    assert not any("Mandatory delivery" in r.get("msg", "") for r in records)
    errors = [r for r in records if r["level"] in ("ERROR", "CRITICAL")]
    assert not errors, errors
    bad_cursor = [r for r in records if r.get("request_id") == request_id]
    assert bad_cursor and all(r["level"] in ("INFO", "WARNING") for r in bad_cursor), records
