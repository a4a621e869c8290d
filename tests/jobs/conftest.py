"""Helpers for trainer-child tests: a job directory with a spec, run as the worker runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.hyperparams import resolve_hyperparameters

REPO = Path(__file__).resolve().parents[2]

# Prompts whose answers are single vowels: an untrained model emits one now and then,
# so GRPO groups have reward variance and gradients flow.
ROWS = [{"messages": [{"role": "user", "content": f"Say {w}"}], "answer": w}
        for w in ["a", "e", "i", "o", "a", "e", "i", "o"]]

CONTAINS_GRADER = {"type": "string_check", "name": "contains", "input": "{{sample.output_text}}",
                   "reference": "{{item.answer}}", "operation": "like"}

# Shrunk hyperparameters, each for test speed on 2 CPU cores:
SMALL_HP = {
    "n_epochs": 2,                  # 8 steps in all: enough to see steps, evals and pruning
    "batch_size": 2,                # 2 prompts a step (auto gives 1 for 8 rows): 4 steps an epoch
    "num_generations": 4,           # 4 samples a prompt instead of 8: half the sampling time
    "max_completion_tokens": 8,     # answers are one letter; 8 random tokens cost little
    "eval_interval": 3,             # evals at steps 3, 6, 8 instead of every step
    "learning_rate_multiplier": 100,  # a visible weight change within 8 steps of a tiny model
}


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSONL."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def make_job(tmp_path, tiny_model_dir):
    """``make_job(algorithm, hp=..., grader=..., resume_from=..., name=..., response_format=...)
    -> job_dir`` with spec.json."""

    def make(algorithm: str = "grpo", hp: dict | None = None, grader: dict | None = None,
             resume_from: str | None = None, name: str = "job", seed: int = 7,
             response_format: dict | None = None) -> Path:
        job_dir = tmp_path / name
        job_dir.mkdir(exist_ok=True)
        train = write_rows(tmp_path / "train.jsonl", ROWS)
        valid = write_rows(tmp_path / "valid.jsonl", ROWS[:4])
        resolved = resolve_hyperparameters("reinforcement", algorithm, {**SMALL_HP, **(hp or {})}, len(ROWS), None)
        spec = {
            "job_id": f"ftjob-{name}", "seed": seed,
            "base_model": str(tiny_model_dir), "base_model_name": "tiny",
            "training_file": str(train), "validation_file": str(valid),
            "method": "reinforcement", "algorithm": algorithm,
            "grader": grader or CONTAINS_GRADER, "response_format": response_format,
            "hyperparameters": resolved, "resume_from": resume_from, "grader_context": {},
        }
        (job_dir / "spec.json").write_text(json.dumps(spec))
        return job_dir

    return make


def child_env() -> dict:
    """The child's environment: offline, repo importable."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def run_child(job_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m jobs.train job_dir`` as the worker does; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "jobs.train", str(job_dir)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def start_child(job_dir: Path) -> subprocess.Popen:
    """Start the child without waiting."""
    return subprocess.Popen([sys.executable, "-m", "jobs.train", str(job_dir)], cwd=REPO, env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def read_events(job_dir: Path) -> list[dict]:
    """Events written so far."""
    path = job_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
