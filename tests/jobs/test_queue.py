"""The SQL queue on real databases (a SQLite file and a PostgreSQL server): atomic
claims, leases, fencing, the reaper."""

from __future__ import annotations

import threading
import time

import pytest

from jobs import queue, spec
from jobs.store import Job, JobEvent, Project, Store, new_id, now
from tests.postgres import postgres_server


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield from _store(f"sqlite:///{tmp_path / 'rft.db'}")
    else:
        with postgres_server() as url:
            yield from _store(url)


def _store(url: str):
    store = Store(url)
    store.migrate()
    with store.session() as s:
        s.add(Project(id="proj-1", name="p", created_at=now()))
    yield store
    store.dispose()


def add_jobs(store: Store, n: int, max_attempts: int = 3) -> list[str]:
    ids = []
    with store.session() as s:
        for i in range(n):
            job = Job(id=new_id("ftjob"), project_id="proj-1", model="tiny", status=spec.QUEUED,
                      created_at=now() + i, training_file="file-x", seed=0, method={"type": "reinforcement"},
                      max_attempts=max_attempts)
            s.add(job)
            ids.append(job.id)
    return ids


def test_a_worker_whose_lease_expired_can_no_longer_write(store):
    [job_id] = add_jobs(store, 1)
    first = queue.claim_next(store, "worker-a", lease_seconds=0.2)
    assert first is not None and first.attempt == 1
    time.sleep(0.3)
    assert queue.reap_expired(store) == [job_id]
    second = queue.claim_next(store, "worker-b", lease_seconds=30)
    assert second is not None and second.attempt == 2 and second.token > first.token

    with pytest.raises(queue.LeaseLost), store.session() as s:
        queue.add_event(s, job_id, "zombie write")
        queue.fence(s, first, 30)
    with pytest.raises(queue.LeaseLost), store.session() as s:
        queue.release(s, first, 30, status=spec.SUCCEEDED)
    with store.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.lease_owner) == (spec.RUNNING, "worker-b")
        assert not [e for e in s.query(JobEvent).filter_by(job_id=job_id) if e.message == "zombie write"]
        queue.release(s, second, 30, status=spec.SUCCEEDED)
    with store.session() as s:
        assert s.get(Job, job_id).status == spec.SUCCEEDED


def test_reaper_fails_a_job_out_of_attempts(store):
    [job_id] = add_jobs(store, 1, max_attempts=1)
    assert queue.claim_next(store, "worker-a", lease_seconds=0.1)
    time.sleep(0.2)
    queue.reap_expired(store)
    with store.session() as s:
        job = s.get(Job, job_id)
        assert job.status == spec.FAILED and job.error["code"] == "worker_lost"
    assert queue.claim_next(store, "worker-b", lease_seconds=30) is None


def test_concurrent_claims_take_each_job_once(store):
    ids = add_jobs(store, 40)
    taken: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (claim := queue.claim_next(store, name, lease_seconds=30)) is not None:
            with lock:
                taken.append(claim.job_id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)


def test_requested_action_reaches_the_holder(store):
    [job_id] = add_jobs(store, 1)
    claim = queue.claim_next(store, "worker-a", lease_seconds=30)
    with store.session() as s:
        s.get(Job, job_id).requested_action = "pause"
    assert queue.requested_action(store, job_id) == "pause"
    with store.session() as s:
        assert queue.fence(s, claim, 30) == "pause"
