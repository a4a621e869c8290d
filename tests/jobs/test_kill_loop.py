"""A job outlives its workers: the worker holding a GRPO job is SIGKILLed ten times, at
random moments inside generation, grading, eval and checkpoint saves, and the job still
succeeds, with every event and checkpoint intact, its metrics one event per step, and
nothing charged against its attempts (the rule in jobs/queue.py).

A real ``rft serve`` runs the API with no worker of its own; the test starts each
``rft worker`` itself, so that it knows which process holds the job and can start the
next one at once (the supervisor of ``rft serve`` backs off between restarts).

Where a kill lands is measured, not guessed. The job grades through an ``endpoint``
grader served by this test, which answers after ``GRADE_SECONDS`` as a remote judge
would: the requests mark when a step's generation ends and its grading starts and ends,
and when the eval's grading ends. The events file marks the rest (a step starts as the
previous save ends; its save runs from its metrics event to its checkpoint event). Each
kill is aimed at a random moment of its phase, checked just before it is sent (a phase
that ended early is given up for the same phase of the next step) and checked again
once the trainer is dead. One phase is bounded only from outside: the eval's window
runs from the step's last training answer to the eval's last one, so it opens with the
optimizer step (a few hundredths of a second); eval kills are aimed past twice the
optimizer step's measured length.

Shrunk for time on 2 CPU cores (as in test_jobs_e2e.py): 8 rows, 2 a step, 2 completions
a prompt. Specific to this test:
- eval_interval 1: every step evaluates and checkpoints, so each attempt makes progress
  within a step of starting and every step has an eval and a save to be killed in;
- n_epochs 5 (20 steps): the ten attempts use two or three steps each, the last one has
  steps left to finish;
- eval_samples 4, max_completion_tokens 96: the untrained model rarely stops early, so
  generation and eval take a few tenths of a second each, long enough to aim a kill
  inside them, while a step stays near a second;
- RFT_LEASE_SECONDS 2: a dead worker's job is re-leased 2 s after its last heartbeat
  rather than 30 s. With one worker at a time nobody reaps a live worker's lease, so a
  short lease cannot cause spurious takeovers here.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.jobs.test_jobs_e2e import ROWS, tiny_hyper, wait_for
from tests.server import start_server
from tests.service.test_serve import alive, children_of

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

KILLS = 10
PHASES = ["generation"] * 3 + ["grading"] * 2 + ["eval"] * 3 + ["save"] * 2
LEASE_SECONDS = "2"
GRADE_SECONDS = 0.1
TRAIN_CALLS = 4  # batch_size 2 x num_generations 2
EVAL_CALLS = 4   # eval_samples


class SlowGrader(ThreadingHTTPServer):
    """The job's endpoint grader: exact match, answered after GRADE_SECONDS. Notes each
    request as [split, began, answered] on the test's clock."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _GraderHandler)
        self.lock = threading.Lock()
        self.calls: list[list] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/grade"

    def since(self, t: float, split: str) -> list[list]:
        with self.lock:
            return [c for c in self.calls if c[0] == split and c[1] >= t]


class _GraderHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        call = [body["item"]["split"], time.monotonic(), None]
        with self.server.lock:
            self.server.calls.append(call)
        time.sleep(GRADE_SECONDS)
        score = float(body["sample"]["output_text"].strip().lower() == body["item"]["answer"])
        payload = json.dumps({"score": score}).encode()
        try:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            call[2] = time.monotonic()
        except OSError:
            pass  # the trainer that asked is dead

    def log_message(self, *args):
        pass


