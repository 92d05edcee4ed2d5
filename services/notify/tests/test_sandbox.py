"""Tenant template overrides cannot hold the sender: time, memory and size are bounded.

Each attack below ran for seconds (or without end) in the in-process sandbox. Here it
ends within the time bound, the worker process is replaced when it had to be killed,
and the message falls back to the built-in template with the failure recorded.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.notify.channels import Renderer
from services.notify.domain import Recipient
from services.notify.sandbox import SandboxProcess, TemplateLimitError, TenantSandbox

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
TIMEOUT = 1.0
# Wall time allowed on top of the bound: killing and reaping the worker, a loaded machine.
SLACK = 1.5

DOUBLING = (
    "{% set ns = namespace(s=data.description) %}"
    "{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
)
CENTER = "{{ data.description|center(10**7) }}"
CENTER_HUGE = "{{ data.description|center(10**9) }}"
NESTED_LOOPS = (
    "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}"
    "{% endfor %}{% endfor %}{% endfor %}done"
)
NESTED_OVER_DATA = (
    "{% for a in data.description %}{% for b in data.description %}"
    "{% for c in data.description %}{{ a }}{% endfor %}{% endfor %}{% endfor %}"
)
ATTACKS = {
    "tilde-doubling": DOUBLING,
    "center-10e7": CENTER,
    "center-10e9": CENTER_HUGE,
    "nested-loops": NESTED_LOOPS,
    "nested-loops-over-data": NESTED_OVER_DATA,
}
CTX = {"data": {"description": "x" * 2000, "number": "Q-1"}, "recipient": {"name": "Al"}}


@pytest.fixture(scope="module")
def sandbox():
    box = SandboxProcess(timeout=TIMEOUT, memory_mb=512, max_chars=100_000)
    assert box.render("{{ data.number }}", False, CTX) == "Q-1"  # started and warm
    yield box
    box.close()


@pytest.mark.parametrize("source", ATTACKS.values(), ids=ATTACKS.keys())
def test_each_attack_ends_within_the_bound(sandbox, source):
    started = time.monotonic()
    with pytest.raises(TemplateLimitError) as failure:
        sandbox.render(source, False, CTX)
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT + SLACK, f"{elapsed:.2f}s: {failure.value}"
    reason = str(failure.value)
    assert any(
        word in reason for word in ("longer than", "memory", "range is limited", "MemoryError")
    ), reason
    # the worker still (or again) answers, at once
    assert sandbox.render("ok {{ data.number }}", False, CTX) == "ok Q-1"


def test_a_killed_worker_is_replaced_and_the_source_refused_at_once(sandbox):
    before = sandbox.started
    with pytest.raises(TemplateLimitError, match="longer than"):
        sandbox.render(NESTED_LOOPS + "{# once #}", False, CTX)
    assert sandbox.render("{{ data.number }}", False, CTX) == "Q-1"
    assert sandbox.started == before + 1
    started = time.monotonic()
    with pytest.raises(TemplateLimitError, match="longer than"):
        sandbox.render(NESTED_LOOPS + "{# once #}", False, CTX)
    assert time.monotonic() - started < 0.1  # remembered: not run a second time


def test_output_size_is_bounded():
    box = SandboxProcess(timeout=5, max_chars=50)
    try:
        assert box.render("{{ 'a' * 50 }}", False, CTX) == "a" * 50
        with pytest.raises(TemplateLimitError, match="longer than 50 characters"):
            box.render("{% for i in range(51) %}a{% endfor %}", False, CTX)
    finally:
        box.close()


def test_html_overrides_are_escaped_in_the_worker(sandbox):
    ctx = {"data": {"comment_body": "<script>x</script>"}}
    assert sandbox.render("<p>{{ data.comment_body }}</p>", True, ctx) == (
        "<p>&lt;script&gt;x&lt;/script&gt;</p>"
    )
    assert sandbox.render("{{ data.comment_body }}", False, ctx) == "<script>x</script>"


def test_small_range_and_refusals_in_the_sandbox_itself():
    env = TenantSandbox()
    assert env.from_string("{{ range(3)|list }}").render() == "[0, 1, 2]"
    with pytest.raises(Exception, match="range is limited"):
        env.from_string("{{ range(10**6)|list }}").render()


@pytest.mark.parametrize(
    "source", [DOUBLING, CENTER, NESTED_LOOPS], ids=["tilde", "center", "loops"]
)
def test_the_message_falls_back_to_the_built_in_template_and_says_why(sandbox, source):
    renderer = Renderer(
        TEMPLATES, lambda t, e, p: source if p == "subject" else None, sandbox=sandbox
    )
    event = {
        "id": "e-1",
        "type": "quote_request.approved",
        "tenant_id": "t-1",
        "data": {"quote_request_id": "q-1", "number": "Q-7", "description": "x" * 2000},
    }
    started = time.monotonic()
    msg = renderer.render(
        event,
        Recipient("contact", "c-1", "Al", email="a@x.test"),
        tenant_name="Acme",
        portal_base="https://p.test",
    )
    assert time.monotonic() - started < TIMEOUT + SLACK
    assert msg.subject == "Quote Q-7 approved - thank you"
    [problem] = msg.problems
    assert problem.startswith("template override quote_request.approved/subject failed (")
    assert problem.endswith("built-in template used")
