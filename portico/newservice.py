"""``portico new-service NAME``: a new service's skeleton, registered and deployable.

Writes ``services/NAME/`` (domain with an example state machine, models, service,
store, migrations, domain tests) and ``contracts/NAME.py``, then adds what the registry
cannot generate: the entry in ``services/registry.py``, the event registration in
``contracts/events.py``, the compose service and setup password, the Secret and the
setup password in ``deploy/k8s/secrets.example.yaml`` and the line in
``deploy/k8s/kustomization.yaml``. The Procfile and ``deploy/k8s/services/NAME/`` come
from :func:`portico.deployfiles.write`, the one generator of those.

Everything is computed and checked before the first write (a bad name, a taken name, a
file the edits cannot find their place in: nothing is written); a write that still
fails puts back what was written before it.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from string import Template

from kit.registry import RegistryError, Service, check
from portico import deployfiles

ROOT = Path(__file__).resolve().parent.parent
MAX_NAME = 20  # keeps every generated line within the formatter's 100 columns
LINE = 100
# No "_": the name is part of Kubernetes object names (portico-NAME), which cannot hold one.
NAME_RE = re.compile(r"[a-z][a-z0-9]*\Z")
# Names the generated identifiers would collide with: packages, processes and
# Kubernetes objects that already carry a name (portico-<name>), PostgreSQL's schemas.
RESERVED = frozenset(
    {
        *keyword.kwlist,
        *keyword.softkwlist,
        "all", "base", "blobs", "common", "config", "contracts", "integration", "kit",
        "mail", "mailpit", "operator", "portico", "postgres", "public", "rabbitmq",
        "registry", "services", "setup", "test", "tests", "tls",
    }
)  # fmt: skip


class NewServiceError(Exception):
    """The service cannot be generated (the message says why); nothing was written."""


def check_name(name: str, root: Path = ROOT) -> None:
    """Refuse a name that is not a short lowercase identifier, is reserved or is taken."""
    if not NAME_RE.match(name):
        raise NewServiceError(
            f"{name!r} is not a service name: a lowercase identifier of letters and digits, "
            "starting with a letter (no '_': Kubernetes names portico-NAME cannot hold one)"
        )
    if len(name) > MAX_NAME:
        raise NewServiceError(f"{name!r} is longer than {MAX_NAME} characters")
    if name in RESERVED or name.startswith("pg_"):
        raise NewServiceError(f"{name!r} is a reserved word")
    if name in {s.name for s in _registered(root)}:
        raise NewServiceError(f"{name!r} is already a registered service")
    taken = [
        p
        for p in (f"services/{name}", f"contracts/{name}.py", f"deploy/k8s/services/{name}")
        if (root / p).exists()
    ]
    if taken:
        raise NewServiceError(f"{name!r} is taken: {', '.join(taken)} exists")
    if f'"{name}.' in (root / "contracts" / "events.py").read_text():
        raise NewServiceError(f"{name!r} is taken: events named {name}.* exist")


def _registered(root: Path) -> tuple[Service, ...]:
    """The services of ``root``'s registry, read afresh from the file."""
    spec = importlib.util.spec_from_file_location(
        "_portico_registry", root / "services" / "registry.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return check(module.SERVICES)


def plan(name: str, root: Path = ROOT) -> dict[Path, str]:
    """Every file to write (path -> its whole new text), or :class:`NewServiceError`."""
    check_name(name, root)
    services = _registered(root)
    cls = "".join(part.capitalize() for part in name.split("_")) + "Service"
    new = Service(name, f"services.{name}.service:{cls}", port=max(s.port for s in services) + 1)
    try:
        check((*services, new))
    except RegistryError as exc:
        raise NewServiceError(str(exc)) from exc
    values = {"name": name, "Class": cls, "NAME": new.env_prefix, "port": str(new.port)}
    files = {
        root / Template(path).substitute(values): Template(text).substitute(values)
        for path, text in _SKELETON.items()
    }
    files[root / "services" / name / "migrations" / "script.py.mako"] = MAKO
    for relative, edit in _edits(new).items():
        files[root / relative] = edit((root / relative).read_text())
    with tempfile.TemporaryDirectory() as tmp:  # the Procfile and k8s folder, from write()
        (Path(tmp) / "deploy").mkdir()
        for written in deployfiles.write((*services, new), root=Path(tmp)):
            files[root / written.relative_to(tmp)] = written.read_text()
    return files


def create(name: str, root: Path = ROOT) -> list[Path]:
    """Generate service ``name`` under ``root``; the paths written, in order."""
    files = plan(name, root)
    before = {path: path.read_text() if path.exists() else None for path in files}
    made: list[Path] = []
    try:
        for path, text in files.items():
            for folder in reversed(path.parents):
                if not folder.exists():
                    folder.mkdir()
                    made.append(folder)
            if before[path] != text:
                path.write_text(text)
    except OSError as exc:
        for path, old in before.items():
            if old is None:
                path.unlink(missing_ok=True)
            elif path.exists():
                path.write_text(old)
        for folder in reversed(made):
            folder.rmdir()
        raise NewServiceError(f"could not write {name}: {exc}") from exc
    return [path for path, text in files.items() if before[path] != text]


# --- the edits of hand-kept files ------------------------------------------------------


def _after_last(pattern: str, insert: str, where: str) -> Callable[[str], str]:
    """Insert ``insert`` (whole lines) after the last line matching ``pattern``."""

    def edit(text: str) -> str:
        found = list(re.finditer(pattern, text, re.MULTILINE))
        if not found:
            raise NewServiceError(f"{where}: no line matching {pattern!r} to add to")
        end = found[-1].end() + 1
        return text[:end] + insert + text[end:]

    return edit


def _before(pattern: str, insert: str, where: str) -> Callable[[str], str]:
    """Insert ``insert`` before the first line matching ``pattern``."""

    def edit(text: str) -> str:
        found = re.search(pattern, text, re.MULTILINE)
        if found is None:
            raise NewServiceError(f"{where}: no line matching {pattern!r} to add before")
        return text[: found.start()] + insert + text[found.start() :]

    return edit


def _chain(*edits: Callable[[str], str]) -> Callable[[str], str]:
    def edit(text: str) -> str:
        for one in edits:
            text = one(text)
        return text

    return edit


def _registry_entry(s: Service) -> str:
    """The entry as ``ruff format`` writes it (one line, one indented line, or one per
    argument)."""
    args = [f'"{s.name}"', f'"{s.entry}"', f"port={s.port}"]
    one = f"    Service({', '.join(args)}),\n"
    if len(one) - 1 <= LINE:
        return one
    inner = f"        {', '.join(args)}\n"
    if len(inner) - 1 <= LINE:
        return f"    Service(\n{inner}    ),\n"
    return "    Service(\n" + "".join(f"        {a},\n" for a in args) + "    ),\n"


def _import_sorted(line: str, where: str) -> Callable[[str], str]:
    """Add ``from contracts.X import ...`` among the other ``from contracts.`` imports,
    in isort's order."""

    def edit(text: str) -> str:
        lines = text.splitlines(keepends=True)
        block = [i for i, one in enumerate(lines) if one.startswith("from contracts.")]
        if not block:
            raise NewServiceError(f"{where}: no 'from contracts.' import to add to")
        module = line.split()[1]
        at = next((i for i in block if lines[i].split()[1] > module), block[-1] + 1)
        return "".join([*lines[:at], line, *lines[at:]])

    return edit


def _edits(s: Service) -> dict[str, Callable[[str], str]]:
    n, up = s.name, s.env_prefix
    events = f"{up}_EVENTS"
    return {
        "services/registry.py": _before(r"^\)", _registry_entry(s), "services/registry.py"),
        "contracts/events.py": _chain(
            _import_sorted(
                f"from contracts.{n} import EVENTS as {events}\n", "contracts/events.py"
            ),
            _after_last(r"^EVENTS: dict\[.*\{$", f"    **{events},\n", "contracts/events.py"),
        ),
        "deploy/compose.yaml": _chain(
            _after_last(
                r"^      [A-Z0-9_]+_DB_PASSWORD: .*$",
                f"      {up}_DB_PASSWORD: portico_{n}\n",
                "deploy/compose.yaml",
            ),
            _before(
                r"^volumes:",
                Template(COMPOSE).substitute(name=n, port=s.port),
                "deploy/compose.yaml",
            ),
        ),
        "deploy/k8s/secrets.example.yaml": _chain(
            _after_last(
                r"^  [A-Z0-9_]+_DB_PASSWORD: CHANGE-ME-.*$",
                f"  {up}_DB_PASSWORD: CHANGE-ME-{n}-password\n",
                "deploy/k8s/secrets.example.yaml",
            ),
            _before(
                r"^---\n(#.*\n)*apiVersion: v1\nkind: Secret\nmetadata:\n  name: portico-operator$",
                Template(K8S_ENV_DOC).substitute(name=n),
                "deploy/k8s/secrets.example.yaml",
            ),
        ),
        "deploy/k8s/kustomization.yaml": _after_last(
            r"^  - services/\S+$", f"  - services/{n}\n", "deploy/k8s/kustomization.yaml"
        ),
    }


COMPOSE = """\
  $name:
    <<: *portico-service
    command: ["run", "$name"]
    environment:
      <<: *portico-env
      PORT: "$port"
      DATABASE_URL: postgresql://portico_$name:portico_$name@postgres:5432/portico

"""

K8S_ENV_DOC = """\
---
apiVersion: v1
kind: Secret
metadata:
  name: portico-$name
  namespace: portico
  labels:
    app.kubernetes.io/part-of: portico
    app.kubernetes.io/component: $name
type: Opaque
stringData:
  DATABASE_URL: postgresql://portico_$name:CHANGE-ME-$name-password@CHANGE-ME-postgres-host:5432/portico
  AMQP_URI: amqp://portico-services:CHANGE-ME-services-amqp-password@CHANGE-ME-rabbitmq-host:5672/portico
"""

# --- the skeleton ----------------------------------------------------------------------

MAKO = '''\
"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''

DOMAIN = '''\
"""$name: the rules. Pure: the standard library and the kit's pure parts only.

The example (replace it with the service's own): staff create a record for a customer,
open; an admin or a manager closes it. Scope first (what the caller may not see is
``not_found``), then read-only callers, then who may (``forbidden``), then the state
machine (``invalid_transition``), then input (``validation_failed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kit.access import ActorLike, Fields, Scope, has_role, is_tenant_wide
from kit.errors import Forbidden, NotFound, ValidationFailed
from kit.statemachine import Clause, Entry, Machine, Move, Refusal, Who

OPEN = "open"
CLOSED = "closed"
STATUSES: tuple[str, ...] = (OPEN, CLOSED)

EVENT_CREATED = "$name.created"
EVENT_CLOSED = "$name.closed"
EVENTS: tuple[str, ...] = (EVENT_CREATED, EVENT_CLOSED)

CREATE_ROLES: frozenset[str] = frozenset({"admin", "manager", "advisor"})
CLOSE_ROLES: frozenset[str] = frozenset({"admin", "manager"})
MAX_TITLE = 200
NOT_FOUND = "No such $name record."

# The scope fields a record has (kit.access): a customer's, always visible to it.
FIELDS = Fields(unit_id=None, visible_to_customer=None, created_by=None, work_order_id=None)


class RecordLike(Protocol):
    """What the rules read of a record."""

    @property
    def tenant_id(self) -> str: ...
    @property
    def customer_id(self) -> str: ...
    @property
    def status(self) -> str: ...


def _tenant_wide(actor: ActorLike) -> bool:
    return is_tenant_wide(actor.kind)


def _may_close(actor: ActorLike) -> bool:
    return has_role(actor.kind, actor.roles, CLOSE_ROLES)


MACHINE: Machine[ActorLike] = Machine(
    noun="$name record",
    states=STATUSES,
    transitions={OPEN: {CLOSED}},
    entries={
        CLOSED: Entry(
            Who(
                (Clause(_tenant_wide, _may_close, refusal=Refusal("only a manager closes it")),),
                otherwise=Refusal("only staff close it"),
            ),
            EVENT_CLOSED,
        )
    },
)


@dataclass(frozen=True)
class NewRecord:
    customer_id: str
    title: str
    status: str
    event: str


def _writable(actor: ActorLike) -> None:
    if actor.read_only:
        raise Forbidden("This session is read-only.")


def prepare_create(actor: ActorLike, *, customer_id: str, title: str) -> NewRecord:
    _writable(actor)
    if not has_role(actor.kind, actor.roles, CREATE_ROLES):
        raise Forbidden("Only staff create $name records.")
    text = title.strip()
    if not 1 <= len(text) <= MAX_TITLE:
        raise ValidationFailed("The title is not valid.", {"title": [f"1 to {MAX_TITLE} chars"]})
    return NewRecord(customer_id, text, OPEN, EVENT_CREATED)


def ensure_visible(actor: ActorLike, record: RecordLike) -> None:
    if not Scope.of(actor).matches(record, FIELDS):
        raise NotFound(NOT_FOUND)


def close(actor: ActorLike, record: RecordLike) -> Move:
    ensure_visible(actor, record)
    _writable(actor)
    return MACHINE.move(actor, record.status, CLOSED)
'''

MODELS = '''\
"""Tables of the $name service (schema ``$name``): the kit's outbox and processed-events
ledger, then its own. Foreign keys between its tables carry ``tenant_id``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kit.db import TenantScoped, infra_tables, make_metadata, new_id, utcnow

metadata = make_metadata("$name")
outbox, processed_events = infra_tables(metadata)
UUID = Uuid(as_uuid=False)


class Base(DeclarativeBase):
    metadata = metadata


class Record(TenantScoped, Base):
    """The example record (replace it): a customer's, open until closed."""

    __tablename__ = "$name"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(UUID)
    title: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[str] = mapped_column(UUID)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("tenant_id", "id"),)  # what tenant_fk points at
