"""The shipped demo dataset, grader and job settings fit together (no training here)."""

import json
import random

import graders
from jobs import demo_task
from jobs.demo_job import DEMO_HYPERPARAMETERS, write_demo_job
from jobs.train.data import load_rows


def test_demo_files_are_well_formed_and_disjoint():
    splits = {name: load_rows(demo_task.DATA_DIR / f"{name}.jsonl") for name in ("train", "valid", "test")}
    assert [len(splits[n]) for n in ("train", "valid", "test")] == [40, 32, 200]
    prompts = {n: {r["messages"][0]["content"] for r in rows} for n, rows in splits.items()}
    assert not prompts["test"] & (prompts["train"] | prompts["valid"])
    for rows in splits.values():
        for row in rows:
            assert row["messages"][-1]["role"] == "user"
            assert set(row["reference"]) == {"name", "city"}


def test_demo_grader_scores_the_schema_rule():
    spec = graders.parse_grader(json.loads((demo_task.DATA_DIR / "grader.json").read_text()))
    graders.validate_grader(spec, item_keys={"messages", "reference"})
    row = load_rows(demo_task.DATA_DIR / "test.jsonl")[0]
    ref = row["reference"]
    right = graders.grade(spec, {"output_text": json.dumps(ref)}, row)
    town = graders.grade(spec, {"output_text": json.dumps({"name": ref["name"], "town": ref["city"]})}, row)
    assert right.reward == 1.0 and town.reward == 0.5


def test_warmup_answers_mix_both_schemas():
    rng = random.Random(0)
    row = demo_task.make_row(rng)
    keys = {tuple(json.loads(demo_task.warmup_answer_text(row, rng))) for _ in range(50)}
    assert keys == {("name", "city"), ("name", "town")}


def test_demo_job_spec_resolves(tmp_path):
    job = write_demo_job(tmp_path / "job", tmp_path / "model", seed=0, hyperparameters=DEMO_HYPERPARAMETERS)
    spec = json.loads((job / "spec.json").read_text())
    assert "auto" not in spec["hyperparameters"].values()
    assert spec["hyperparameters"]["max_wall_seconds"] == 300
