"""What a worker does before a resumed attempt spawns its trainer: import the dead
attempt's events once, and reconcile the store with the job dir it left behind
(jobs/job_run.py, ``JobRun._reconcile``). No trainer runs here."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs import queue
from jobs.job_run import JobRun, newest_complete_checkpoint
from jobs.status import JobStatus
from jobs.store import Checkpoint, Job, JobEvent, Project, Store, new_id, now


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'rft.db'}")
    store.migrate()
    with store.session() as s:
        s.add(Project(id="proj-1", name="p", created_at=now()))
    yield store
    store.dispose()


def checkpoint(job_dir: Path, step: int, complete: bool = True) -> None:
    folder = job_dir / "checkpoints" / f"step-{step}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    if complete:
        (folder / "COMPLETE").write_text(json.dumps({"step": step, "metrics": {"valid_reward_mean": 0.5},
                                                     "elapsed_seconds": 1.0}))


def test_a_resumed_attempt_sees_one_event_per_line_and_only_loadable_checkpoints(store, tmp_path):
    with store.session() as s:
        job = Job(id=new_id("ftjob"), project_id="proj-1", model="tiny", status=JobStatus.QUEUED, created_at=now(),
                  training_file="file-x", seed=0, method={"type": "reinforcement"})
        s.add(job)
    job_id = job.id
    job_dir = tmp_path / "jobs" / job_id
    worker = SimpleNamespace(config=SimpleNamespace(data_dir=tmp_path, lease_seconds=30), store=store)

    # Attempt 1 relays steps 0 and 1 and checkpoint step-0, then its worker is killed
    # while its trainer writes on: step 2's metrics, a save of step-2 cut short; and
    # step-1 was saved, but the trainer died before announcing it. The store also lists a pruned step-5 whose deletion
    # event was lost with the worker.
    first = queue.claim_next(store, "worker-a", lease_seconds=30)
    job_dir.mkdir(parents=True)
    (job_dir / "spec.json").write_text(json.dumps({"attempt": first.attempt}))
    lines = [
        {"type": "message", "level": "info", "message": "Training started"},
        {"type": "metrics", "data": {"step": 0, "total_steps": 4, "valid_reward_mean": 0.5}},
        {"type": "checkpoint", "name": "step-0", "step": 0, "metrics": {}},
        {"type": "metrics", "data": {"step": 1, "total_steps": 4, "train_reward_mean": 0.1}},
        {"type": "metrics", "data": {"step": 2, "total_steps": 4, "train_reward_mean": 0.2}},
    ]
    (job_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"type": "mes')
    relay = JobRun(worker, first)
    relay.events_path = job_dir / "events.relayed"  # what attempt 1's worker got to relay
    relay.events_path.write_text("".join(json.dumps(e) + "\n" for e in lines[:4]))
    relay._tail(attempt=first.attempt)
    for step in (0, 1):
        checkpoint(job_dir, step)
    checkpoint(job_dir, 2, complete=False)
    with store.session() as s:
        s.add(Checkpoint(id=new_id("ftckpt"), job_id=job_id, project_id="proj-1", name="step-5", step=5,
                         metrics={}, path="x", model_name="ft:gone", created_at=now()))
        s.get(Job, job_id).lease_expires_at = 0
    assert queue.reap_expired(store) == [job_id]

    second = queue.claim_next(store, "worker-b", lease_seconds=30)
    run = JobRun(worker, second)
    run._import_previous_events()
    resume = newest_complete_checkpoint(job_dir)
    assert resume.name == "step-1"
    with store.session() as s:
        queue.fence(s, second, 30)
        run._reconcile(s, str(resume))

    with store.session() as s:
        job = s.get(Job, job_id)
        events = s.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.seq).all()
        names = sorted(c.name for c in s.query(Checkpoint).filter_by(job_id=job_id))
    assert names == ["step-0", "step-1"]
    assert (job.progress_step, job.claim_progress_step, job.current_step) == (1, 1, 1)
    assert job.charged_attempts == 0  # the dead attempt had relayed step-0
    short = job_id.split("-", 1)[-1]
    from_trainer = [e.id for e in events if e.id.startswith(f"ftevent-{short}-")]
    assert from_trainer == [f"ftevent-{short}-1-{i}" for i in (1, 2, 3, 4, 5)]
    assert [e.data["step"] for e in events if e.type == "metrics"] == [0, 1]
    [stale] = [e for e in events if e.id == f"ftevent-{short}-1-5"]
    assert (stale.type, stale.level, stale.data["step"]) == ("message", "warn", 2)
    assert "discarded" in stale.message
    assert any("Metrics of step 2 from an interrupted attempt were discarded" in e.message for e in events)
    assert list(job_dir.glob("events.attempt-1.*.jsonl"))