'''

SERVICE = '''\
"""$name over RPC. Each entrypoint: parse with a contract schema, apply the domain's
decision inside one unit of work (row + outbox event), return a dump."""

from __future__ import annotations

from typing import Any

from contracts import $name as c
from kit.health import HealthEndpoints
from kit.observability import Metrics
from kit.providers import Database, RequestContext, rpc
from kit.schemas import parse, shared
from services.$name import domain, store
from services.$name.models import Record, metadata


def dump(r: Record) -> dict[str, Any]:
    return shared(c.RecordSchema).dump(
        {"id": r.id, "customer_id": r.customer_id, "title": r.title, "status": r.status}
        | {"created_at": r.created_at}
    )


def event_data(r: Record) -> dict[str, Any]:
    return {"record_id": r.id, "customer_id": r.customer_id, "title": r.title, "status": r.status}


class $Class(HealthEndpoints):
    name = "$name"

    db = Database("$name", metadata)
    ctx = RequestContext()
    metrics = Metrics()

    @rpc
    def create_record(self, payload: dict[str, Any]) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        body = parse(c.CreateBody, payload)
        with self.db.unit_of_work() as uow:
            new = domain.prepare_create(
                actor, customer_id=str(body["customer_id"]), title=body["title"]
            )
            record = Record(customer_id=new.customer_id, title=new.title, status=new.status)
            store.insert(uow, record, created_by=actor.id)
            uow.emit(new.event, event_data(record))
            return dump(record)

    @rpc
    def get_record(self, record_id: str) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        with self.db.unit_of_work() as uow:
            return dump(store.load(uow, actor, record_id))
