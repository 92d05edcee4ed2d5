"""Deliveries to portal accounts (sign-in links)

``auth.link_issued`` mails an invitation or password-reset link to the account it is
for, which may be a portal account: ``recipient_kind`` gains ``portal``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 22:30:00
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "notify"


def upgrade() -> None:
    op.drop_constraint("ck_deliveries_recipient_kind", "deliveries", schema=SCHEMA)
    op.create_check_constraint(
        op.f("ck_deliveries_recipient_kind"),
        "deliveries",
        "recipient_kind in ('contact', 'staff', 'portal')",
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.execute(f"delete from {SCHEMA}.deliveries where recipient_kind = 'portal'")
    op.drop_constraint("ck_deliveries_recipient_kind", "deliveries", schema=SCHEMA)
    op.create_check_constraint(
        op.f("ck_deliveries_recipient_kind"),
        "deliveries",
        "recipient_kind in ('contact', 'staff')",
        schema=SCHEMA,
    )
