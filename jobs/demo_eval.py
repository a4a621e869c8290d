"""Greedy held-out reward of a model folder on the demo test set (or any rows file).

``python -m jobs.demo_eval MODEL_DIR [--rows FILE]`` prints mean reward, its standard
error and the row count as JSON; ``evaluate_model_dir`` returns them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import graders  # noqa: E402
from jobs.demo_task import DATA_DIR  # noqa: E402
from jobs.train.data import load_rows  # noqa: E402
from jobs.train.evaluation import evaluate_rows  # noqa: E402
from jobs.train.models import load_base  # noqa: E402
from jobs.train.rewards import GraderReward  # noqa: E402

MAX_NEW_TOKENS = 64


def evaluate_model_dir(model_dir: str | Path, rows_file: str | Path = DATA_DIR / "test.jsonl") -> dict:
    """Greedy mean reward (with standard error) of ``model_dir`` on ``rows_file`` under the demo grader."""
    spec = graders.parse_grader(json.loads((DATA_DIR / "grader.json").read_text()))
    rows = load_rows(rows_file)
    model, tokenizer = load_base(str(model_dir))
    reward = GraderReward(spec, rows, graders.GraderContext(), None)
    return evaluate_rows(model, tokenizer, reward, rows, MAX_NEW_TOKENS)


def main(argv: list[str] | None = None) -> int:
    """CLI: print the held-out reward of a model folder."""
    parser = argparse.ArgumentParser(prog="python -m jobs.demo_eval")
    parser.add_argument("model_dir")
    parser.add_argument("--rows", default=str(DATA_DIR / "test.jsonl"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(evaluate_model_dir(args.model_dir, args.rows)))  # noqa: T201 (CLI output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
