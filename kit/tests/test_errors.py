"""Domain errors survive nameko's RPC serialisation with their code, detail and errors."""

from __future__ import annotations

from nameko.exceptions import deserialize, serialize

from kit.errors import DomainError, NotFound, ValidationFailed, problem
from kit.rpcerrors import for_the_wire


def _over_the_wire(exc: DomainError) -> DomainError:
    # What kit.providers.DomainRpc sends: the base class, errors as a mapping.
    back = deserialize(serialize(for_the_wire(exc)))
    assert isinstance(back, DomainError)
    return back


def test_error_without_field_errors_has_none_after_rpc():
    back = _over_the_wire(NotFound("No such quote request."))
    assert (back.code, back.detail, back.errors) == ("not_found", "No such quote request.", None)
    assert "errors" not in problem(back.code, back.detail, back.errors)


def test_field_errors_survive_rpc():
    back = _over_the_wire(ValidationFailed("Bad.", {"description": ["required"]}))
    assert back.code == "validation_failed"
    assert back.errors == {"description": ["required"]}


def test_stringified_none_from_an_older_sender_is_no_errors():
    # nameko turns a None argument into the text "None".
    back = deserialize(serialize(DomainError("not_found", "gone", None)))
    assert isinstance(back, DomainError)
    assert back.errors is None
