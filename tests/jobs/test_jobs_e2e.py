"""RFT jobs end to end: real `rft serve`, real workers and trainer children, tiny model.

Hyperparameters are shrunk so each job takes seconds on 2 CPU cores: 8 rows, 2 rows per
step, 2 completions per prompt (the fewest GRPO can compare), 6 completion tokens (the
answers are a few characters), evals every 2 steps on 2 validation rows.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time

import pytest

from tests.server import start_server
from tests.service.test_serve import alive, children_of

pytestmark = pytest.mark.slow

ROWS = [{"messages": [{"role": "user", "content": f"say {w}"}], "answer": w} for w in
        ("ab", "ba", "abc", "cab", "bca", "aa", "bb", "cc")]
GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "ilike"}


def tiny_hyper(**overrides) -> dict:
    hyper = {
        "n_epochs": 2,                # 8 steps: enough to checkpoint several times
        "batch_size": 2,              # 2 prompts per step keeps a step under a second
        "num_generations": 2,         # the smallest group GRPO can rank
        "max_completion_tokens": 6,   # answers are a few characters
        "eval_interval": 2,
        "eval_samples": 2,
        "learning_rate_multiplier": 10.0,  # a visible parameter change in few steps
    }
    hyper.update(overrides)
    return hyper


def upload(client) -> str:
    body = b"".join(json.dumps(r).encode() + b"\n" for r in ROWS)
    return client.files.create(file=("rows.jsonl", io.BytesIO(body)), purpose="fine-tune").id


def create(client, train: str, **hyper) -> str:
    return client.fine_tuning.jobs.create(
        model="tiny", training_file=train, validation_file=train, seed=3,
        method={"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": tiny_hyper(**hyper)}},
    ).id


def wait_for(client, job_id: str, statuses: tuple[str, ...], timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    events = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100)]
    raise AssertionError(f"job {job_id} is {job.status}, not {statuses}; events: {events}")


def wait_for_step(client, job_id: str, step: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if (job.model_extra or {}).get("step", 0) >= step:
            return
        assert job.status in ("queued", "running"), job.status
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never reached step {step}")


def metrics(client, job_id: str) -> list[dict]:
    events = list(client.fine_tuning.jobs.list_events(job_id, limit=100))
    return [dict(e.data) for e in reversed(events) if e.type == "metrics"]


def train_steps(client, job_id: str) -> list[int]:
    return [m["step"] for m in metrics(client, job_id) if "train_reward_mean" in m]


@pytest.fixture(scope="module")
def server(tmp_path_factory, models_dir):
    root = tmp_path_factory.mktemp("e2e")
    srv = start_server(root / "data", workers=2,
                       env={"RFT_MODELS_DIR": str(models_dir), "RFT_LEASE_SECONDS": "6"})
    yield srv
    srv.stop()


def test_job_runs_to_success_with_metrics_and_checkpoints(server):
    client = server.client("e2e-run")
    job_id = create(client, upload(client))
    job = wait_for(client, job_id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:tiny:e2e-run:{job_id}"
    steps = [m for m in metrics(client, job_id) if "train_reward_mean" in m]
    assert steps[-1]["step"] == 8
    assert all("kl" in m for m in steps)
    assert any("valid_reward_mean" in m for m in metrics(client, job_id))
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job_id))
    assert 1 <= len(checkpoints) <= 4  # best 3 by validation reward, plus the newest
    assert all(c.fine_tuned_model_checkpoint.startswith(job.fine_tuned_model + ":ckpt-step-") for c in checkpoints)
    assert job.trained_tokens and job.trained_tokens > 0
    assert job.fine_tuned_model in [m.id for m in client.models.list()]
    assert client.models.retrieve(job.fine_tuned_model).id == job.fine_tuned_model


def test_pause_then_resume_carries_the_step_on(server):
    client = server.client("e2e-pause")
    job_id = create(client, upload(client), n_epochs=12)  # long enough to be paused mid-run
    wait_for_step(client, job_id, 3)
    client.fine_tuning.jobs.pause(job_id)
    paused = wait_for(client, job_id, ("paused", "succeeded", "failed"))
    assert paused.status == "paused"
    paused_at = max(train_steps(client, job_id))
    assert paused_at < 48
    assert list(client.fine_tuning.jobs.checkpoints.list(job_id))
    client.fine_tuning.jobs.resume(job_id)
    done = wait_for(client, job_id, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    steps = train_steps(client, job_id)
    assert steps[-1] == 48
    assert len(steps) < 48 + paused_at, "the resumed run did not start again from step 1"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100)]
    assert any("Resuming from checkpoint" in m for m in messages)


def test_cancel_stops_within_seconds(server):
    client = server.client("e2e-cancel")
    job_id = create(client, upload(client), n_epochs=50)
    wait_for_step(client, job_id, 1)
    asked = time.monotonic()
    client.fine_tuning.jobs.cancel(job_id)
    job = wait_for(client, job_id, ("cancelled", "succeeded", "failed"), timeout=60)
    assert job.status == "cancelled"
    assert time.monotonic() - asked < 30


def test_kill_9_of_the_worker_resumes_from_a_checkpoint(server):
    client = server.client("e2e-kill")
    job_id = create(client, upload(client), n_epochs=4)
    wait_for_step(client, job_id, 5)
    # The worker holding the job is the one whose child is a trainer.
    workers = [p for p in children_of(server.proc.pid) if b"jobs.worker" in open(f"/proc/{p}/cmdline", "rb").read()]
    holder = [w for w in workers if children_of(w)]
    assert len(holder) == 1
    trainer = children_of(holder[0])[0]
    os.kill(holder[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(trainer) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(trainer), "the trainer dies with its worker"
    job = wait_for(client, job_id, ("succeeded", "failed", "cancelled"), timeout=300)
    assert job.status == "succeeded", job.error
    assert (job.model_extra or {}).get("attempts") == 2
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100)]
    assert any("Resuming from checkpoint" in m for m in messages)
    assert train_steps(client, job_id)[-1] == 16


def test_two_workers_run_each_queued_job_exactly_once(server):
    client = server.client("e2e-many")
    train = upload(client)
    # One step each (all 8 rows in one batch, one epoch): many tiny jobs.
    ids = [create(client, train, n_epochs=1, batch_size=8, eval_interval=1) for _ in range(4)]
    for job_id in ids:
        assert wait_for(client, job_id, ("succeeded", "failed", "cancelled"), timeout=400).status == "succeeded"
    for job_id in ids:
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert (job.model_extra or {}).get("attempts") == 1
        claims = [e for e in client.fine_tuning.jobs.list_events(job_id, limit=100) if "claimed by a worker" in e.message]
        assert len(claims) == 1
