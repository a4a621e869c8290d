"""Atomic checkpoints under ``<job_dir>/checkpoints`` and the keep-best policy.

A checkpoint is written into a temporary folder whose name starts with "." and renamed
into place only once complete, with its ``COMPLETE`` marker inside: a folder without
the marker, or any dot-folder, is never listed or resumed from. The files are fsynced
before the marker is written, so a node that loses power mid-save leaves no "complete"
checkpoint with missing bytes. Deleting is the same in reverse: the folder is renamed to
a dot-name first, so a kill in the middle of removing it leaves only a dot-folder, which
the next run's ``clean_temp`` removes. The marker holds JSON
(step, metrics, elapsed training seconds) so the policy can rank checkpoints written by
an earlier attempt of the same job.

Layout of one checkpoint (docs/internals.md): a loadable Hugging Face folder at the top
level (the merged model for LoRA jobs), ``adapter/`` for LoRA jobs, and
``trainer_state/`` (the HF Trainer checkpoint: optimizer, scheduler, RNG, step) for
resume. The step-0 checkpoint (the base model, saved so that the job never ends worse
on validation than it started) has no ``trainer_state/``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMPLETE_MARKER = "COMPLETE"
TRAINER_STATE = "trainer_state"
ADAPTER = "adapter"
KEEP_BEST = 3
RANK_METRIC = "valid_reward_mean"


@dataclass
class CheckpointInfo:
    """One complete checkpoint on disk."""

    name: str
    path: Path
    step: int
    metrics: dict[str, Any]
    elapsed_seconds: float

    @property
    def score(self) -> float:
        """The ranking metric (minus infinity when missing)."""
        value = self.metrics.get(RANK_METRIC)
        return float("-inf") if value is None else float(value)


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint taken after ``step`` optimizer steps."""
    return f"step-{step}"


def read_checkpoint(path: Path) -> CheckpointInfo | None:
    """The checkpoint at ``path``, or None when it is not complete."""
    path = Path(path)
    marker = path / COMPLETE_MARKER
    if path.name.startswith(".") or not marker.is_file():
        return None
    meta = json.loads(marker.read_text())
    return CheckpointInfo(path.name, path, int(meta["step"]), meta.get("metrics", {}),
                          float(meta.get("elapsed_seconds", 0.0)))


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root``, then the folders, to disk."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Delete a checkpoint folder so that it is never seen half-deleted (see the module doc)."""
    doomed = path.with_name(f".deleting-{path.name}-{time.time_ns()}")
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _rank_key(c: CheckpointInfo) -> tuple[float, int]:
    # Highest validation reward; on a tie the earlier step (closer to the base model:
    # what validation cannot tell apart, prefer the smaller drift).
    return (c.score, -c.step)


class CheckpointManager:
    """Writes checkpoints atomically and prunes all but the best few and the newest."""

    def __init__(self, root: Path, events):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.events = events

    def list(self) -> list[CheckpointInfo]:
        """Complete checkpoints, oldest step first (temp dirs and partial folders ignored)."""
        found = [read_checkpoint(p) for p in self.root.iterdir() if p.is_dir()]
        return sorted((c for c in found if c is not None), key=lambda c: c.step)

    def best(self) -> CheckpointInfo | None:
        """The checkpoint with the highest validation reward (ties: the earlier step)."""
        ckpts = self.list()
        return max(ckpts, key=_rank_key) if ckpts else None

    def save(self, step: int, metrics: dict[str, Any], elapsed_seconds: float, write_fn) -> CheckpointInfo:
        """Create checkpoint ``step-<step>``: ``write_fn(tmp_dir)`` fills a temp folder,
        which gets its marker and is renamed into place; then the policy prunes."""
        name = checkpoint_name(step)
        final = self.root / name
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.root))
        try:
            write_fn(tmp)
            _fsync_tree(tmp)
            marker = {"step": step, "metrics": metrics, "elapsed_seconds": elapsed_seconds}
            with open(tmp / COMPLETE_MARKER, "w") as fh:
                fh.write(json.dumps(marker))
                fh.flush()
                os.fsync(fh.fileno())
            if final.exists():
                # Only after a resume from an older checkpoint that re-reaches this step.
                _remove(final)
            tmp.rename(final)
            _fsync_dir(self.root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        info = read_checkpoint(final)
        self.events.checkpoint(name, step, metrics)
        self.prune()
        return info

    def prune(self) -> None:
        """Keep the best ``KEEP_BEST`` by validation reward plus the newest; delete the rest."""
        ckpts = self.list()
        if not ckpts:
            return
        ranked = sorted(ckpts, key=_rank_key, reverse=True)
        keep = {c.name for c in ranked[:KEEP_BEST]} | {ckpts[-1].name}
        for c in ckpts:
            if c.name not in keep:
                _remove(c.path)
                self.events.checkpoint_deleted(c.name)

    def clean_temp(self) -> None:
        """Remove leftovers of interrupted saves (dot-folders)."""
        for p in self.root.iterdir():
            if p.is_dir() and p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)
