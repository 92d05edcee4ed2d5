"""One instance per marshmallow schema class.

Building a Schema deep-copies its declared fields (~0.3 ms each time); instances hold
no per-call state for load/dump, so every caller shares one.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

from marshmallow import Schema, ValidationError

from kit.errors import ValidationFailed

S = TypeVar("S", bound=Schema)


@cache
def shared(schema_cls: type[S]) -> S:
    return schema_cls()


def validation_errors(err: ValidationError) -> dict[str, list[str]]:
    """marshmallow's messages as ``{"field.sub": ["message", ...]}`` (problem+json)."""
    messages = err.messages
    if isinstance(messages, list):
        return {"_schema": [str(m) for m in messages]}
    out: dict[str, list[str]] = {}
    for key, value in messages.items():
        if isinstance(value, dict):
            for sub, msgs in validation_errors(ValidationError(value)).items():
                out[f"{key}.{sub}"] = msgs
        else:
            out[str(key)] = [str(m) for m in (value if isinstance(value, list) else [value])]
    return out


def load(schema_cls: type[Schema], data: Any, where: str = "request") -> dict[str, Any]:
    """Load with the shared schema; invalid input is ``ValidationFailed`` (422)."""
    try:
        return shared(schema_cls).load(data if data is not None else {})
    except ValidationError as err:
        raise ValidationFailed(f"The {where} is not valid.", validation_errors(err)) from err
