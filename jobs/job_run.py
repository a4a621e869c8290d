"""One attempt at one job, as a worker runs it: spawn the trainer child, relay its
events into the store (every write fenced by the lease), settle the outcome.

The trainer child never touches the database; see docs/internals.md for the files the
two share in the job directory.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from jobs import queue, trainer_secrets
from jobs.base_models import COMPLETE_MARKER, UnknownModel, resolve_base_model
from jobs.procutil import die_with_parent
from jobs.status import JobStatus
from jobs.store import Checkpoint, File, Job, JobEvent, Model, Project, new_id, now

if TYPE_CHECKING:
    from jobs.worker import Worker

log = logging.getLogger("rft.worker")

# Trainer error codes that retrying cannot fix: the job fails at once (see the error
# codes in docs/internals.md; anything else is treated as a crash and retried).
PERMANENT_ERRORS = frozenset({"grader_failing"})

# The worker's own secret-bearing variables (set by the CLI). The trainer child gets its
# keys from RFT_TRAINER_SECRETS alone (jobs/trainer_secrets.py), so it must not inherit these.
WORKER_SECRET_ENV = ("RFT_GRADER_CONTEXT", "RFT_INTERNAL_TOKEN")


def complete_checkpoints(job_dir: Path) -> dict[str, tuple[int, dict]]:
    """Checkpoint folder name -> (step, metrics) for each folder with its COMPLETE marker
    (the marker's JSON, docs/internals.md); partial saves and dot-folders are ignored."""
    root = job_dir / "checkpoints"
    if not root.is_dir():
        return {}
    found: dict[str, tuple[int, dict]] = {}
    for child in root.iterdir():
        marker = child / COMPLETE_MARKER
        if child.name.startswith(".") or not marker.is_file():
            continue
        try:
            meta = json.loads(marker.read_text())
            found[child.name] = (int(meta["step"]), meta.get("metrics") or {})
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("unreadable checkpoint marker %s", marker)
    return found


def newest_complete_checkpoint(job_dir: Path) -> Path | None:
    """The highest-step checkpoint folder with its COMPLETE marker; partial saves are ignored."""
    found = complete_checkpoints(job_dir)
    if not found:
        return None
    name = max(found, key=lambda n: found[n][0])
    return job_dir / "checkpoints" / name


def fine_tuned_name(job: Job, project_name: str) -> str:
    """``ft:<base>:<suffix>:<job id>``; the suffix defaults to the project name."""
    base = job.model.rstrip("/").rsplit("/", 1)[-1]
    if base.startswith("ft:"):
        base = base.split(":")[1]
    return f"ft:{base}:{job.suffix or project_name}:{job.id}"


def metrics_message(data: dict) -> str:
    """A one-line human summary of a metrics event."""
    parts = [f"Step {data.get('step')}/{data.get('total_steps')}"]
    for key, label in (("train_reward_mean", "reward"), ("valid_reward_mean", "valid reward"), ("kl", "KL")):
        value = data.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{label} {value:.3f}")
    return ", ".join(parts)


class JobRun:
    """One attempt at one job: spawn the trainer, relay its events, settle the outcome."""

    def __init__(self, worker: Worker, claim: queue.Claim) -> None:
        self.worker = worker
        self.cfg = worker.config
        self.store = worker.store
        self.claim = claim
        self.job_dir = self.cfg.data_dir / "jobs" / claim.job_id
        self.events_path = self.job_dir / "events.jsonl"
        self.last_error: dict | None = None
        self.finished: dict | None = None
        self._offset = 0
        self._line_no = 0
        self._secrets = trainer_secrets.TrainerSecrets()

    # -- setup ---------------------------------------------------------------------------
    def run(self) -> None:
        self.job_dir.mkdir(parents=True, exist_ok=True)
        (self.job_dir / "control").unlink(missing_ok=True)
        self._import_previous_events()
        try:
            spec_doc = self._write_spec()
        except UnknownModel as exc:
            self._settle_failed("invalid_model", str(exc))
            return
        resume = spec_doc["resume_from"]
        with self.store.session() as session:
            queue.fence(session, self.claim, self.cfg.lease_seconds)
            self._reconcile(session, resume)
            if resume:
                note = f"Resuming from checkpoint {Path(resume).name} (attempt {self.claim.attempt})."
            else:
                note = f"Job claimed by a worker (attempt {self.claim.attempt})."
            queue.add_event(session, self.claim.job_id, note)
        self._supervise()

    def _import_previous_events(self) -> None:
        """Re-read an earlier attempt's events file (ids make this idempotent), then set it aside.

        Event ids carry the number of the attempt whose trainer wrote the line. That is the
        ``attempt`` in spec.json: the worker writes spec.json only after setting the old
        events file aside, and spawns the trainer only after writing it, so the spec on
        disk always belongs to the attempt that wrote ``events.jsonl``, even when some
        attempt in between died before getting that far.
        """
        if not self.events_path.exists():
            return
        try:
            previous = int(json.loads((self.job_dir / "spec.json").read_text())["attempt"])
        except (OSError, ValueError, KeyError):
            previous = self.claim.attempt - 1  # a job dir from before spec.json named its attempt
        self._tail(attempt=previous)
        self.events_path.rename(self.job_dir / f"events.attempt-{previous}.{time.time_ns()}.jsonl")
        self._offset = 0
        self._line_no = 0
        self.finished = None
        self.last_error = None

    def _write_spec(self) -> dict:
        with self.store.session() as session:
            job = session.get(Job, self.claim.job_id)
            train = session.get(File, job.training_file)
            valid = session.get(File, job.validation_file) if job.validation_file else None
            method = job.method
            body = method.get(method["type"], {}) or {}
            resume = newest_complete_checkpoint(self.job_dir)
            # The keys stay out of the job dir; _supervise hands them to the child.
            public_context, self._secrets = trainer_secrets.split_secrets(self.cfg.grader_context)
            doc = {
                "job_id": job.id,
                "attempt": self.claim.attempt,
                "seed": job.seed,
                "base_model": self._base_location(session, job),
                "base_model_name": job.model,
                "training_file": str(self.cfg.data_dir / train.path),
                "validation_file": str(self.cfg.data_dir / valid.path) if valid else None,
                "method": method["type"],
                "algorithm": body.get("algorithm", "grpo"),
                "grader": body.get("grader"),
                "response_format": body.get("response_format"),
                "hyperparameters": body.get("hyperparameters", {}),
                "resume_from": str(resume) if resume else None,
                "grader_context": public_context,
            }
        tmp = self.job_dir / ".spec.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2))
        os.replace(tmp, self.job_dir / "spec.json")
        return doc

    def _reconcile(self, session, resume: str | None) -> None:
        """Make the store agree with the job dir before this attempt starts, after an
        earlier attempt may have died anywhere.

        - Checkpoint rows: a complete folder the dead trainer never announced is
          registered; a row whose folder is gone or incomplete (killed while pruning) is
          dropped, so every listed checkpoint can be loaded.
        - Metrics: the trainer re-runs every step after ``resume``, so the metrics events
          of those steps describe training that was thrown away. They become warn-level
          messages (kept, data and all, so the log still shows what happened) and the
          metrics stay one event per step, of the run that produced the model.
        - Progress: this attempt's baseline (``claim_progress_step``) is what the store
          knows now, so checkpoints registered here count for no attempt.
        """
        job = session.get(Job, self.claim.job_id)
        on_disk = complete_checkpoints(self.job_dir)
        rows = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job.id)).all()
        for row in rows:
            if row.name not in on_disk:
                log.info("job %s: checkpoint %s is gone from disk; dropping its row", job.id, row.name)
                session.delete(row)
        known = {row.name for row in rows}
        for name, (step, metrics) in sorted(on_disk.items(), key=lambda kv: kv[1][0]):
            if name not in known:
                self._register_checkpoint(session, {"name": name, "step": step, "metrics": metrics})
        kept = -1 if resume is None else on_disk[Path(resume).name][0]
        session.flush()
        stale = [
            e
            for e in session.scalars(
                select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.type == "metrics")
            ).all()
            if isinstance((e.data or {}).get("step"), int) and e.data["step"] > kept
        ]
        for event in stale:
            event.type = "message"
            event.level = "warn"
            event.message = (
                f"{event.message} (discarded: its attempt ended before the step was checkpointed; "
                "the step is run again)"
            )
        if stale:
            steps = sorted({e.data["step"] for e in stale})
            queue.add_event(
                session,
                job.id,
                f"Metrics of step {steps[0]}" + (f" to {steps[-1]}" if len(steps) > 1 else "")
                + " from an interrupted attempt were discarded; "
                + (f"training goes on from checkpoint step-{kept}." if kept >= 0 else "training starts over."),
                level="warn",
            )
        job.current_step = max(kept, 0)
        job.claim_progress_step = job.progress_step

    def _base_location(self, session, job: Job) -> str:
        if job.model.startswith("ft:"):
            tuned = session.get(Model, job.model)
            if tuned is None or tuned.project_id != job.project_id:
                raise UnknownModel(f"Fine-tuned model '{job.model}' no longer exists.")
            return str(self.cfg.data_dir / tuned.path)
        return resolve_base_model(
            job.model,
            self.cfg.models_dir,
            allow_local_paths=self.cfg.allow_local_paths,
            allow_hub=self.cfg.allow_hub,
            data_dir=self.cfg.data_dir,  # the unsafe path setting still never reaches into it
        ).location

    # -- supervision ---------------------------------------------------------------------
    def _child_env(self) -> dict[str, str]:
        """The trainer's environment: the worker's, minus its secret-bearing variables, plus
        the job's grader secrets. Never logged: the keys are written down nowhere."""
        env = {k: v for k, v in os.environ.items() if k not in WORKER_SECRET_ENV}
        return {**env, "PYTHONUNBUFFERED": "1", **trainer_secrets.secrets_env(self._secrets)}

    def _supervise(self) -> None:
        log_file = open(self.job_dir / f"trainer.attempt-{self.claim.attempt}.log", "ab")
        child = subprocess.Popen(
            [sys.executable, "-m", "jobs.train", str(self.job_dir)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=self._child_env(),
            # A trainer must not outlive its worker: after a kill -9 of the worker the job
            # is re-leased, and an orphan would write into the same job dir.
            preexec_fn=die_with_parent,
        )
        log.info("job %s: trainer pid %d (attempt %d)", self.claim.job_id, child.pid, self.claim.attempt)
        beat_every = max(0.5, self.cfg.lease_seconds / 3)
        last_beat = 0.0
        cancel_deadline: float | None = None
        requested: str | None = None
        try:
            while True:
                exited = child.poll() is not None
                self._tail(attempt=self.claim.attempt)
                if exited:
                    break
                if self.worker.stopping.is_set():
                    self._hand_back(child)
                    return
                if time.monotonic() - last_beat >= beat_every:
                    with self.store.session() as session:
                        action = queue.fence(session, self.claim, self.cfg.lease_seconds)
                    last_beat = time.monotonic()
                else:
                    # A read between heartbeats, so pause and cancel take effect within
                    # a poll interval rather than a heartbeat interval.
                    action = queue.requested_action(self.store, self.claim.job_id)
                if action and action != requested:
                    requested = action
                    (self.job_dir / "control").write_text(action)
                    if action == "cancel":
                        cancel_deadline = time.monotonic() + self.cfg.cancel_grace_seconds
                if cancel_deadline and time.monotonic() > cancel_deadline:
                    child.kill()
                time.sleep(0.1)  # a short tick: cheap (a file stat and read) and keeps exit-to-done latency low
        except queue.LeaseLost:
            child.kill()
            child.wait()
            raise
        finally:
            log_file.close()
        self._settle(child.returncode, requested)

    def _hand_back(self, child: subprocess.Popen) -> None:
        """The worker is stopping: stop the trainer, re-queue the job without charging an attempt."""
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        self._tail(attempt=self.claim.attempt)
        with self.store.session() as session:
            # Not charged (queue module doc). ``attempts`` still counts this claim: it
            # numbers the attempt's events, which the next attempt imports by that number.
            queue.release(session, self.claim, self.cfg.lease_seconds, status=JobStatus.QUEUED)
            queue.add_event(session, self.claim.job_id, "Worker shutting down; the job was re-queued.", level="warn")

    # -- events --------------------------------------------------------------------------
    def _tail(self, attempt: int) -> None:
        """Import the complete new lines of the events file."""
        if not self.events_path.exists():
            return
        with open(self.events_path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n")
        if end < 0:
            return
        lines = data[: end + 1].splitlines()
        self._offset += end + 1
        with self.store.session() as session:
            queue.fence(session, self.claim, self.cfg.lease_seconds)
            for raw in lines:
                self._line_no += 1
                try:
                    event = json.loads(raw)
                except ValueError:
                    log.warning("job %s: unreadable event line %d", self.claim.job_id, self._line_no)
                    continue
                event_id = f"ftevent-{self.claim.job_id.split('-', 1)[-1]}-{attempt}-{self._line_no}"
                self._apply(session, event, event_id)

    def _apply(self, session, event: dict, event_id: str) -> None:
        job_id = self.claim.job_id
        kind = event.get("type")
        # Lines of an earlier attempt may be read twice (see _import_previous_events).
        already = session.scalar(select(JobEvent.id).where(JobEvent.id == event_id)) is not None
        if kind == "message" and not already:
            queue.add_event(
                session, job_id, str(event.get("message", "")), level=event.get("level", "info"), event_id=event_id
            )
        elif kind == "metrics":
            data = event.get("data") or {}
            if not already:
                queue.add_event(session, job_id, metrics_message(data), type="metrics", data=data, event_id=event_id)
            job = session.get(Job, job_id)
            if isinstance(data.get("step"), int):
                job.current_step = max(job.current_step, data["step"])
            if isinstance(data.get("total_steps"), int):
                job.total_steps = data["total_steps"]
            if job.current_step and job.total_steps and job.started_at:
                elapsed = max(1, now() - job.started_at)
                job.estimated_finish = now() + int(elapsed / job.current_step * (job.total_steps - job.current_step))
        elif kind == "checkpoint":
            self._register_checkpoint(session, event)
            if not already:
                metrics = event.get("metrics") or {}
                shown = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if isinstance(v, (int, float)))
                queue.add_event(
                    session,
                    job_id,
                    f"Checkpoint {event['name']} saved at step {event['step']}" + (f" ({shown})" if shown else ""),
                    event_id=event_id,
                )
        elif kind == "checkpoint_deleted":
            row = session.scalar(
                select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.name == event.get("name"))
            )
            if row is not None:
                session.delete(row)
        elif kind == "finished":
            self.finished = event
        elif kind == "error":
            self.last_error = event
            if not already:
                queue.add_event(session, job_id, str(event.get("message", "")), level="error", event_id=event_id)

    def _register_checkpoint(self, session, event: dict) -> None:
        job = session.get(Job, self.claim.job_id)
        # Durable progress, for the rule on lost workers (jobs/queue.py).
        job.progress_step = max(job.progress_step, int(event["step"]))
        name = str(event["name"])
        existing = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.name == name))
        if existing is not None:
            return
        project = session.get(Project, job.project_id)
        session.add(
            Checkpoint(
                id=new_id("ftckpt"),
                job_id=job.id,
                project_id=job.project_id,
                name=name,
                step=int(event["step"]),
                metrics=event.get("metrics") or {},
                path=str(Path("jobs") / job.id / "checkpoints" / name),
                model_name=f"{fine_tuned_name(job, project.name)}:ckpt-step-{int(event['step'])}",
                created_at=now(),
            )
        )

    # -- outcome -------------------------------------------------------------------------
    def _settle(self, returncode: int, requested: str | None) -> None:
        finished = self.finished or {}
        status = finished.get("status") if returncode == 0 else None
        if status == "succeeded":
            self._settle_succeeded(finished)
        elif status == "paused":
            with self.store.session() as session:
                queue.release(session, self.claim, self.cfg.lease_seconds, status=JobStatus.PAUSED)
                queue.add_event(session, self.claim.job_id, "Job paused; resume it to continue from the newest checkpoint.")
        elif status == "cancelled" or requested == "cancel":
            with self.store.session() as session:
                queue.release(session, self.claim, self.cfg.lease_seconds, status=JobStatus.CANCELLED, finished_at=now())
                queue.add_event(session, self.claim.job_id, "Job cancelled.")
        elif self.last_error and self.last_error.get("code") in PERMANENT_ERRORS:
            self._settle_failed(self.last_error["code"], str(self.last_error.get("message")))
        else:
            self._settle_crash(returncode)

    def _settle_succeeded(self, finished: dict) -> None:
        with self.store.session() as session:
            job = session.get(Job, self.claim.job_id)
            project = session.get(Project, job.project_id)
            best = finished.get("best_checkpoint")
            if not best:
                self._settle_failed_in(session, "no_checkpoint", "Training ended without a checkpoint to publish.")
                return
            name = fine_tuned_name(job, project.name)
            if session.get(Model, name) is None:
                session.add(
                    Model(
                        id=name,
                        project_id=job.project_id,
                        job_id=job.id,
                        base_model=job.model,
                        path=str(Path("jobs") / job.id / "checkpoints" / best),
                        created_at=now(),
                    )
                )
            queue.release(
                session,
                self.claim,
                self.cfg.lease_seconds,
                status=JobStatus.SUCCEEDED,
                finished_at=now(),
                fine_tuned_model=name,
                trained_tokens=finished.get("trained_tokens"),
                estimated_finish=None,
            )
            queue.add_event(session, job.id, f"New fine-tuned model created: {name} (best checkpoint {best}).")
            queue.add_event(session, job.id, "The job has successfully completed.")

    def _settle_failed(self, code: str, message: str) -> None:
        with self.store.session() as session:
            self._settle_failed_in(session, code, message)

    def _settle_failed_in(self, session, code: str, message: str, **values) -> None:
        queue.release(
            session,
            self.claim,
            self.cfg.lease_seconds,
            status=JobStatus.FAILED,
            finished_at=now(),
            error={"code": code, "message": message, "param": None},
            estimated_finish=None,
            **values,
        )
        queue.add_event(session, self.claim.job_id, f"Job failed: {message}", level="error")

    def _settle_crash(self, returncode: int) -> None:
        """The trainer failed while its worker was alive: always charged (jobs/queue.py)."""
        detail = (self.last_error or {}).get("message") or self._log_tail()
        with self.store.session() as session:
            job = session.get(Job, self.claim.job_id)
            charged = job.charged_attempts + 1
            if charged >= job.max_attempts:
                self._settle_failed_in(
                    session,
                    "trainer_crashed",
                    f"The trainer exited with code {returncode} on {charged} attempts. Last error: {detail}",
                    charged_attempts=charged,
                )
                return
            queue.release(
                session, self.claim, self.cfg.lease_seconds, status=JobStatus.QUEUED, charged_attempts=charged
            )
            queue.add_event(
                session,
                job.id,
                f"Trainer exited with code {returncode} ({detail}); retrying ({charged} of "
                f"{job.max_attempts} attempts used).",
                level="warn",
            )

    def _log_tail(self) -> str:
        path = self.job_dir / f"trainer.attempt-{self.claim.attempt}.log"
        try:
            lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no trainer output"
        return lines[-1][:500] if lines else "no trainer output"
