"""Reading the worker's control file (``<job_dir>/control``: "pause" or "cancel")."""

from __future__ import annotations

from pathlib import Path

PAUSE = "pause"
CANCEL = "cancel"


class JobCancelled(Exception):
    """Raised from deep inside a step (e.g. the reward function) to stop at once."""


class ControlFile:
    """The worker's request to this child, read fresh on every check."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> str | None:
        """``"pause"``, ``"cancel"`` or None. Unknown contents are ignored as no request."""
        try:
            text = self.path.read_text().strip().lower()
        except FileNotFoundError:
            return None
        return text if text in (PAUSE, CANCEL) else None

    def raise_if_cancelled(self) -> None:
        """Raise ``JobCancelled`` when the worker asked to cancel."""
        if self.read() == CANCEL:
            raise JobCancelled()
