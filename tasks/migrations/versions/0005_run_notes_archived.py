"""run.notes (the researcher's notes) and run.archived (hidden from the Runs table by default)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00.000000

Existing runs get empty notes and are not archived (server defaults, so the NOT NULL columns can be added
to a table that has rows). Plain ALTER TABLE (recreate="never", SQLite >= 3.35 drops columns itself): copying
the run table, batch mode's way, would drop it under the foreign keys of its metrics and results.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('run', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('notes', sa.Text(), server_default='', nullable=False))
        batch_op.add_column(sa.Column('archived', sa.Boolean(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('run', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('archived')
        batch_op.drop_column('notes')
