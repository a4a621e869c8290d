"""The reward function TRL calls: the job's grader, batched, with bookkeeping.

Besides returning one reward per completion it accumulates, for the step's metrics
event, per-grader means (``sub_rewards`` of a ``multi`` or a ``json_match``), counts of
each grader error flag, and grading time. It also watches for a grader that fails on
most samples and stops the job instead of training on noise.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import graders
from jobs.train.control import ControlFile

# Flags that blame the sample (the policy's output), not the grader: an untrained
# model writing non-JSON must not be mistaken for a broken grader.
SAMPLE_SIDE_FLAGS = frozenset({"sample_parse_error", "truncated_observation_error"})
# A grader is "failing" when more than this share of a step's samples hit grader-side
# errors, for GRADER_FAIL_STEPS steps in a row (one bad step may be a judge blip).
GRADER_FAIL_FRACTION = 0.5
GRADER_FAIL_STEPS = 2


class GraderFailing(Exception):
    """The grader errored on most samples."""

    def __init__(self, fraction: float, detail: str | None):
        super().__init__(f"the grader failed on {fraction:.0%} of a step's samples "
                         f"(grader-side errors, {GRADER_FAIL_STEPS} steps in a row); "
                         f"last error: {detail or 'no detail'}")


def completion_text(completion: Any) -> str:
    """TRL hands conversational completions as ``[{"role": "assistant", "content": ...}]``."""
    if isinstance(completion, str):
        return completion
    return completion[0]["content"]


def make_sample(text: str) -> dict[str, Any]:
    """OpenAI's sample shape: ``output_json`` is the text parsed as JSON, or None."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return {"output_text": text, "output_json": parsed}


class StepStats:
    """Grading statistics accumulated since the last ``take``."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """Start a new step."""
        self.n = 0
        self.sub_sums: dict[str, float] = defaultdict(float)
        self.sub_counts: dict[str, int] = defaultdict(int)
        self.error_counts: dict[str, int] = defaultdict(int)
        self.grading_seconds = 0.0

    def take(self) -> dict[str, Any]:
        """Metrics for the step so far, then reset."""
        out = {
            "grader_means": {k: self.sub_sums[k] / self.sub_counts[k] for k in self.sub_sums},
            "grader_errors": dict(self.error_counts),
            "grading_seconds": self.grading_seconds,
            "graded_samples": self.n,
        }
        self.reset()
        return out


class GraderReward:
    """Callable matching TRL's reward function contract (keyword arguments)."""

    def __init__(self, grader_spec, rows: list[dict[str, Any]], context, control: ControlFile | None):
        self.spec = grader_spec
        self.rows = rows
        self.context = context
        self.control = control
        self.stats = StepStats()
        self._bad_steps = 0
        # TRL names reward functions by __name__ in its logs ("rewards/<name>/mean").
        self.__name__ = grader_spec.name

    def grade_texts(self, texts: list[str], items: list[dict[str, Any]]) -> list[graders.GradeResult]:
        """Grade completions against their rows, recording timing, sub-rewards and errors."""
        started = time.perf_counter()
        results = graders.grade_batch(self.spec, [make_sample(t) for t in texts], items, self.context)
        self.stats.grading_seconds += time.perf_counter() - started
        self.stats.n += len(results)
        for res in results:
            for key, value in res.sub_rewards.items():
                self.stats.sub_sums[key] += value
                self.stats.sub_counts[key] += 1
            for flag, on in res.errors.items():
                if on:
                    self.stats.error_counts[flag] += 1
        return results

    def __call__(self, prompts, completions, row_index, **_: Any) -> list[float]:
        if self.control is not None:
            self.control.raise_if_cancelled()
        items = [self.rows[i] for i in row_index]
        results = self.grade_texts([completion_text(c) for c in completions], items)
        self._check_failing(results)
        return [r.reward for r in results]

    def _check_failing(self, results: list[graders.GradeResult]) -> None:
        grader_side = [r for r in results
                       if any(on and flag not in SAMPLE_SIDE_FLAGS for flag, on in r.errors.items())]
        fraction = len(grader_side) / max(len(results), 1)
        self._bad_steps = self._bad_steps + 1 if fraction > GRADER_FAIL_FRACTION else 0
        if self._bad_steps >= GRADER_FAIL_STEPS:
            raise GraderFailing(fraction, grader_side[-1].error_detail)
