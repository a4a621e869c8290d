"""Trainer overhead: the same GRPO config on the same tiny model, run (a) through the
rft trainer child (``python -m jobs.train``) and (b) as a bare TRL script, in one run.

Both are fresh processes timed from spawn to exit (imports included), both grade with
the same grader through ``graders.grade_batch``, and both save the final model. The
child additionally does what a job needs: the step-0 baseline eval and checkpoint,
per-step events, and an eval + atomic checkpoint at the end. Prints the wall-time ratio
(target <= 1.10).

    python bench/overhead.py [--steps 40] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
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


def main() -> int:
    """Run both variants and print their wall times and ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps (8 rows, batch 2: 4 per epoch)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from jobs.demo_model import build_tiny_model
    from jobs.hyperparams import resolve_hyperparameters

    work = Path(tempfile.mkdtemp(prefix="rft-overhead-"))
    model = build_tiny_model(work / "model")
    (work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    n_epochs = max(1, args.steps // 4)
    hp = resolve_hyperparameters("reinforcement", "grpo", {
        "n_epochs": n_epochs, "batch_size": 2, "num_generations": 4, "max_completion_tokens": 16,
        "eval_interval": 10**6}, len(ROWS), None)
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
    rft, bare = min(rft_times), min(bare_times)
    print(f"steps={n_epochs * 4} rft_child={rft:.1f}s bare_trl={bare:.1f}s ratio={rft / bare:.3f}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