class Attempt:
    """Follows one attempt's ``events.jsonl``: each event with the time it was written
    (the file's mtime, when no later line had come in; else the time it was read)."""

    def __init__(self, path: Path):
        self.path = path
        self.events: list[tuple[float, dict]] = []
        self._offset = 0

    def poll(self) -> None:
        try:
            before = self.path.stat().st_mtime
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
            after = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        written = time.monotonic() - (time.time() - after) if before == after else time.monotonic()
        self.events += [(written, json.loads(line)) for line in data[: end + 1].splitlines()]

    def at(self, kind: str, step: int) -> float | None:
        """When the event of ``kind`` for ``step`` was written, or None."""
        for t, e in self.events:
            if e["type"] == kind and (e.get("step") if kind == "checkpoint" else e["data"].get("step")) == step:
                return t
        return None

    def step_start(self, step: int) -> float | None:
        """When ``step`` began in this attempt: the previous step's save (and pruning) ended."""
        found = None
        for t, e in self.events:
            if found is None:
                if e["type"] == "checkpoint" and e["step"] == step - 1:
                    found = t
            elif e["type"] == "checkpoint_deleted":
                found = t
            else:
                break
        return found

    def newest(self) -> int | None:
        steps = [e["step"] for _, e in self.events if e["type"] == "checkpoint"]
        return steps[-1] if steps else None


class Estimates:
    """Phase lengths of the steps watched whole so far: the median of the last three, as
    the machine's load (shared with other work) changes them."""

    def __init__(self):
        self.phases: dict[str, list[float]] = {"generation": [], "grading": [], "training": [], "eval": [],
                                               "save": []}
        self._learnt: set[tuple[int, int]] = set()

    def learn(self, attempt: Attempt, grader: SlowGrader) -> None:
        for _, e in attempt.events:
            if e["type"] != "checkpoint" or (id(attempt), e["step"]) in self._learnt:
                continue
            step = e["step"]
            metrics_at, saved_at = attempt.at("metrics", step), attempt.at("checkpoint", step)
            started = attempt.step_start(step)
            since = started if started is not None else attempt.events[0][0]
            train, valid = grader.since(since, "train")[:TRAIN_CALLS], grader.since(since, "valid")[:EVAL_CALLS]
            self._learnt.add((id(attempt), step))
            if step == 0 or len(train) < TRAIN_CALLS or len(valid) < EVAL_CALLS:
                continue
            if started is not None:  # an attempt's first step also loads and warms up
                self.phases["generation"].append(train[0][1] - started)
            self.phases["grading"].append(max(c[2] for c in train) - train[0][1])
            self.phases["training"].append(next(e["data"]["timings"]["training_seconds"] for _, e in attempt.events
                                                if e["type"] == "metrics" and e["data"]["step"] == step))
            self.phases["eval"].append(max(c[2] for c in valid) - max(c[2] for c in train))
            self.phases["save"].append(saved_at - metrics_at)

    def ready(self) -> bool:
        return all(self.phases.values())

    def __getitem__(self, phase: str) -> float:
        return statistics.median(self.phases[phase][-3:])


def db_row(data_dir: Path, sql: str, *args):
    with sqlite3.connect(data_dir / "rft.db", timeout=30) as db:
        return db.execute(sql, args).fetchone()


def start_worker(data_dir: Path, env: dict, log_file) -> subprocess.Popen:
    # `rft worker` migrates, then execs `python -m jobs.worker`: this pid is the worker.
    return subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--data-dir", str(data_dir)],
                            env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT)


def trainer_of(worker: subprocess.Popen) -> int | None:
    for pid in children_of(worker.pid):
        try:
            if b"jobs.train" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            pass
    return None


