"""machinery failures: charged attempts and checkpoint progress on jobs

``attempts`` keeps counting claims; ``charged_attempts`` counts the failed attempts held
against ``max_attempts`` (jobs/queue.py, docs/internals.md "Attempts"). Jobs that exist
at upgrade time start with nothing charged and no progress recorded: the old
``attempts`` mixed claims, pauses and failures, so it cannot be split after the fact.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('charged_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('progress_step', sa.Integer(), server_default='-1', nullable=False))
        batch_op.add_column(sa.Column('claim_progress_step', sa.Integer(), server_default='-1', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('claim_progress_step')
        batch_op.drop_column('progress_step')
        batch_op.drop_column('charged_attempts')
