"""Reading an envelope's time for the copies of facts another service owns."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kit.facts import occurred_at


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2030-01-02T03:04:05.123456Z", datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2030-01-02T05:04:05+02:00", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2030-01-02T03:04:05", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ],
)
def test_occurred_at(raw, expected):
    parsed = occurred_at(raw)
    assert parsed == expected and parsed.tzinfo is not None


@pytest.mark.parametrize("raw", ["yesterday", "", None])
def test_occurred_at_rejects_garbage(raw):
    with pytest.raises(ValueError):
        occurred_at(raw)
