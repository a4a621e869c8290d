"""Trainer child entry point: ``python -m jobs.train <job_dir>`` (see docs/internals.md)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the job in the given directory; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("usage: python -m jobs.train <job_dir>\n")
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imported here so that a usage error costs no torch import.
    import transformers

    from jobs.train.runner import JobRun

    transformers.logging.set_verbosity_warning()
    return JobRun(Path(argv[0])).run()


if __name__ == "__main__":
    raise SystemExit(main())
