"""metric.recorded_at: when each metric point was written, for curves against wall time

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 14:30:00.000000

Points written before this revision have no time (NULL); the charts leave them out of a wall-time axis
and say so.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('metric', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recorded_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('metric', schema=None) as batch_op:
        batch_op.drop_column('recorded_at')
