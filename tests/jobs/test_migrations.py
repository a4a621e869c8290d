"""Alembic migrations on real databases: 0003 (audit events, key expiry) upgrades a
database holding rows at 0002, on SQLite and on PostgreSQL, and matches the models."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from jobs.migrate import alembic_config, upgrade
from jobs.store import ApiKey, AuditEvent, Base, Store
from tests.postgres import postgres_server


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rft.db'}"
    else:
        with postgres_server() as url:
            yield url


def test_0003_upgrades_a_0002_database_with_rows(url):
    store = Store(url)
    try:
        upgrade(store.engine, "0002")
        with store.engine.begin() as conn:
            conn.execute(text("INSERT INTO projects (id, name, created_at) VALUES ('proj-1', 'p', 1)"))
            conn.execute(text("INSERT INTO api_keys (id, project_id, key_hash, prefix, created_at) "
                              "VALUES ('key-1', 'proj-1', 'h', 'rft-abcdef', 1)"))
        store.migrate()
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        with store.session() as s:
            assert s.get(ApiKey, "key-1").expires_at is None  # old keys never expire
            s.get(ApiKey, "key-1").expires_at = 2_000_000_000
            for i in range(3):
                s.add(AuditEvent(id=f"audit-{i}", project_id="proj-1", key_id="key-1", actor="api_key",
                                 action="job.create", object_type="fine_tuning.job", object_id=f"ftjob-{i}",
                                 data={"model": "tiny"}))
        with store.session() as s:
            rows = s.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
            assert [r.id for r in rows] == ["audit-0", "audit-1", "audit-2"]
            assert rows[0].data == {"model": "tiny"} and rows[0].created_at > 0
            assert s.get(ApiKey, "key-1").expires_at == 2_000_000_000
        # And back down to 0002, keeping the key.
        command.downgrade(alembic_config(store.engine), "0002")
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT id FROM api_keys")).scalars().all() == ["key-1"]
    finally:
        store.dispose()
