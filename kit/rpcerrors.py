"""Domain errors across nameko RPC: the caller rebuilds ``DomainError(code, detail, errors)``.

nameko rebuilds only exception classes registered in the calling process; everything
else arrives as ``RemoteError``. :mod:`kit.errors` stays pure (no nameko), so the
registration lives here: importing this module registers :class:`DomainError`.
``kit.providers`` imports it, so every process that calls through ``kit.providers.RpcClient``
has it; a raw ``ClusterRpcProxy`` caller imports it itself.
"""

from __future__ import annotations

from nameko.exceptions import deserialize_to_instance

from kit.errors import DomainError

deserialize_to_instance(DomainError)


def for_the_wire(err: DomainError) -> DomainError:
    """``err`` as it crosses RPC: the registered base class, its code kept, ``errors`` a
    mapping (``{}`` for none), since nameko would send ``None`` as the text "None"."""
    wire = DomainError(err.code, err.detail or "", err.errors)
    wire.args = (wire.code, wire.detail, wire.errors or {})
    return wire
