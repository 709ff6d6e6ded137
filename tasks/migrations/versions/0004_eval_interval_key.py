"""evalresult.ci_low / ci_high (95 % Wilson interval) and eval_key (resumable evaluations)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 12:00:00.000000

The intervals of rows stored before this revision are computed here from their accuracy and number of
examples (the same function the evaluation uses), so old and new results both carry them. Old rows get
no eval_key: an evaluation that resumes does not know what they were computed with, and replaces them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('evalresult', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ci_low', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('ci_high', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('eval_key', sa.String(), nullable=True))
        batch_op.create_index('ix_evalresult_run_key', ['run_id', 'eval_key'], unique=True)
    _backfill_intervals()


def _backfill_intervals() -> None:
    from igat.stats import wilson_of_accuracy

    conn = op.get_bind()
    table = sa.table('evalresult', sa.column('id', sa.Integer), sa.column('accuracy', sa.Float),
                     sa.column('num_examples', sa.Integer), sa.column('ci_low', sa.Float),
                     sa.column('ci_high', sa.Float))
    rows = conn.execute(sa.select(table.c.id, table.c.accuracy, table.c.num_examples)
                        .where(table.c.num_examples > 0)).all()
    for row_id, accuracy, n in rows:
        lo, hi = wilson_of_accuracy(accuracy, n)
        conn.execute(sa.update(table).where(table.c.id == row_id).values(ci_low=lo, ci_high=hi))


def downgrade() -> None:
    with op.batch_alter_table('evalresult', schema=None) as batch_op:
        batch_op.drop_index('ix_evalresult_run_key')
        batch_op.drop_column('eval_key')
        batch_op.drop_column('ci_high')
        batch_op.drop_column('ci_low')
