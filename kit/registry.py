"""The one list of services: what the runner, config, setup, ``portico up`` and the
deployment files read. Plain data, standard library only.

The entries live in ``services/registry.py`` (``SERVICES``); the kit loads them by
module name so that it never names a service itself. Adding a service is a folder under
``services/``, one entry there and its contracts (README "Adding a service").
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

REGISTRY_MODULE = "services.registry"


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests and limits of one container."""

    cpu_request: str = "100m"
    memory_request: str = "96Mi"
    cpu_limit: str = "1"
    memory_limit: str = "256Mi"


@dataclass(frozen=True)
class Service:
    name: str
    entry: str  # "package.module:Class", the nameko service class
    port: int  # default HTTP port (/healthz, /readyz, /metrics; the API on the public one)
    public: bool = False  # serves the public HTTP API (published port, Ingress)
    # Mounts the shared blob store (BLOB_DIR, the portico-blobs claim): "rw" to store
    # files, "ro" to read them (notify's attachments); None: no mount.
    blobs: str | None = None
    min_replicas: int = 2
    max_replicas: int = 10
    resources: Resources = field(default_factory=Resources)

    @property
    def env_prefix(self) -> str:
        """``<PREFIX>_PORT``, ``<PREFIX>_DB_PASSWORD``, ``<PREFIX>_DATABASE_URL``..."""
        return self.name.upper()


class RegistryError(Exception):
    """The registry is inconsistent (the message says how)."""


def check(services: Iterable[Service]) -> tuple[Service, ...]:
    """The services as a tuple, refused when names or ports repeat, a name is not a plain
    identifier (it becomes a schema, a role and a variable prefix), or no single service is
    public (the gateway everything else sits behind)."""
    found = tuple(services)
    names = [s.name for s in found]
    ports = [s.port for s in found]
    if len(set(names)) != len(names):
        raise RegistryError(f"service names repeat: {names}")
    if len(set(ports)) != len(ports):
        raise RegistryError(f"default ports repeat: {ports}")
    for s in found:
        if not (s.name.isidentifier() and s.name.isascii() and s.name == s.name.lower()):
            raise RegistryError(f"service name {s.name!r} must be a lowercase identifier")
        if ":" not in s.entry:
            raise RegistryError(f"{s.name}: entry {s.entry!r} must be 'module:Class'")
        if s.blobs not in (None, "ro", "rw"):
            raise RegistryError(f"{s.name}: blobs is 'ro', 'rw' or None, not {s.blobs!r}")
        if not 1 <= s.min_replicas <= s.max_replicas:
            raise RegistryError(f"{s.name}: replicas {s.min_replicas}..{s.max_replicas}")
    if sum(s.public for s in found) != 1:
        raise RegistryError("exactly one service must be public (the gateway)")
    return found


def registered(module: str | None = None) -> tuple[Service, ...]:
    """The registered services, in start order (``SERVICES`` of ``module``, by default
    :data:`REGISTRY_MODULE`, read at call time so that a test can point it elsewhere)."""
    return _load(module or REGISTRY_MODULE)


@lru_cache(maxsize=8)
def _load(module: str) -> tuple[Service, ...]:
    return check(importlib.import_module(module).SERVICES)


def names(services: Iterable[Service] | None = None) -> tuple[str, ...]:
    return tuple(s.name for s in (registered() if services is None else services))


def get(name: str, services: Iterable[Service] | None = None) -> Service:
    for s in registered() if services is None else services:
        if s.name == name:
            return s
    raise KeyError(name)


def public(services: Iterable[Service] | None = None) -> Service:
    """The one service behind the Ingress (the gateway)."""
    (found,) = [s for s in (registered() if services is None else services) if s.public]
    return found
