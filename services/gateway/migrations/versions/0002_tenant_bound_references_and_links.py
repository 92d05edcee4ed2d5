"""tenant-bound references, invitation and reset links, new-request roles

Every foreign key between business tables becomes composite, ``(tenant_id, x_id) ->
(tenant_id, id)``: PostgreSQL checks foreign keys without row-level security, so a
single-column reference could point into another tenant. Passwords become optional
(an account waits for its invitation to be accepted), and ``link_tokens`` holds the
hashes of invitation and password-reset links.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from kit.migrate import rls_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = "gateway"
# (table, old single-column FK, columns, referred table)
REFERENCES = [
    ("contacts", "fk_contacts_customer_id_customers", ["customer_id"], "customers"),
    ("units", "fk_units_customer_id_customers", ["customer_id"], "customers"),
    ("portal_accounts", "fk_portal_accounts_customer_id_customers", ["customer_id"], "customers"),
    ("portal_accounts", "fk_portal_accounts_contact_id_contacts", ["contact_id"], "contacts"),
    (
        "refresh_tokens",
        "fk_refresh_tokens_session_id_auth_sessions",
        ["session_id"],
        "auth_sessions",
    ),
]
REFERRED = ("customers", "contacts", "auth_sessions")


def _new_name(table: str, referred: str) -> str:
    return f"fk_{table}_tenant_id_{referred}"


def upgrade() -> None:
    for table in REFERRED:
        op.create_unique_constraint(
            f"uq_{table}_tenant_id_id", table, ["tenant_id", "id"], schema=S
        )
    for table, old, columns, referred in REFERENCES:
        op.drop_constraint(old, table, type_="foreignkey", schema=S)
        op.create_foreign_key(
            _new_name(table, referred),
            table,
            referred,
            ["tenant_id", *columns],
            ["tenant_id", "id"],
            source_schema=S,
            referent_schema=S,
        )

    for table in ("staff_users", "portal_accounts"):
        op.alter_column(table, "password_hash", nullable=True, schema=S)

    op.add_column(
        "tenant_settings",
        sa.Column(
            "notify_new_request_roles",
            sa.ARRAY(sa.String(length=32)),
            nullable=False,
            server_default=sa.text("'{manager,advisor}'::varchar(32)[]"),
        ),
        schema=S,
    )
    op.alter_column("tenant_settings", "notify_new_request_roles", server_default=None, schema=S)

    op.create_table(
        "link_tokens",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("subject_kind", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_link_tokens_token_hash")),
        schema=S,
    )
    op.create_index(
        op.f("ix_link_tokens_subject_id"), "link_tokens", ["subject_id"], unique=False, schema=S
    )
    op.create_index(
        op.f("ix_link_tokens_tenant_id"), "link_tokens", ["tenant_id"], unique=False, schema=S
    )
    for statement in rls_sql(S, "link_tokens"):
        op.execute(statement)


def downgrade() -> None:
    op.drop_index(op.f("ix_link_tokens_tenant_id"), table_name="link_tokens", schema=S)
    op.drop_index(op.f("ix_link_tokens_subject_id"), table_name="link_tokens", schema=S)
    op.drop_table("link_tokens", schema=S)
    op.drop_column("tenant_settings", "notify_new_request_roles", schema=S)
    # Accounts still waiting for their invitation cannot go back to a required password.
    for table in ("staff_users", "portal_accounts"):
        op.execute(f"update {S}.{table} set password_hash = '!' where password_hash is null")
        op.alter_column(table, "password_hash", nullable=False, schema=S)
    for table, old, columns, referred in REFERENCES:
        op.drop_constraint(_new_name(table, referred), table, type_="foreignkey", schema=S)
        op.create_foreign_key(
            old, table, referred, columns, ["id"], source_schema=S, referent_schema=S
        )
    for table in REFERRED:
        op.drop_constraint(f"uq_{table}_tenant_id_id", table, type_="unique", schema=S)
