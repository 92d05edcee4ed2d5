"""One instance per marshmallow schema class, and the one loader of input.

:func:`shared` (one instance per schema class) lives in :mod:`contracts.common`, since
the contracts use it too and must not import the kit; it is re-exported here.

Every string that a loader accepts also passes :mod:`kit.text`: single-line unless its
field declares ``metadata={"multiline": True}``. The gateway's body/query loader and
:func:`parse` (RPC payloads) both use :func:`text_errors`, so no input route can forget.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields

from contracts.common import shared
from kit.errors import ValidationFailed
from kit.text import TextError, clean

__all__ = ["is_multiline", "parse", "shared", "text_errors", "validation_errors"]


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


def parse(schema_cls: type[Schema], data: Any, where: str = "request") -> dict[str, Any]:
    """Load with the shared schema; invalid input (text included) is ``ValidationFailed``."""
    try:
        loaded = shared(schema_cls).load(data if data is not None else {})
    except ValidationError as err:
        raise ValidationFailed(f"The {where} is not valid.", validation_errors(err)) from err
    errors = text_errors(shared(schema_cls), loaded)
    if errors:
        raise ValidationFailed(f"The {where} is not valid.", errors)
    return loaded


def is_multiline(field: fields.Field | None) -> bool:
    return bool(field is not None and field.metadata.get("multiline"))


def text_errors(schema: Schema, loaded: Any) -> dict[str, list[str]]:
    """Check every string of ``loaded`` (what ``schema`` just loaded) with :mod:`kit.text`,
    in place: multi-line values are stored normalised (CRLF -> LF). Returns the problems
    as ``{"field.sub": [message]}`` (problem+json), empty when all text is acceptable.

    A string is multi-line only when its declared field says so; strings that no String
    field describes (inside ``Raw`` or an untyped ``Dict``) get the multi-line rule,
    which still refuses NUL, other controls, bidi overrides and lone surrogates. Dict
    keys are single-line. Walks without recursion: input may nest as deep as JSON allows.
    """
    errors: dict[str, list[str]] = {}

    def report(where: str, message: str) -> None:
        errors.setdefault(where or "_schema", []).append(message)

    holder = [loaded]
    # (dotted name, container, key in container, what describes the value)
    stack: list[tuple[str, Any, Any, Schema | fields.Field | None]] = [("", holder, 0, schema)]
    while stack:
        where, container, key, spec = stack.pop()
        value = container[key]
        if isinstance(spec, fields.Nested) and isinstance(value, dict | list):
            nested = spec.schema
            if isinstance(value, list):
                stack.extend((_join(where, i), value, i, nested) for i in range(len(value)))
            else:
                stack.append((where, container, key, nested))
        elif isinstance(value, str):
            multiline = not isinstance(spec, fields.String) or is_multiline(spec)
            try:
                container[key] = clean(value, multiline=multiline)
            except TextError as err:
                report(where, str(err))
        elif isinstance(value, dict):
            declared = _declared(spec) if isinstance(spec, Schema) else {}
            keys_field = spec.key_field if isinstance(spec, fields.Dict) else None
            values_field = spec.value_field if isinstance(spec, fields.Dict) else None
            for name in list(value):
                item_spec: fields.Field | None
                if name in declared:
                    shown, item_spec = declared[name]
                else:
                    shown = str(name).replace("\x00", "\\0")
                    item_spec = values_field
                    if isinstance(name, str):
                        problem = _key_problem(name, keys_field)
                        if problem:
                            report(_join(where, shown), problem)
                stack.append((_join(where, shown), value, name, item_spec))
        elif isinstance(value, list):
            if isinstance(spec, fields.List):
                inner: Any = [spec.inner] * len(value)
            elif isinstance(spec, fields.Tuple):
                inner = list(spec.tuple_fields)
            else:
                inner = [None] * len(value)
            stack.extend(
                (_join(where, i), value, i, inner[i] if i < len(inner) else None)
                for i in range(len(value))
            )
    return {name: sorted(set(messages)) for name, messages in sorted(errors.items())}


def _join(where: str, name: object) -> str:
    return f"{where}.{name}" if where else str(name)


def _declared(schema: Schema) -> dict[str, tuple[str, fields.Field]]:
    """Loaded attribute name -> (name the client used, field) of a schema's fields."""
    return {
        (field.attribute or name): (field.data_key or name, field)
        for name, field in schema.fields.items()
    }


def _key_problem(name: str, keys_field: fields.Field | None) -> str | None:
    try:
        clean(name, multiline=is_multiline(keys_field))
    except TextError as err:
        return f"key {err}"
    return None