'''

STORE = '''\
"""Rows of $name in the caller's scope: load (locked to change it), insert."""

from __future__ import annotations

from sqlalchemy import select

from kit.access import ActorLike
from kit.db import UnitOfWork
from kit.errors import NotFound
from kit.ids import is_uuid
from services.$name import domain
from services.$name.models import Record


def load(uow: UnitOfWork, actor: ActorLike, record_id: str, *, lock: bool = False) -> Record:
    if not is_uuid(record_id):
        raise NotFound(domain.NOT_FOUND)
    stmt = select(Record).where(Record.id == record_id)
    found = uow.session.scalars(stmt.with_for_update() if lock else stmt).first()
    if found is None:
        raise NotFound(domain.NOT_FOUND)
    domain.ensure_visible(actor, found)
    return found


def insert(uow: UnitOfWork, record: Record, *, created_by: str) -> Record:
    record.created_by = created_by
    uow.session.add(record)
    uow.session.flush()  # id and defaults, before the event names them
    return record
'''

CONTRACTS = '''\
"""RPC payloads and events of the $name service. The gateway validates HTTP input with
the same schemas and documents them; contracts/events.py registers EVENTS."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

STATUSES = ("open", "closed")


class CreateBody(Schema):
    customer_id = fields.UUID(required=True)
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))


class RecordSchema(Schema):
    id = fields.UUID(required=True)
    customer_id = fields.UUID(required=True)
    title = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    created_at = fields.DateTime(required=True)


class RecordEvent(Schema):
    """What every $name event carries: the record after the change."""

    record_id = fields.UUID(required=True)
    customer_id = fields.UUID(required=True)
    title = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))


class Created(RecordEvent):
    pass


class Closed(RecordEvent):
    pass


# type -> (payload schema, publishing service, one-line meaning)
EVENTS: dict[str, tuple[type[Schema], str, str]] = {
    "$name.created": (Created, "$name", "A record was created."),
    "$name.closed": (Closed, "$name", "A record was closed."),
}
'''

ENV = """\
from kit.migrate import run_env
from services.$name.models import metadata

