"""Timing of the generation phase inside TRL's step, for the metrics event."""

from __future__ import annotations

import time


class TimedGenerationMixin:
    """Mixed into a TRL trainer: adds the wall time of each sample-and-score phase
    (generation, old/ref log-probs and grading) to ``rft_generation_seconds``; the
    callback resets it each step and subtracts grading time to get sampling time."""

    rft_generation_seconds = 0.0

    def _generate_and_score_completions(self, inputs):
        started = time.perf_counter()
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self.rft_generation_seconds += time.perf_counter() - started
