"""No secret on disk: judge keys and the internal token reach the trainer child through
its environment only, never through a file in the job directory or the data dir."""

from __future__ import annotations

import json
import secrets
import shutil
import threading
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from graders import GraderContext
from jobs.hyperparams import resolve_hyperparameters
from jobs.job_run import JobRun
from jobs.status import JobStatus
from jobs.store import File, Job, Project, Store, new_id, now
from jobs.trainer_secrets import (
    SECRETS_ENV,
    TrainerSecrets,
    merge_secrets,
    pop_secrets,
    secrets_env,
    split_secrets,
)
from jobs.worker import Worker, WorkerConfig
from tests.jobs.conftest import ROWS, SMALL_HP
from tests.loopback import serve


def _context(judge_key: str, internal_key: str) -> dict:
    return GraderContext(
        judges={
            "judge": {"base_url": "http://judge.example/v1", "api_key": judge_key, "model": "up"},
            "keyless": {"base_url": "http://other.example/v1"},
        },
        service_base_url="http://127.0.0.1:1/v1",
        internal_key=internal_key,
    ).model_dump()


def test_split_keeps_secrets_out_and_merge_puts_them_back():
    judge_key, internal_key = f"sk-secret-{secrets.token_hex(16)}", secrets.token_hex(16)
    context = _context(judge_key, internal_key)
    public, found = split_secrets(context)

    text = json.dumps(public)
    assert judge_key not in text and internal_key not in text
    assert "internal_key" not in public and "api_key" not in public["judges"]["judge"]
    assert public["judges"]["judge"]["base_url"] == "http://judge.example/v1"
    assert found == TrainerSecrets(internal_key=internal_key, judge_api_keys={"judge": judge_key})
    assert judge_key not in repr(found) and internal_key not in repr(found)

    assert merge_secrets(public, found) == GraderContext.model_validate(context)
    # Through the environment, as the child receives them.
    env = {"PATH": "/bin", **secrets_env(found)}
    assert merge_secrets(json.loads(text), pop_secrets(env)) == GraderContext.model_validate(context)


def test_pop_removes_the_variable_and_never_quotes_it():
    env = {SECRETS_ENV: TrainerSecrets(internal_key="tok").model_dump_json(), "PATH": "/bin"}
    assert pop_secrets(env).internal_key == "tok"
    assert env == {"PATH": "/bin"}
    assert pop_secrets(env) == TrainerSecrets()  # no variable: a hand-written spec, the demo

    env = {SECRETS_ENV: '{"internal_key": 12345678, "leaked": "sk-do-not-print"}'}
    with pytest.raises(ValueError) as err:
        pop_secrets(env)
    assert "sk-do-not-print" not in str(err.value) and "12345678" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert SECRETS_ENV not in env


def test_merge_refuses_keys_for_judges_the_spec_does_not_name():
    with pytest.raises(ValueError, match="ghost"):
        merge_secrets({}, TrainerSecrets(judge_api_keys={"ghost": "k"}))


def test_the_child_env_carries_the_job_secrets_and_not_the_workers(monkeypatch, tmp_path):
    monkeypatch.setenv("RFT_GRADER_CONTEXT", json.dumps(_context("sk-worker", "tok-worker")))
    monkeypatch.setenv("RFT_INTERNAL_TOKEN", "tok-worker")
    config = WorkerConfig(data_dir=tmp_path, database_url="sqlite://", models_dir=tmp_path)
    run = JobRun(SimpleNamespace(config=config, store=None), SimpleNamespace(job_id="ftjob-x"))
    _, run._secrets = split_secrets(_context("sk-job", "tok-job"))
    env = run._child_env()
    assert "RFT_GRADER_CONTEXT" not in env and "RFT_INTERNAL_TOKEN" not in env
    assert pop_secrets(env) == TrainerSecrets(internal_key="tok-job", judge_api_keys={"judge": "sk-job"})
    assert env["PYTHONUNBUFFERED"] == "1" and env["HF_HUB_OFFLINE"] == "1"


