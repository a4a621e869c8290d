"""The API on PostgreSQL (RFT_DATABASE_URL) instead of the default SQLite file."""

from __future__ import annotations

import openai
import pytest

from tests.postgres import postgres_server
from tests.server import start_server
from tests.service.test_jobs_api import method, upload


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory, models_dir):
    with postgres_server() as url:
        server = start_server(tmp_path_factory.mktemp("pg-api") / "data",
                              env={"RFT_MODELS_DIR": str(models_dir), "RFT_DATABASE_URL": url})
        yield server
        server.stop()


def test_files_and_jobs_on_postgres(pg_server):
    client = pg_server.client("pg")
    train = upload(client)
    assert client.files.retrieve(train).bytes > 0
    job = client.fine_tuning.jobs.create(model="tiny", training_file=train, method=method(),
                                         extra_headers={"Idempotency-Key": "pg-1"})
    again = client.fine_tuning.jobs.create(model="tiny", training_file=train, method=method(),
                                           extra_headers={"Idempotency-Key": "pg-1"})
    assert again.id == job.id and job.status == "queued"
    assert [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    with pytest.raises(openai.ConflictError):
        client.files.delete(train)
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with pytest.raises(openai.NotFoundError):
        pg_server.client("pg-other").fine_tuning.jobs.retrieve(job.id)
