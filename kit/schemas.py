"""One instance per marshmallow schema class.

Building a Schema deep-copies its declared fields (~0.3 ms each time); instances hold
no per-call state for load/dump, so every caller shares one.
"""

from __future__ import annotations

from functools import cache
from typing import TypeVar

from marshmallow import Schema

S = TypeVar("S", bound=Schema)


@cache
def shared(schema_cls: type[S]) -> S:
    return schema_cls()