class KeyCheckingJudge:
    """An OpenAI-style judge that answers only the right bearer token, and records them."""

    def __init__(self, keys: set[str]) -> None:
        self.keys = keys
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            with self.lock:
                self.seen.add(token)
            if token not in self.keys:
                return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
            message = {"role": "assistant", "content": '{"result": 0.5}'}
            return {"id": "x", "object": "chat.completion", "model": "m",
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

        return app


def _judge(name: str, model: str) -> dict:
    return {"type": "score_model", "name": name, "model": model,
            "input": [{"role": "user", "content": "Answer: {{sample.output_text}}"}]}


def test_a_worker_run_job_leaves_no_secret_on_disk(tmp_path, models_dir):
    judge_key, internal_key = f"sk-secret-{secrets.token_hex(16)}", secrets.token_hex(16)
    judge = KeyCheckingJudge({judge_key, internal_key})
    # Both secrets are needed: "judge" is an operator endpoint (its api_key), "served" is
    # not, so it goes to the service URL with the internal key. A missing key means 401s,
    # grader errors on every sample, and a failed job.
    grader = {"type": "multi", "name": "both", "calculate_output": "(endpoint + served) / 2",
              "graders": {"endpoint": _judge("endpoint", "judge"), "served": _judge("served", "ft:tiny:x")}}
    hp = resolve_hyperparameters("reinforcement", "grpo", {
        **SMALL_HP,
        "n_epochs": 1,            # 4 steps: enough for several rounds of judge calls
        "num_generations": 2,     # the smallest group GRPO can rank
        "eval_interval": 1000,    # only the base-model eval and the final one
        "eval_samples": 2,        # each eval grades 2 rows
    }, len(ROWS), None)

    data = tmp_path / "data"
    (data / "files").mkdir(parents=True)
    (data / "files" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    store = Store(f"sqlite:///{data / 'rft.db'}")
    store.migrate()
    with store.session() as s:
        s.add(Project(id="proj-1", name="p", created_at=now()))
        s.flush()  # the project row first: files and jobs point at it
        s.add(File(id="file-train", project_id="proj-1", filename="train.jsonl", purpose="fine-tune", bytes=1,
                   line_count=len(ROWS), sha256="0" * 64, path="files/train.jsonl", created_at=now()))
        job = Job(id=new_id("ftjob"), project_id="proj-1", model="tiny", status=JobStatus.QUEUED, created_at=now(),
                  training_file="file-train", validation_file="file-train", seed=3, max_attempts=1,
                  method={"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": hp}})
        s.add(job)
        job_id = job.id
    store.dispose()

    with serve(judge.app()) as url:
        context = GraderContext(
            judges={"judge": {"base_url": f"{url}/v1", "api_key": judge_key, "timeout_s": 5}},
            service_base_url=f"{url}/v1", internal_key=internal_key, judge_max_retries=0,
        ).model_dump()
        models = tmp_path / "models"  # inside the walked tree, so copied model files are grepped too
        shutil.copytree(models_dir, models)
        worker = Worker(WorkerConfig(data_dir=data, database_url=f"sqlite:///{data / 'rft.db'}",
                                     models_dir=models, grader_context=context, worker_id="test"))
        assert worker.run_once()
        worker.store.dispose()

    store = Store(f"sqlite:///{data / 'rft.db'}")
    with store.session() as s:
        finished = s.get(Job, job_id)
        assert finished.status == JobStatus.SUCCEEDED, finished.error
    store.dispose()
    # The child graded with both keys (and nothing else was ever sent).
    assert judge.seen == {judge_key, internal_key}

    job_dir = data / "jobs" / job_id
    public = json.loads((job_dir / "spec.json").read_text())["grader_context"]
    assert public["judges"]["judge"]["base_url"] == f"{url}/v1"  # the context itself was written
    walked = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert job_dir / "spec.json" in walked and job_dir / "trainer.attempt-1.log" in walked
    assert any(p.parent.parent.name == "checkpoints" for p in walked)
    # Paths only in the message: a failure must not print the secret either.
    leaks = [str(p) for p in walked if judge_key.encode() in (body := p.read_bytes()) or internal_key.encode() in body]
    assert leaks == []