run_env(metadata)
"""

MIGRATION = '''\
"""$name

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from kit.migrate import create_infra_tables, drop_infra_tables, enable_rls, tenant_key

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "$name"
UUID = sa.Uuid(as_uuid=False)


def upgrade() -> None:
    create_infra_tables(op, SCHEMA)  # outbox + processed_events, indexes, RLS, worker grants
    op.create_table(
        "$name",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("tenant_id", UUID, nullable=False, index=True),
        sa.Column("customer_id", UUID, nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_by", UUID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    # unique (tenant_id, id); a child table then points at it with tenant_fk, e.g.
    # tenant_fk(op, SCHEMA, "${name}_notes", "${name}_id", "$name")
    tenant_key(op, SCHEMA, "$name")
    enable_rls(op, SCHEMA, ("$name",))


def downgrade() -> None:
    op.drop_table("$name", schema=SCHEMA)
    drop_infra_tables(op, SCHEMA)
'''

TEST_DOMAIN = '''\
"""The example rules of $name (replace them with the service's own)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import partial

import pytest

from contracts.$name import EVENTS as CONTRACTED
from kit.context import Actor
from kit.errors import Forbidden, InvalidTransition, NotFound, ValidationFailed
from services.$name import domain as d
from tests import factories

TENANT = str(uuid.UUID(int=1))
CUSTOMER = str(uuid.UUID(int=2))
OTHER = str(uuid.UUID(int=3))


@dataclass(frozen=True)
class Row:
    tenant_id: str = TENANT
    customer_id: str = CUSTOMER
    status: str = d.OPEN


# The shared caller factories (tests/factories.py), with this module's tenant and customer.
staff = partial(factories.staff, tenant=TENANT)


def portal(customer: str = CUSTOMER) -> Actor:
    return factories.portal(customer, tenant=TENANT)


def test_staff_create_an_open_record_with_a_trimmed_title() -> None:
    new = d.prepare_create(staff("advisor"), customer_id=CUSTOMER, title="  Brakes ")
    assert (new.customer_id, new.title, new.status) == (CUSTOMER, "Brakes", d.OPEN)
    assert new.event == d.EVENT_CREATED


@pytest.mark.parametrize("actor", [portal(), staff("technician"), staff("admin", read_only=True)])
def test_only_writing_staff_create(actor: Actor) -> None:
    with pytest.raises(Forbidden):
        d.prepare_create(actor, customer_id=CUSTOMER, title="Brakes")


@pytest.mark.parametrize("title", ["", "   ", "x" * (d.MAX_TITLE + 1)])
def test_a_title_is_required_and_bounded(title: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        d.prepare_create(staff("admin"), customer_id=CUSTOMER, title=title)
    assert set(refused.value.errors or {}) == {"title"}


def test_staff_see_their_tenant_and_customers_their_own() -> None:
    d.ensure_visible(staff("technician"), Row())
    d.ensure_visible(portal(), Row())
    for actor in (staff("admin", tenant=OTHER), portal(OTHER)):
        with pytest.raises(NotFound):
            d.ensure_visible(actor, Row())


def test_a_manager_closes_an_open_record() -> None:
    move = d.close(staff("manager"), Row())
    assert (move.source, move.target, move.event) == (d.OPEN, d.CLOSED, d.EVENT_CLOSED)


def test_closing_checks_scope_then_caller_then_state() -> None:
    with pytest.raises(NotFound):
        d.close(portal(OTHER), Row(status=d.CLOSED))
    for actor in (staff("advisor"), portal(), staff("admin", read_only=True)):
        with pytest.raises(Forbidden):
            d.close(actor, Row(status=d.CLOSED))
    with pytest.raises(InvalidTransition):
        d.close(staff("admin"), Row(status=d.CLOSED))


def test_the_machine_and_the_contracts_name_the_same_events() -> None:
    assert d.MACHINE.final_states == {d.CLOSED}
    assert set(d.EVENTS) == set(CONTRACTED)
    assert {publisher for _, publisher, _ in CONTRACTED.values()} == {"$name"}
'''

_SKELETON = {
    "services/$name/__init__.py": "",
    "services/$name/domain.py": DOMAIN,
    "services/$name/models.py": MODELS,
    "services/$name/service.py": SERVICE,
    "services/$name/store.py": STORE,
    "services/$name/migrations/env.py": ENV,
    "services/$name/migrations/versions/0001_$name.py": MIGRATION,
    "services/$name/tests/__init__.py": "",
    "services/$name/tests/test_domain.py": TEST_DOMAIN,
    "contracts/$name.py": CONTRACTS,
}
