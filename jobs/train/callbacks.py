"""The TRL/HF callback that turns a Trainer run into an rft job.

Per step it obeys the control file, runs the validation eval every ``eval_interval``
steps (and on the last step, on pause and at the wall-time limit), asks the Trainer to
save, turns the HF checkpoint into our atomic checkpoint, and writes one metrics event.

Order inside one HF step (transformers' training loop): ``on_step_end`` (we evaluate
and set ``should_save``) -> ``on_log`` (we emit the metrics event, with the eval) ->
``on_save`` (we build the checkpoint, then stop if pausing). Stopping is requested only
in ``on_save``, after the HF state is written: HF saves its ``TrainerControl`` with the
checkpoint and would otherwise restore a "stop" flag on resume.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from jobs.train.checkpoints import TRAINER_STATE
from jobs.train.control import CANCEL, PAUSE, ControlFile, JobCancelled

log = logging.getLogger(__name__)

# TRL log key -> our metrics event key.
TRL_METRICS = {
    "reward": "train_reward_mean",
    "reward_std": "train_reward_std",
    "kl": "kl",
    "entropy": "entropy",
    "completions/mean_length": "completion_length_mean",
    "completions/clipped_ratio": "completion_clipped_fraction",
    "frac_reward_zero_std": "zero_variance_group_fraction",
    "loss": "loss",
    "grad_norm": "grad_norm",
    "learning_rate": "learning_rate",
    "clip_ratio/region_mean": "clip_ratio",
}

STOP_PAUSED = "paused"
STOP_WALL = "wall_time"


class RftCallback(TrainerCallback):
    """Metrics, evals, checkpoints, pause / cancel / wall-time for one job run."""

    def __init__(self, *, events, control: ControlFile, checkpoints, evaluate_fn, save_model_fn,
                 reward_fn, eval_interval: int, max_wall_seconds: float | None, elapsed_offset: float):
        self.events = events
        self.control_file = control
        self.checkpoints = checkpoints
        self.evaluate_fn = evaluate_fn          # () -> dict with "reward_mean", "reward_stderr"
        self.save_model_fn = save_model_fn      # (folder) -> None: the loadable top level
        self.reward_fn = reward_fn
        self.eval_interval = eval_interval
        self.max_wall_seconds = max_wall_seconds
        self.elapsed_offset = elapsed_offset
        self.trainer = None                      # set by the runner once the trainer exists
        self.stop_reason: str | None = None
        self.trained_tokens = 0
        self._run_started = time.monotonic()
        self._step_started = 0.0
        self._step_seconds = 0.0
        self._eval_seconds = 0.0
        self._pending_valid: dict[str, Any] | None = None
        self._last_metrics: dict[str, Any] = {}

    def elapsed(self) -> float:
        """Training seconds of this job across attempts (carried in checkpoints)."""
        return self.elapsed_offset + time.monotonic() - self._run_started

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed HF run restores the TrainerControl saved with the checkpoint.
        control.should_save = False
        control.should_training_stop = False
        self._run_started = time.monotonic()

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.monotonic()
        self.trainer.rft_generation_seconds = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        self._step_seconds = time.monotonic() - self._step_started
        request = self.control_file.read()
        if request == CANCEL:
            raise JobCancelled()
        if request == PAUSE:
            self.stop_reason = STOP_PAUSED
        elif self.max_wall_seconds is not None and self.elapsed() >= self.max_wall_seconds:
            self.stop_reason = STOP_WALL
        due = state.global_step % self.eval_interval == 0 or state.global_step >= state.max_steps
        if due or self.stop_reason:
            started = time.monotonic()
            result = self.evaluate_fn()
            self._eval_seconds = time.monotonic() - started
            self._pending_valid = {"valid_reward_mean": result["reward_mean"],
                                   "valid_reward_stderr": result["reward_stderr"]}
            control.should_save = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "train_runtime" in logs:  # HF's end-of-training summary, not a step
            return
        data: dict[str, Any] = {"step": state.global_step, "total_steps": state.max_steps}
        for src, dst in TRL_METRICS.items():
            if src in logs:
                data[dst] = logs[src]
        if "num_tokens" in logs:
            self.trained_tokens = int(logs["num_tokens"])
        stats = self.reward_fn.stats.take()
        data["grader_means"] = stats["grader_means"]
        data["grader_errors"] = stats["grader_errors"]
        generation = self.trainer.rft_generation_seconds
        data["timings"] = {
            "sampling_seconds": max(generation - stats["grading_seconds"], 0.0),
            "grading_seconds": stats["grading_seconds"],
            "training_seconds": max(self._step_seconds - generation, 0.0),
        }
        if self._pending_valid is not None:
            data.update(self._pending_valid)
            data["timings"]["eval_seconds"] = self._eval_seconds
        self._last_metrics = data
        self.events.metrics(data)

    def on_save(self, args, state, control, **kwargs):
        hf_checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"

        def write(folder: Path) -> None:
            self.save_model_fn(folder)
            shutil.move(str(hf_checkpoint), str(folder / TRAINER_STATE))

        metrics = dict(self._pending_valid or {})
        if "train_reward_mean" in self._last_metrics:
            metrics["train_reward_mean"] = self._last_metrics["train_reward_mean"]
        self.checkpoints.save(state.global_step, metrics, self.elapsed(), write)
        self._pending_valid = None
        control.should_save = False
        if self.stop_reason:
            control.should_training_stop = True
        return control
