"""Failing events retry with back-off, then land in the dead-letter queue, where the
operator lists and replays them (`portico dead-letters`). Nothing is dropped silently."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

from tests.support import ROOT, wait_for


def _publish(amqp_uri: str, body: dict, routing_key: str) -> None:
    from kombu import Connection

    from contracts.events import EXCHANGE

    with Connection(amqp_uri) as conn:
        conn.Producer().publish(
            body,
            exchange=EXCHANGE,
            routing_key=routing_key,
            serializer="json",
            delivery_mode=2,
            message_id=body.get("id"),
            type=body.get("type"),
        )


def _dead_letters(system, action: str = "list") -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "portico.cli", "dead-letters", action, "notify"],
        env=system.env.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _envelope(version: int) -> dict:
    from contracts.events import make_envelope

    env = make_envelope(
        "directory.customer.updated",
        {"id": str(uuid.uuid4()), "name": "X"},
        tenant_id=str(uuid.uuid4()),
        actor={"kind": "system", "id": "test"},
        correlation_id=None,
        causation_id=None,
    )
    env["version"] = version
    return env


def test_failing_event_retries_then_dead_letters_and_can_be_replayed(system):
    # A version notify does not know: it must never guess, so every attempt fails.
    bad = _envelope(version=99)
    started = time.monotonic()
    _publish(system.env.amqp_uri, bad, bad["type"])

    def dead() -> list[dict] | None:
        found = [d for d in _dead_letters(system) if d["message_id"] == bad["id"]]
        return found or None

    (letter,) = wait_for(dead, timeout=40, interval=0.5)
    # four back-off tiers (200+500+1000+2000 ms in the test config) came first
    assert time.monotonic() - started >= 3.5
    assert letter["attempts"] == 5 and "version 99" in letter["error"]
    assert letter["body"] == bad
    # listing does not consume
    assert [d["message_id"] for d in _dead_letters(system)].count(bad["id"]) == 1

    # replay puts it back on notify's queue; it fails again and returns, attempts reset
    replayed = [d for d in _dead_letters(system, "replay") if d["message_id"] == bad["id"]]
    assert len(replayed) == 1
    assert not [d for d in _dead_letters(system) if d["message_id"] == bad["id"]]
    again = wait_for(dead, timeout=40, interval=0.5)
    assert again[0]["attempts"] == 5
    _dead_letters(system, "replay")  # leave the queue as we found it for other tests


def test_malformed_envelope_is_dead_lettered_at_once(system):
    junk = {"id": str(uuid.uuid4()), "type": "quote_request.created", "data": "not an object"}
    _publish(system.env.amqp_uri, junk, "quote_request.created")

    def dead() -> list[dict] | None:
        return [d for d in _dead_letters(system) if d["message_id"] == junk["id"]] or None

    (letter,) = wait_for(dead, timeout=15, interval=0.3)
    assert "invalid envelope" in letter["error"]
