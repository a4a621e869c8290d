"""The trainer child end to end (``python -m jobs.train``) on a tiny model built from a config."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from jobs.train.checkpoints import CheckpointManager, read_checkpoint
from tests.jobs.conftest import read_events, run_child, start_child


def _weights(folder: Path) -> dict:
    return load_file(str(Path(folder) / "model.safetensors"))


def _changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def _by_type(events, kind):
    return [e for e in events if e["type"] == kind]


def _train_metrics(events):
    return [e["data"] for e in _by_type(events, "metrics") if e["data"]["step"] > 0]


def _check_well_formed(events, total=8):
    assert events[-1]["type"] == "finished"
    metrics = _train_metrics(events)
    assert [m["step"] for m in metrics] == list(range(1, len(metrics) + 1))
    for m in metrics:
        assert m["total_steps"] == total
        for key in ("train_reward_mean", "entropy", "completion_length_mean", "zero_variance_group_fraction",
                    "grader_means", "grader_errors", "timings", "kl", "grad_norm"):
            assert key in m, key
        assert set(m["timings"]) >= {"sampling_seconds", "grading_seconds", "training_seconds"}
    return metrics


def test_grpo_run_trains_and_keeps_best_checkpoints(make_job, tiny_model_dir):
    job = make_job("grpo")
    proc = run_child(job)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = read_events(job)
    metrics = _check_well_formed(events)
    assert any(m["grad_norm"] > 0 for m in metrics), "no gradient ever flowed"
    assert [m["step"] for m in metrics if "valid_reward_mean" in m] == [3, 6, 8]
    assert _by_type(events, "metrics")[0]["data"]["step"] == 0  # the base model's validation reward
    finished = events[-1]
    assert finished["status"] == "succeeded" and finished["trained_tokens"] > 0
    ckpts = CheckpointManager(job / "checkpoints", None).list()
    names = {c.name for c in ckpts}
    assert finished["best_checkpoint"] in names and "step-8" in names and len(ckpts) <= 4
    created = {e["name"] for e in _by_type(events, "checkpoint")}
    deleted = {e["name"] for e in _by_type(events, "checkpoint_deleted")}
    assert created - deleted == names
    assert _changed(_weights(tiny_model_dir), _weights(job / "checkpoints" / "step-8"))
    # The top level loads as a plain HF model; the resume state sits beside it.
    AutoModelForCausalLM.from_pretrained(job / "checkpoints" / "step-8")
    assert (job / "checkpoints" / "step-8" / "trainer_state" / "optimizer.pt").is_file()


@pytest.mark.slow
def test_seeded_runs_are_reproducible(make_job):
    a, b = make_job("grpo", name="a"), make_job("grpo", name="b")
    assert run_child(a).returncode == 0 and run_child(b).returncode == 0
    ra = [m["train_reward_mean"] for m in _train_metrics(read_events(a))]
    rb = [m["train_reward_mean"] for m in _train_metrics(read_events(b))]
    assert ra == rb
    assert not _changed(_weights(a / "checkpoints" / "step-8"), _weights(b / "checkpoints" / "step-8"))


def test_rloo_run(make_job, tiny_model_dir):
    job = make_job("rloo")
    proc = run_child(job)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = _check_well_formed(read_events(job))
    assert any(m["grad_norm"] > 0 for m in metrics)
    assert _changed(_weights(tiny_model_dir), _weights(job / "checkpoints" / "step-8"))


def test_pause_then_resume_continues_step_counter(make_job):
    job = make_job("grpo", name="paused")
    (job / "control").write_text("pause")
    proc = run_child(job)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = read_events(job)
    assert events[-1]["status"] == "paused"
    assert _by_type(events, "checkpoint")[-1]["name"] == "step-1"
    ckpt = job / "checkpoints" / "step-1"
    assert read_checkpoint(ckpt).step == 1

    resumed = make_job("grpo", name="resumed", resume_from=str(ckpt))
    proc = run_child(resumed)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = read_events(resumed)
    assert [m["step"] for m in _train_metrics(events)] == list(range(2, 9))
    assert events[-1]["status"] == "succeeded"


def test_cancel_stops_within_seconds(make_job):
    # Many steps, so that the run is still going when the cancel arrives.
    job = make_job("grpo", hp={"n_epochs": 50, "eval_interval": 1000})
    proc = start_child(job)
    deadline = time.monotonic() + 90
    while not _train_metrics(read_events(job)):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    (job / "control").write_text("cancel")
    asked = time.monotonic()
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - asked < 10
    last = read_events(job)[-1]
    assert last["type"] == "finished" and last["status"] == "cancelled"


def test_max_wall_seconds_stops_gracefully(make_job):
    job = make_job("grpo", hp={"n_epochs": 500, "eval_interval": 1000, "max_wall_seconds": 2})
    proc = run_child(job)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = read_events(job)
    assert events[-1]["status"] == "succeeded"
    last_step = _train_metrics(events)[-1]["step"]
    assert last_step < 2000
    assert _by_type(events, "checkpoint")[-1]["name"] == f"step-{last_step}"


def test_lora_checkpoint_has_merged_model_and_adapter(make_job, tiny_model_dir):
    job = make_job("grpo", hp={"lora": {"rank": 2, "alpha": 4}})
    proc = run_child(job)
    assert proc.returncode == 0, proc.stderr[-3000:]
    top = job / "checkpoints" / "step-8"
    assert (top / "adapter" / "adapter_config.json").is_file()
    merged = _weights(top)
    assert not any("lora" in k for k in merged)
    assert _changed(_weights(tiny_model_dir), merged)
    AutoModelForCausalLM.from_pretrained(top)


def test_failing_grader_stops_job_with_error(make_job):
    # The reference is not JSON: every sample fails on the grader's side.
    broken = {"type": "json_match", "name": "broken", "reference": "{{item.answer}}"}
    job = make_job("grpo", grader=broken)
    proc = run_child(job)
    assert proc.returncode != 0
    last = read_events(job)[-1]
    assert last["type"] == "error" and last["code"] == "grader_failing"
    assert "failed on" in last["message"]


def test_partial_and_temp_checkpoints_are_ignored(tmp_path):
    root = tmp_path / "checkpoints"
    manager = CheckpointManager(root, events=None)
    (root / ".step-9-abc").mkdir()
    (root / ".step-9-abc" / "COMPLETE").write_text(json.dumps({"step": 9}))
    (root / "step-7").mkdir()  # a folder without its marker: a save that never finished
    assert manager.list() == [] and manager.best() is None
    assert read_checkpoint(root / "step-7") is None
    manager.clean_temp()
    assert not (root / ".step-9-abc").exists()


def test_resume_from_incomplete_checkpoint_fails(make_job, tmp_path):
    partial = tmp_path / "step-3"
    partial.mkdir()
    job = make_job("grpo", resume_from=str(partial))
    proc = run_child(job)
    assert proc.returncode != 0
    assert read_events(job)[-1]["type"] == "error"


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["dr_grpo", "gspo"])
def test_loss_variants_run(make_job, loss_type):
    # One epoch is enough to show the variant's TRL settings are accepted and train.
    job = make_job("grpo", hp={"loss_type": loss_type, "n_epochs": 1})
    proc = run_child(job)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_events(job)[-1]["status"] == "succeeded"


def test_lora_pause_then_resume(make_job):
    job = make_job("grpo", name="lora-paused", hp={"lora": {"rank": 2}})
    (job / "control").write_text("pause")
    assert run_child(job).returncode == 0
    resumed = make_job("grpo", name="lora-resumed", hp={"lora": {"rank": 2}},
                       resume_from=str(job / "checkpoints" / "step-1"))
    proc = run_child(resumed)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [m["step"] for m in _train_metrics(read_events(resumed))] == list(range(2, 9))


ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["a", "e", "i", "o"]}},
                 "required": ["answer"], "additionalProperties": False}
ANSWER_GRADER = {"type": "string_check", "name": "answer", "input": "{{sample.output_json.answer}}",
                 "reference": "{{item.answer}}", "operation": "eq"}
RESPONSE_FORMATS = [
    pytest.param("grpo", {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}},
                 ANSWER_GRADER, id="grpo-json_schema"),
    # A free-form object need not hold "answer": grade the text instead.
    pytest.param("rloo", {"type": "json_object"}, None, id="rloo-json_object"),
]


@pytest.mark.parametrize("algorithm, response_format, grader", RESPONSE_FORMATS)
def test_response_format_constrains_training_and_eval_samples(make_job, monkeypatch, algorithm, response_format,
                                                              grader):
    """Every completion graded, in training and in the validation eval, is a prefix of a
    valid object by construction; the cut-off ones used the whole token budget."""
    from jobs.structured.response_format import parse_response_format
    from jobs.train.rewards import GraderReward
    from jobs.train.runner import JobRun

    graded: list[tuple[bool, str]] = []  # (is the eval, completion)
    grade_texts = GraderReward.grade_texts

    def recording(self, texts, items):
        graded.extend((self.control is None, t) for t in texts)  # the eval's reward has no control file
        return grade_texts(self, texts, items)

    monkeypatch.setattr(GraderReward, "grade_texts", recording)
    max_tokens = 40
    job = make_job(algorithm, response_format=response_format, hp={
        "n_epochs": 1,                      # 4 steps: enough samples to see the constraint hold
        "eval_interval": 2,                 # evals at steps 0, 2, 4
        "max_completion_tokens": max_tokens,  # room for the object and the whitespace a random model adds
    }, grader=grader)
    # In process, so that the reward function can be watched; the child runs the same JobRun.
    assert JobRun(job).run() == 0
    events = read_events(job)
    assert events[-1]["status"] == "succeeded", events[-1]
    assert any("Sampling constrained" in e.get("message", "") for e in _by_type(events, "message"))
    assert any(m["grad_norm"] > 0 for m in _check_well_formed(events, total=4)), "no gradient ever flowed"

    new_state = parse_response_format(response_format)
    train = [t for is_eval, t in graded if not is_eval]
    evals = [t for is_eval, t in graded if is_eval]
    assert len(train) == 4 * 2 * 4 and len(evals) == 3 * 4  # steps x prompts x generations; evals x rows
    for text in train + evals:
        state = new_state().accepts(text)
        assert state is not None, text
        if state.complete:
            assert isinstance(json.loads(text), dict)
        else:  # cut off by the token limit (one character per token)
            assert len(text) == max_tokens, text
    if response_format["type"] == "json_schema":
        assert sum(new_state().accepts(t).complete for t in train) > len(train) // 2
