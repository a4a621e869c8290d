"""One trainer-child run: spec.json in (its grader keys come through the environment,
see jobs/trainer_secrets.py); events, checkpoints and an exit status out.

The protocol is docs/internals.md ("Trainer child"). ``JobRun.run`` returns the
process exit code: 0 after a ``finished`` event (succeeded, paused or cancelled),
non-zero after an ``error`` event.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

from transformers import set_seed

import graders
from jobs.hyperparams import total_steps
from jobs.structured.logits import ConstrainedSampling, stop_token_ids
from jobs.structured.response_format import describe, parse_response_format
from jobs.train import grpo, rloo
from jobs.train.callbacks import STOP_PAUSED, STOP_WALL, RftCallback
from jobs.train.checkpoints import TRAINER_STATE, CheckpointManager, read_checkpoint
from jobs.train.control import ControlFile, JobCancelled
from jobs.train.data import load_rows, to_prompt_dataset
from jobs.train.evaluation import evaluate_rows
from jobs.train.events import EventWriter
from jobs.train.models import count_parameters, load_base, save_top_level
from jobs.train.rewards import GraderFailing, GraderReward
from jobs.trainer_secrets import merge_secrets, pop_secrets

log = logging.getLogger(__name__)

BUILDERS = {"grpo": grpo.build_trainer, "rloo": rloo.build_trainer}

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_GRADER_FAILING = 3


def _peft_config(lora: dict | None):
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], target_modules=lora["target_modules"],
                      lora_dropout=0.0, task_type="CAUSAL_LM")


class JobRun:
    """State of one run of the trainer child for one job directory."""

    def __init__(self, job_dir: Path):
        # First thing: out of os.environ, so nothing this process starts inherits the keys.
        self.secrets = pop_secrets(os.environ)
        self.job_dir = Path(job_dir)
        self.spec: dict[str, Any] = json.loads((self.job_dir / "spec.json").read_text())
        self.events = EventWriter(self.job_dir / "events.jsonl")
        self.control = ControlFile(self.job_dir / "control")
        self.checkpoints = CheckpointManager(self.job_dir / "checkpoints", self.events)
        self.callback: RftCallback | None = None

    def run(self) -> int:
        """Train, translating every outcome into events and an exit code."""
        try:
            return self._train()
        except JobCancelled:
            best = self.checkpoints.best()
            self.events.message("Job cancelled")
            self.events.finished("cancelled", best.name if best else None, self._tokens())
            return EXIT_OK
        except GraderFailing as exc:
            self.events.error("grader_failing", str(exc))
            return EXIT_GRADER_FAILING
        except Exception as exc:
            log.error("trainer failed:\n%s", traceback.format_exc())
            self.events.error("trainer_error", f"{type(exc).__name__}: {exc}")
            return EXIT_ERROR
        finally:
            self.events.close()

    def _tokens(self) -> int:
        return self.callback.trained_tokens if self.callback else 0

    def _train(self) -> int:
        spec = self.spec
        hp = spec["hyperparameters"]
        self.control.raise_if_cancelled()
        set_seed(spec["seed"])
        self.checkpoints.clean_temp()

        grader = graders.parse_grader(spec["grader"])
        context = merge_secrets(spec.get("grader_context") or {}, self.secrets)
        rows = load_rows(spec["training_file"])
        if spec.get("validation_file"):
            valid_rows = load_rows(spec["validation_file"])
        else:
            valid_rows = rows
            self.events.message("No validation file: checkpoints are ranked by greedy reward on the "
                                "training rows")
        if hp["eval_samples"] is not None:
            valid_rows = valid_rows[: hp["eval_samples"]]

        model, tokenizer = load_base(spec["base_model"])
        n_params = count_parameters(model)
        self.events.message(f"Loaded base model {spec.get('base_model_name') or spec['base_model']} "
                            f"({n_params / 1e6:.2f}M parameters)")

        # The same constraint for training samples and the validation eval.
        new_state = parse_response_format(spec.get("response_format"))
        sampling = (ConstrainedSampling(tokenizer, new_state, stop_token_ids(model, tokenizer))
                    if new_state is not None else None)
        if sampling is not None:
            self.events.message(f"Sampling constrained to {describe(spec['response_format'])}")

        resume_state, elapsed_offset = self._resume_point()
        reward_fn = GraderReward(grader, rows, context, self.control)
        eval_reward = GraderReward(grader, valid_rows, context, None)
        peft_config = _peft_config(hp["lora"])
        holder: dict[str, Any] = {}

        def policy():
            trainer = holder["trainer"]
            return trainer.accelerator.unwrap_model(trainer.model)

        def evaluate() -> dict[str, float]:
            return evaluate_rows(policy(), tokenizer, eval_reward, valid_rows, hp["max_completion_tokens"],
                                 on_batch=self.control.raise_if_cancelled, sampling=sampling)

        def save_model(folder: Path) -> None:
            save_top_level(policy(), tokenizer, folder, is_peft=peft_config is not None)

        self.callback = RftCallback(
            events=self.events, control=self.control, checkpoints=self.checkpoints,
            evaluate_fn=evaluate, save_model_fn=save_model, reward_fn=reward_fn,
            eval_interval=hp["eval_interval"], max_wall_seconds=hp["max_wall_seconds"],
            elapsed_offset=elapsed_offset)
        trainer = BUILDERS[spec["algorithm"]](
            model=model, tokenizer=tokenizer, reward_fn=reward_fn, train_dataset=to_prompt_dataset(rows),
            hp=hp, seed=spec["seed"], output_dir=self.job_dir / ".trainer", n_params=n_params,
            peft_config=peft_config, callbacks=[self.callback], sampling=sampling)
        holder["trainer"] = trainer
        self.callback.trainer = trainer

        if spec.get("resume_from") is None:
            self._baseline_checkpoint(evaluate, save_model, total_steps(hp, len(rows)))

        self.events.message("Training resumed" if resume_state else "Training started")
        trainer.train(resume_from_checkpoint=str(resume_state) if resume_state else None)

        best = self.checkpoints.best()
        if self.callback.stop_reason == STOP_PAUSED:
            self.events.message(f"Paused at step {trainer.state.global_step}")
            self.events.finished("paused", best.name if best else None, self._tokens())
            return EXIT_OK
        if self.callback.stop_reason == STOP_WALL:
            self.events.message(f"Stopped at step {trainer.state.global_step}: max_wall_seconds reached")
        self.events.message(f"Training finished; best checkpoint {best.name} "
                            f"(valid_reward_mean {best.metrics.get('valid_reward_mean')})")
        self.events.finished("succeeded", best.name, self._tokens())
        return EXIT_OK

    def _resume_point(self) -> tuple[Path | None, float]:
        """HF checkpoint folder to resume from (None: start at step 0) and elapsed seconds."""
        resume_from = self.spec.get("resume_from")
        if not resume_from:
            return None, 0.0
        info = read_checkpoint(Path(resume_from))
        if info is None:
            raise ValueError(f"resume_from {resume_from} is not a complete checkpoint")
        state = info.path / TRAINER_STATE
        # The step-0 checkpoint is the untouched base model: resuming from it is a restart.
        return (state if state.is_dir() else None), info.elapsed_seconds

    def _baseline_checkpoint(self, evaluate, save_model, n_steps: int) -> None:
        """Evaluate the base model and keep it as checkpoint step-0, so the best
        checkpoint is never worse on validation than the model the job started from."""
        started = time.monotonic()
        result = evaluate()
        metrics = {"valid_reward_mean": result["reward_mean"], "valid_reward_stderr": result["reward_stderr"]}
        self.events.metrics({"step": 0, "total_steps": n_steps, **metrics,
                             "timings": {"eval_seconds": time.monotonic() - started}})
        self.events.message(f"Base model validation reward {result['reward_mean']:.3f}")
        self.checkpoints.save(0, metrics, 0.0, save_model)
