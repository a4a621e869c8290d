"""The trainer child's half of the event stream: ``<job_dir>/events.jsonl``.

One JSON object a line, flushed and fsynced per line, so the worker (tailing the file)
never reads half an event and a crash loses at most the event being written.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; a metric TRL could not compute (e.g. no valid reward) is null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class EventWriter:
    """Appends events to ``events.jsonl`` in the shapes docs/internals.md fixes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (held for the run)

    def emit(self, event: dict[str, Any]) -> None:
        """Write one event and make it durable before returning."""
        self._fh.write(json.dumps(_clean(event), allow_nan=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def message(self, text: str, level: str = "info") -> None:
        """A human-readable state-change message."""
        self.emit({"type": "message", "level": level, "message": text})

    def metrics(self, data: dict[str, Any]) -> None:
        """One step's metrics."""
        self.emit({"type": "metrics", "data": data})

    def checkpoint(self, name: str, step: int, metrics: dict[str, Any]) -> None:
        """A complete checkpoint now exists under ``checkpoints/<name>``."""
        self.emit({"type": "checkpoint", "name": name, "step": step, "metrics": metrics})

    def checkpoint_deleted(self, name: str) -> None:
        """A checkpoint was removed by the keep-best policy."""
        self.emit({"type": "checkpoint_deleted", "name": name})

    def finished(self, status: str, best_checkpoint: str | None, trained_tokens: int) -> None:
        """The last event of a successful, paused or cancelled run."""
        self.emit({"type": "finished", "status": status, "best_checkpoint": best_checkpoint,
                   "trained_tokens": trained_tokens})

    def error(self, code: str, message: str) -> None:
        """The last event of a failed run (the child then exits non-zero)."""
        self.emit({"type": "error", "code": code, "message": message})

    def close(self) -> None:
        """Close the file."""
        self._fh.close()
