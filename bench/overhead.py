"""Trainer overhead: the same GRPO config on the same tiny model, run (a) as a job of a
running service (``rft serve`` with one worker: from the create request to
``succeeded``), (a') through the trainer child alone (``python -m jobs.train``) and (b) as
a bare TRL script, in one run.

Both are fresh processes timed from spawn to exit (imports included), both grade with
the same grader through ``graders.grade_batch``, and both save the final model. The
child additionally does what a job needs: the step-0 baseline eval and checkpoint,
per-step events, and an eval + atomic checkpoint at the end. Prints the wall-time ratios
against (b) (target <= 1.10).

    python bench/overhead.py [--steps 40] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROWS = [{"messages": [{"role": "user", "content": f"Say {w}"}], "answer": w}
        for w in ["a", "e", "i", "o", "u", "y", "b", "c"]]
GRADER = {"type": "string_check", "name": "contains", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "like"}

BARE_SCRIPT = r'''
import json, sys
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer
import graders
from jobs.train.trl_args import shared_config_kwargs
from jobs.train.grpo import loss_kwargs
from transformers import AutoModelForCausalLM, AutoTokenizer

spec = json.load(open(sys.argv[1]))
hp = spec["hyperparameters"]
rows = [json.loads(l) for l in open(spec["training_file"])]
grader = graders.parse_grader(spec["grader"])

def reward(prompts, completions, row_index, **kw):
    samples = [{"output_text": c[0]["content"], "output_json": None} for c in completions]
    return [r.reward for r in graders.grade_batch(grader, samples, [rows[i] for i in row_index])]
reward.__name__ = "contains"

model = AutoModelForCausalLM.from_pretrained(spec["base_model"])
tok = AutoTokenizer.from_pretrained(spec["base_model"])
ds = Dataset.from_dict({"prompt": [r["messages"] for r in rows], "row_index": list(range(len(rows)))})
n_params = sum(p.numel() for p in model.parameters())
args = GRPOConfig(**shared_config_kwargs(hp, spec["seed"], sys.argv[2], n_params), **loss_kwargs(hp["loss_type"]))
trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=ds, processing_class=tok)
trainer.train()
trainer.save_model(sys.argv[2] + "/final")
'''


def _timed(cmd: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def _service_job(work: Path, hyper: dict, rounds: int) -> list[float]:
    """Run the job ``rounds`` times through a real ``rft serve``; seconds from create to done."""
    import httpx

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "RFT_MODELS_DIR": str(work / "models")}
    data = work / "service"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--data-dir", str(data),
         "--workers", "1", "--no-inference"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        key = subprocess.run([sys.executable, "-m", "service.cli", "keys", "create", "--project", "bench",
                              "--data-dir", str(data)], cwd=REPO, env=env, check=True, capture_output=True,
                             text=True).stdout.strip()
        http = httpx.Client(base_url=base + "/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)
        train = http.post("/files", data={"purpose": "fine-tune"},
                          files={"file": ("train.jsonl", (work / "train.jsonl").read_bytes())}).json()["id"]
        times = []
        for _ in range(rounds):
            started = time.monotonic()
            job = http.post("/fine_tuning/jobs", json={
                "model": "tiny", "training_file": train, "seed": 0,
                "method": {"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": hyper}},
            }).json()
            while (status := http.get(f"/fine_tuning/jobs/{job['id']}").json()["status"]) not in (
                    "succeeded", "failed", "cancelled"):
                time.sleep(0.1)
            if status != "succeeded":
                raise RuntimeError(f"service job {job['id']} ended {status}")
            times.append(time.monotonic() - started)
        return times
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def main() -> int:
    """Run both variants and print their wall times and ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps (8 rows, batch 2: 4 per epoch)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from jobs.demo_model import build_tiny_model
    from jobs.hyperparams import resolve_hyperparameters

    work = Path(tempfile.mkdtemp(prefix="rft-overhead-"))
    model = build_tiny_model(work / "models" / "tiny")
    (work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    n_epochs = max(1, args.steps // 4)
    requested = {"n_epochs": n_epochs, "batch_size": 2, "num_generations": 4, "max_completion_tokens": 16,
                 "eval_interval": 10**6}
    hp = resolve_hyperparameters("reinforcement", "grpo", requested, len(ROWS), None)
    spec = {"job_id": "ftjob-bench", "seed": 0, "base_model": str(model), "base_model_name": "tiny",
            "training_file": str(work / "train.jsonl"), "validation_file": None, "method": "reinforcement",
            "algorithm": "grpo", "grader": GRADER, "response_format": None, "hyperparameters": hp,
            "resume_from": None, "grader_context": {}}
    (work / "bare.py").write_text(BARE_SCRIPT)
    rft_times, bare_times = [], []
    for i in range(args.repeats):
        job = work / f"job{i}"
        job.mkdir()
        (job / "spec.json").write_text(json.dumps(spec))
        rft_times.append(_timed([sys.executable, "-m", "jobs.train", str(job)]))
        (work / f"spec{i}.json").write_text(json.dumps(spec))
        bare_times.append(_timed([sys.executable, str(work / "bare.py"), str(work / f"spec{i}.json"),
                                  str(work / f"bare{i}")]))
    service = min(_service_job(work, requested, args.repeats))
    rft, bare = min(rft_times), min(bare_times)
    print(f"steps={n_epochs * 4} service_job={service:.1f}s rft_child={rft:.1f}s bare_trl={bare:.1f}s "  # noqa: T201
          f"ratio_service={service / bare:.3f} ratio_child={rft / bare:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