def wait_until(predicate, timeout: float, what: str, tick: float = 0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None and value is not False:
            return value
        time.sleep(tick)
    raise AssertionError(f"timed out waiting for {what}")


def in_phase(phase: str, step: int, started: float, t: float, attempt: Attempt, grader: SlowGrader) -> bool:
    """Whether time ``t`` (the trainer alive until then) is inside ``phase`` of ``step``."""
    train = [c for c in grader.since(started, "train") if c[1] <= t][:TRAIN_CALLS]
    valid = [c for c in grader.since(started, "valid") if c[1] <= t][:EVAL_CALLS]
    answered = [c for c in train if c[2] is not None and c[2] <= t]
    if phase == "generation":
        return not train
    if phase == "grading":
        return bool(train) and len(answered) < TRAIN_CALLS
    if phase == "eval":
        return len(answered) == TRAIN_CALLS and sum(c[2] is not None and c[2] <= t for c in valid) < EVAL_CALLS
    metrics_at, saved_at = attempt.at("metrics", step), attempt.at("checkpoint", step)
    return metrics_at is not None and metrics_at <= t and (saved_at is None or saved_at > t)


def kill_once(phase: str, attempt: Attempt, worker: subprocess.Popen, trainer: int, grader: SlowGrader,
              est: Estimates, data_dir: Path, job_id: str, rng: random.Random) -> dict:
    """Once this attempt has a checkpoint the store knows of (its progress), SIGKILL the
    worker at a random moment of ``phase`` in a following step; say where it landed."""

    def poll() -> None:
        attempt.poll()
        est.learn(attempt, grader)
        assert not any(e["type"] == "finished" for _, e in attempt.events), \
            "the job finished before all kills landed; make it longer"

    def relayed() -> bool:
        poll()
        if attempt.newest() is None or not est.ready():
            return False
        progress, baseline = db_row(data_dir, "SELECT progress_step, claim_progress_step FROM jobs WHERE id = ?",
                                    job_id)
        return progress > baseline

    wait_until(relayed, 120, "a checkpoint of this attempt, relayed to the store", tick=0.02)
    late = 1.0  # halved after each miss: aim earlier in the phase
    while True:
        poll()
        step = attempt.newest() + 1
        started = attempt.step_start(step)
        if phase == "generation":
            target = started + late * rng.uniform(0.15, 0.7) * est["generation"]
        else:
            # The moment the phase begins: training's first grading request, training's
            # last answer, the step's metrics event.
            def begun(s=step, t0=started):
                poll()
                if attempt.at("checkpoint", s) is not None:
                    return 0.0  # the step ended meanwhile
                train = grader.since(t0, "train")[:TRAIN_CALLS]
                if phase == "grading":
                    return train[0][1] if train else None
                if phase == "eval":
                    done = len(train) == TRAIN_CALLS and all(c[2] is not None for c in train)
                    return max(c[2] for c in train) if done else None
                return attempt.at("metrics", s)

            begins = wait_until(begun, 60, f"{phase} of step {step}")
            if phase == "eval":
                # The window opens with the optimizer step: aim past twice its length.
                skip = 2 * est["training"]
                target = begins + skip + late * rng.uniform(0.05, 0.75) * max(est["eval"] - skip, 0.0)
            else:
                target = begins + late * rng.uniform(0.1, 0.75) * est[phase]
        while time.monotonic() < target:
            valid = grader.since(started, "valid") if phase == "eval" else None
            if valid:  # the eval reached its grading first: a moment in there, then
                target = min(target, valid[0][1] + rng.uniform(0.1, 0.7) * GRADE_SECONDS)
            time.sleep(0.001)
        poll()
        if target and in_phase(phase, step, started, time.monotonic(), attempt, grader):
            break
        # The phase ended before the moment drawn: aim at the same phase of the next step.
        late /= 2
        wait_until(lambda s=step: poll() or (attempt.newest() >= s or None), 60, f"step {step} to end")
    assert alive(trainer), "the trainer died before it was killed"
    killed_at = time.monotonic()
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    wait_until(lambda: not alive(trainer), 10, "the trainer to die with its worker", tick=0.02)
    attempt.poll()
    landed = [p for p in ("generation", "grading", "eval", "save")
              if in_phase(p, step, started, killed_at, attempt, grader)]
    return {"aimed": phase, "landed": landed, "step": step, "into_step": round(killed_at - started, 3),
            "missed": round(math.log2(1 / late))}


def upload(client, split: str) -> str:
    body = b"".join(json.dumps({**r, "split": split}).encode() + b"\n" for r in ROWS)
    return client.files.create(file=(f"{split}.jsonl", io.BytesIO(body)), purpose="fine-tune").id


def test_ten_kill_9s_of_the_worker_do_not_fail_the_job(tmp_path, models_dir):
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    phases = PHASES[:]
    rng.shuffle(phases)
    data_dir = tmp_path / "data"
    grader = SlowGrader()
    env = {"RFT_MODELS_DIR": str(models_dir), "RFT_LEASE_SECONDS": LEASE_SECONDS,
           "RFT_ENDPOINT_ALLOWLIST": '["127.0.0.1"]'}
    server = start_server(data_dir, workers=0, env=env)
    log_file = open(tmp_path / "workers.log", "ab")
    worker: subprocess.Popen | None = None
    try:
        client = server.client("kill-loop")
        hyper = tiny_hyper(n_epochs=5, eval_interval=1, eval_samples=EVAL_CALLS, max_completion_tokens=96)
        spec = {"type": "endpoint", "name": "slow-judge", "url": grader.url, "rate_limit": 1000}
        job_id = client.fine_tuning.jobs.create(
            model="tiny", training_file=upload(client, "train"), validation_file=upload(client, "valid"), seed=3,
            method={"type": "reinforcement", "reinforcement": {"grader": spec, "hyperparameters": hyper}},
        ).id
        job_dir = data_dir / "jobs" / job_id
        est = Estimates()
        kills = []
        for phase in phases:
            worker = start_worker(data_dir, env, log_file)
            trainer = wait_until(lambda w=worker: trainer_of(w), 60, "the worker to start a trainer", tick=0.02)
            kills.append(kill_once(phase, Attempt(job_dir / "events.jsonl"), worker, trainer, grader, est,
                                   data_dir, job_id, rng))
        report = f"seed {seed}; estimates {({p: round(est[p], 3) for p in est.phases})}; kills {kills}"
        log.info("kills: %s", report)
        worker = start_worker(data_dir, env, log_file)
        job = wait_for(client, job_id, ("succeeded", "failed", "cancelled"), timeout=240)
        assert job.status == "succeeded", (job.error, report)

        # Ten kills of the live worker holding the job, each inside the phase it aimed at.
        assert [k["landed"] for k in kills] == [[k["aimed"]] for k in kills], report

        # Every attempt counted, none charged: eleven attempts on a budget of three.
        attempts, charged, max_attempts = db_row(
            data_dir, "SELECT attempts, charged_attempts, max_attempts FROM jobs WHERE id = ?", job_id)
        assert (attempts, charged, max_attempts) == (KILLS + 1, 0, 3), report
        assert (job.model_extra or {}).get("attempts") == KILLS + 1

        # Metrics: one event per step, 0 (the base model's eval) to 20, in order; the
        # thrown-away runs of killed steps are kept as messages.
        events = list(client.fine_tuning.jobs.list_events(job_id, limit=100))[::-1]
        steps = [e.data["step"] for e in events if e.type == "metrics"]
        assert steps == list(range(21)), report
        discarded = [e for e in events if e.level == "warn" and e.data and "discarded" in e.message]
        assert {e.data["step"] for e in discarded} <= {k["step"] for k in kills}

        # Every line every trainer wrote became exactly one event (ids carry the attempt
        # and line number; checkpoint_deleted and finished lines make none).
        files = sorted(job_dir.glob("events.attempt-*.jsonl"), key=lambda p: int(p.name.split(".")[1][8:]))
        assert [p.name.split(".")[1] for p in files] == [f"attempt-{n}" for n in range(1, KILLS + 1)]
        short = job_id.split("-", 1)[-1]
        expected = {
            f"ftevent-{short}-{n}-{i}"
            for n, path in enumerate([*files, job_dir / "events.jsonl"], start=1)
            for i, line in enumerate(path.read_text().splitlines(), start=1)
            if json.loads(line)["type"] in ("message", "metrics", "checkpoint", "error")
        }
        assert {e.id for e in events if e.id.startswith(f"ftevent-{short}-")} == expected

        # Checkpoints: every listed one is complete on disk; nothing half-written is left.
        ckpts = list(client.fine_tuning.jobs.checkpoints.list(job_id, limit=100))
        root = job_dir / "checkpoints"
        assert ckpts
        assert sorted(p.name for p in root.iterdir()) == sorted(f"step-{c.step_number}" for c in ckpts)
        for c in ckpts:
            assert (root / f"step-{c.step_number}" / "COMPLETE").is_file()

        # The published model loads as a plain Hugging Face folder.
        from transformers import AutoModelForCausalLM

        (path,) = db_row(data_dir, "SELECT path FROM models WHERE id = ?", job.fine_tuned_model)
        model = AutoModelForCausalLM.from_pretrained(data_dir / path)
        assert sum(p.numel() for p in model.parameters()) > 0
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=30)
        log_file.close()
        server.stop()
        grader.shutdown()
