"""The SQL queue on real databases (a SQLite file and a PostgreSQL server): atomic
claims, leases, fencing, the reaper, and which failed attempts count against
max_attempts."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from jobs import queue
from jobs.status import JobStatus
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
            job = Job(id=new_id("ftjob"), project_id="proj-1", model="tiny", status=JobStatus.QUEUED,
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
        queue.release(s, first, 30, status=JobStatus.SUCCEEDED)
    with store.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.lease_owner) == (JobStatus.RUNNING, "worker-b")
        assert not [e for e in s.query(JobEvent).filter_by(job_id=job_id) if e.message == "zombie write"]
        queue.release(s, second, 30, status=JobStatus.SUCCEEDED)
    with store.session() as s:
        assert s.get(Job, job_id).status == JobStatus.SUCCEEDED


def test_reaper_fails_a_job_out_of_attempts(store):
    [job_id] = add_jobs(store, 1, max_attempts=1)
    assert queue.claim_next(store, "worker-a", lease_seconds=0.1)
    time.sleep(0.2)
    queue.reap_expired(store)
    with store.session() as s:
        job = s.get(Job, job_id)
        assert job.status == JobStatus.FAILED and job.error["code"] == "worker_lost"
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


# -- which failed attempts count against max_attempts (module doc of jobs/queue.py) -------

def lose_worker(store: Store, job_id: str, *, checkpoint_step: int | None = None) -> queue.Claim:
    """Claim the job, optionally relay a checkpoint as the worker does, then let the lease
    lapse (the worker was SIGKILLed) and reap it."""
    claim = queue.claim_next(store, f"worker-{time.monotonic_ns()}", lease_seconds=0.1)
    assert claim is not None and claim.job_id == job_id
    if checkpoint_step is not None:
        with store.session() as s:
            queue.fence(s, claim, 0.1)
            job = s.get(Job, job_id)
            job.progress_step = max(job.progress_step, checkpoint_step)
    time.sleep(0.15)
    assert queue.reap_expired(store) == [job_id]
    return claim


def test_lost_workers_that_checkpointed_use_no_attempts(store):
    [job_id] = add_jobs(store, 1, max_attempts=3)
    for step in range(10):  # ten lost workers, each after a newer checkpoint
        claim = lose_worker(store, job_id, checkpoint_step=step)
        assert claim.attempt == step + 1
    with store.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.attempts, job.charged_attempts) == (JobStatus.QUEUED, 10, 0)
        notes = [e.message for e in s.query(JobEvent).filter_by(job_id=job_id)]
    assert sum("Not counted against its attempts" in n for n in notes) == 10
    last = queue.claim_next(store, "worker-z", lease_seconds=30)
    assert last.attempt == 11
    with store.session() as s:
        queue.release(s, last, 30, status=JobStatus.SUCCEEDED)
        assert s.get(Job, job_id).status == JobStatus.SUCCEEDED


def test_lost_workers_without_a_new_checkpoint_use_attempts(store):
    [job_id] = add_jobs(store, 1, max_attempts=3)
    lose_worker(store, job_id, checkpoint_step=4)  # progress: free
    lose_worker(store, job_id, checkpoint_step=4)  # the same checkpoint again: charged
    lose_worker(store, job_id)                     # nothing at all: charged
    with store.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.charged_attempts) == (JobStatus.QUEUED, 2)
    lose_worker(store, job_id)
    with store.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.attempts, job.charged_attempts) == (JobStatus.FAILED, 4, 3)
        assert job.error["code"] == "worker_lost" and "on 3 of its attempts" in job.error["message"]
    assert queue.claim_next(store, "worker-b", lease_seconds=30) is None


def test_a_renewed_lease_is_not_reaped(store):
    [job_id] = add_jobs(store, 1)
    claim = queue.claim_next(store, "worker-a", lease_seconds=0.1)
    time.sleep(0.15)
    with store.session() as s:  # the worker's heartbeat, just in time
        queue.fence(s, claim, 30)
    assert queue.reap_expired(store) == []
    with store.session() as s:
        assert s.get(Job, job_id).charged_attempts == 0


def test_trainer_crashes_use_attempts_even_after_progress(store, tmp_path):
    """The trainer itself failing (non-zero exit, worker alive) is always charged: the job
    fails on the max_attempts-th crash with the trainer's error, checkpoints or not."""
    from jobs.job_run import JobRun

    [job_id] = add_jobs(store, 1, max_attempts=3)
    worker = SimpleNamespace(config=SimpleNamespace(data_dir=tmp_path, lease_seconds=30), store=store)
    for n in range(1, 4):
        claim = queue.claim_next(store, "worker-a", lease_seconds=30)
        run = JobRun(worker, claim)
        run.last_error = {"type": "error", "code": "trainer_error", "message": "RuntimeError: boom"}
        with store.session() as s:
            s.get(Job, job_id).progress_step = n * 2  # it checkpointed before crashing
        run._settle_crash(1)
        with store.session() as s:
            job = s.get(Job, job_id)
            assert job.charged_attempts == n
            assert job.status == (JobStatus.FAILED if n == 3 else JobStatus.QUEUED)
    assert job.error["code"] == "trainer_crashed"
    assert "exited with code 1 on 3 attempts" in job.error["message"]
    assert "RuntimeError: boom" in job.error["message"]


def test_a_lost_worker_between_two_crashes_is_free_when_it_checkpointed(store, tmp_path):
    from jobs.job_run import JobRun

    [job_id] = add_jobs(store, 1, max_attempts=2)
    worker = SimpleNamespace(config=SimpleNamespace(data_dir=tmp_path, lease_seconds=30), store=store)
    run = JobRun(worker, queue.claim_next(store, "worker-a", lease_seconds=30))
    run._settle_crash(1)                          # 1 of 2 charged
    lose_worker(store, job_id, checkpoint_step=3)  # machinery, with progress: free
    with store.session() as s:
        assert (s.get(Job, job_id).status, s.get(Job, job_id).charged_attempts) == (JobStatus.QUEUED, 1)
    run = JobRun(worker, queue.claim_next(store, "worker-c", lease_seconds=30))
    run._settle_crash(1)                          # 2 of 2: failed
    with store.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.error["code"], job.attempts) == (JobStatus.FAILED, "trainer_crashed", 3)
