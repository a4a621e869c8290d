"""No request field reaches a file its project does not own (issue 9).

A real ``rft serve`` (no worker, no inference process) with two projects: A owns a
fine-tuned model and its checkpoint (rows seeded in the store, a checkpoint folder on
disk), B probes every field that names a model, a checkpoint or a file with A's names,
with file-system paths (A's checkpoint folder, the data dir, relative, ``~``, NUL) and
with a 300-character name. Each probe is a 400 or 404 in OpenAI's error envelope, and
A's names read exactly like unknown ones. A's own names work where that is cheap to
see (without an inference process a resolved chat model answers 503, an unknown 404).
"""

from __future__ import annotations

import io
import json
import tarfile
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from tests.server import start_server

BASE = "fake-base"
CONFIG = {"model_type": "qwen2", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 64,
          "intermediate_size": 16, "num_attention_heads": 2}
A_JOB = "ftjob-paths-a"
FT_A = f"ft:{BASE}:A:{A_JOB}"
CKPT_A = f"{FT_A}:ckpt-step-1"
CKPT_ID_A = "ftckpt-paths-a"
FT_UNKNOWN = f"ft:{BASE}:A:ftjob-paths-nope"
CKPT_UNKNOWN = f"{FT_UNKNOWN}:ckpt-step-1"
LONG = "x" * 300
WEIGHTS = bytes(range(256)) * 64  # the bytes B must never get
ROWS = [{"messages": [{"role": "user", "content": f"Repeat: w{i}"}], "answer": f"w{i}"} for i in range(10)]
GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "eq"}
JUDGE_INPUT = [{"role": "user", "content": "Score: {{sample.output_text}}"}]
MODEL_GRADERS = {
    "score_model": {"type": "score_model", "name": "judge", "input": JUDGE_INPUT},
    "label_model": {"type": "label_model", "name": "label", "input": JUDGE_INPUT,
                    "labels": ["yes", "no"], "passing_labels": ["yes"]},
    "reward_model": {"type": "reward_model", "name": "rm"},
}


def _model_folder(path) -> None:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(CONFIG))
    (path / "model.safetensors").write_bytes(WEIGHTS)


def _upload(http: httpx.Client) -> str:
    body = b"".join(json.dumps(r).encode() + b"\n" for r in ROWS)
    res = http.post("/v1/files", files={"file": ("train.jsonl", io.BytesIO(body))}, data={"purpose": "fine-tune"})
    assert res.status_code == 200, res.text
    return res.json()["id"]


def _job_body(file_id: str, **change) -> dict:
    grader = change.pop("grader", GRADER)
    return {"model": BASE, "training_file": file_id,
            "method": {"type": "reinforcement", "reinforcement": {"grader": grader}}, **change}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The server, A's and B's clients, and what each owns."""
    from jobs.store import Checkpoint, Job, Model, Project, Store

    root = tmp_path_factory.mktemp("model-paths")
    data = root / "data"
    _model_folder(data / "models" / BASE)
    ckpt_rel = f"jobs/{A_JOB}/checkpoints/step-1"
    ckpt_dir = data / ckpt_rel
    _model_folder(ckpt_dir)
    (ckpt_dir / "COMPLETE").write_text(json.dumps({"step": 1, "metrics": {}}))
    server = start_server(data, env={
        "RFT_JUDGE_ENDPOINTS": json.dumps({"judge": {"base_url": "http://127.0.0.1:9/v1"}}),
        "RFT_REWARD_MODELS": json.dumps({"rm": str(root / "no-reward-model")}),
    })
    try:
        server.key("A")
        server.key("B")
        store = Store(f"sqlite:///{data / 'rft.db'}")
        with store.session() as s:
            project = s.scalar(select(Project).where(Project.name == "A"))
            s.add(Job(id=A_JOB, project_id=project.id, model=BASE, status="succeeded", training_file="file-none",
                      seed=1, method={"type": "reinforcement"}, fine_tuned_model=FT_A))
            s.flush()
            s.add(Model(id=FT_A, project_id=project.id, job_id=A_JOB, base_model=BASE, path=ckpt_rel))
            s.add(Checkpoint(id=CKPT_ID_A, job_id=A_JOB, project_id=project.id, name="step-1", step=1,
                             metrics={}, path=ckpt_rel, model_name=CKPT_A))
        store.dispose()
        a, b = server.http("A"), server.http("B")
        world = {"server": server, "a": a, "b": b, "data": data, "ckpt_dir": ckpt_dir,
                 "a_file": _upload(a), "b_file": _upload(b)}
        res = b.post("/v1/fine_tuning/jobs", json=_job_body(world["b_file"]))
        assert res.status_code == 200, res.text
        world["b_job"] = res.json()["id"]
        yield world
        a.close()
        b.close()
    finally:
        server.stop()


def path_probes(world) -> list[str]:
    """File-system paths and names no model or file may be reached by."""
    ckpt = str(world["ckpt_dir"])
    return [ckpt, str(world["data"]), f"../../jobs/{A_JOB}/checkpoints/step-1", "..", "~", "~/models",
            f"{BASE}\x00", LONG, f"{ckpt}/../step-1", "models\\" + BASE]


def envelope(res: httpx.Response, *statuses: int) -> dict:
    assert res.status_code in statuses, (res.status_code, res.text[:400])
    error = res.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert WEIGHTS[:64].hex() not in res.text
    return error


def reads_like(res_a: httpx.Response, name_a: str, res_u: httpx.Response, name_u: str) -> None:
    """Another project's name and an unknown one get the same answer, the name aside."""
    assert res_a.status_code == res_u.status_code
    err_a, err_u = res_a.json()["error"], res_u.json()["error"]
    assert {**err_a, "message": err_a["message"].replace(name_a, "<name>")} == \
        {**err_u, "message": err_u["message"].replace(name_u, "<name>")}


# --- job creation: model, training_file, validation_file, suffix -------------------

def test_job_model_refuses_paths_and_other_projects_models(world):
    b = world["b"]
    for probe in path_probes(world) + [FT_A, CKPT_A]:
        error = envelope(b.post("/v1/fine_tuning/jobs", json=_job_body(world["b_file"], model=probe)), 400)
        assert error["param"] == "model" and error["code"] == "model_not_found", (probe, error)
    for theirs, unknown in ((FT_A, FT_UNKNOWN), (CKPT_A, CKPT_UNKNOWN)):
        reads_like(b.post("/v1/fine_tuning/jobs", json=_job_body(world["b_file"], model=theirs)), theirs,
                   b.post("/v1/fine_tuning/jobs", json=_job_body(world["b_file"], model=unknown)), unknown)
    # Every absolute path reads alike, whether something is there or not.
    reads_like(b.post("/v1/fine_tuning/jobs", json=_job_body(world["b_file"], model=str(world["ckpt_dir"]))),
               str(world["ckpt_dir"]),
               b.post("/v1/fine_tuning/jobs", json=_job_body(world["b_file"], model="/no/such/folder")),
               "/no/such/folder")


def test_job_model_takes_own_and_listed_names(world):
    a = world["a"]
    for model in (BASE, FT_A):
        res = a.post("/v1/fine_tuning/jobs", json=_job_body(world["a_file"], model=model))
        assert res.status_code == 200 and res.json()["status"] == "queued", (model, res.text)
    error = envelope(a.post("/v1/fine_tuning/jobs", json=_job_body(world["a_file"], model=CKPT_A)), 400)
    assert error["code"] == "model_not_supported" and error["param"] == "model"


def test_local_model_folder_is_refused_by_default(world, tmp_path):
    outside = tmp_path / "my-model"
    _model_folder(outside)
    error = envelope(world["a"].post("/v1/fine_tuning/jobs", json=_job_body(world["a_file"], model=str(outside))),
                     400)
    assert "Local model paths are disabled" in error["message"]


@pytest.mark.parametrize("field", ["training_file", "validation_file"])
def test_job_files_are_the_callers_own(world, field):
    b = world["b"]
    for probe in path_probes(world) + [world["a_file"]]:
        error = envelope(b.post("/v1/fine_tuning/jobs", json=_job_body(world["b_file"], **{field: probe})), 400)
        assert error["param"] == field and error["code"] == "file_not_found", (probe, error)
    reads_like(b.post("/v1/fine_tuning/jobs", json=_job_body(world["b_file"], **{field: world["a_file"]})),
               world["a_file"],
               b.post("/v1/fine_tuning/jobs", json=_job_body(world["b_file"], **{field: "file-nope"})), "file-nope")
    res = world["a"].post("/v1/fine_tuning/jobs", json=_job_body(world["a_file"], validation_file=world["a_file"]))
    assert res.status_code == 200, res.text


def test_suffix_is_no_path(world):
    for suffix in ("../x", "a/b", "~", "a\x00", "s" * 65):
        error = envelope(world["b"].post("/v1/fine_tuning/jobs", json=_job_body(world["b_file"], suffix=suffix)), 400)
        assert error["param"] == "suffix"


# --- graders: judge and reward model names, in jobs and in /graders ----------------

@pytest.mark.parametrize("kind", MODEL_GRADERS)
def test_job_grader_models(world, kind):
    b, a = world["b"], world["a"]
    spec = MODEL_GRADERS[kind]
    multi = lambda g: {"type": "multi", "name": "m", "graders": {"x": g}, "calculate_output": "x"}  # noqa: E731
    for wrap, param in ((lambda g: g, "method.reinforcement.grader.model"),
                        (multi, "method.reinforcement.grader.graders.x.model")):
        for probe in path_probes(world) + [FT_A, CKPT_A]:
            res = b.post("/v1/fine_tuning/jobs", json=_job_body(world["b_file"], grader=wrap({**spec, "model": probe})))
            error = envelope(res, 400)
            assert error["param"] == param, (probe, error)
        for theirs, unknown in ((FT_A, FT_UNKNOWN), (CKPT_A, CKPT_UNKNOWN)):
            reads_like(
                b.post("/v1/fine_tuning/jobs", json=_job_body(world["b_file"], grader=wrap({**spec, "model": theirs}))),
                theirs,
                b.post("/v1/fine_tuning/jobs", json=_job_body(world["b_file"], grader=wrap({**spec, "model": unknown}))),
                unknown)
    # What the operator configured, and (for judges) what the service serves A.
    own = ["rm"] if kind == "reward_model" else ["judge", BASE, FT_A, CKPT_A]
    for model in own:
        res = a.post("/v1/fine_tuning/jobs", json=_job_body(world["a_file"], grader={**spec, "model": model}))
        assert res.status_code == 200, (model, res.text)


@pytest.mark.parametrize("kind", MODEL_GRADERS)
def test_graders_validate_and_run_refuse_paths(world, kind):
    spec = MODEL_GRADERS[kind]
    for probe in path_probes(world):
        if probe == LONG:
            continue  # a name, not a path: unknown, see the next test
        for route, extra in (("validate", {}), ("run", {"model_sample": "x"})):
            res = world["b"].post(f"/v1/fine_tuning/alpha/graders/{route}",
                                  json={"grader": {**spec, "model": probe}, **extra})
            assert envelope(res, 400)["param"] == "grader.model", (route, probe)


@pytest.mark.parametrize("kind", ["score_model", "label_model"])
def test_graders_run_never_reaches_another_projects_model(world, kind):
    # A judge reaches served models with the internal key, which owns nothing: A's model
    # is as unknown to it as a missing one, and grading fails the same way for both.
    results = []
    for model in (FT_A, FT_UNKNOWN, LONG):
        res = world["b"].post("/v1/fine_tuning/alpha/graders/run",
                              json={"grader": {**MODEL_GRADERS[kind], "model": model}, "model_sample": "x"})
        if res.status_code != 200:
            envelope(res, 400, 404)
            results.append((res.status_code, res.json()["error"]["message"].replace(model, "<name>")))
            continue
        body = res.json()
        assert body["reward"] == 0 and body["metadata"]["errors"]["model_grader_server_error"], body
        results.append((200, body["metadata"]["error_detail"].replace(model, "<name>")))
    assert results[0] == results[1]  # (the long name's detail is cut short: failed, but not alike)


# --- inference: chat/completions and completions ------------------------------------

@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_inference_model(world, path):
    def body(model):
        return {"model": model, **({"messages": [{"role": "user", "content": "hi"}]} if "chat" in path
                                   else {"prompt": "hi"})}
    b = world["b"]
    for probe in path_probes(world) + [FT_A, CKPT_A]:
        error = envelope(b.post(path, json=body(probe)), 404)
        assert error["code"] == "model_not_found", (probe, error)
    reads_like(b.post(path, json=body(FT_A)), FT_A, b.post(path, json=body(FT_UNKNOWN)), FT_UNKNOWN)
    for model in (BASE, FT_A, CKPT_A):  # resolved: only the (absent) inference process is missing
        assert world["a"].post(path, json=body(model)).status_code == 503, model


# --- models: retrieve, delete, download; checkpoint downloads -----------------------

def test_model_routes(world):
    b, a = world["b"], world["a"]
    for probe in path_probes(world) + [FT_A, CKPT_A]:
        for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/content")):
            res = b.request(method, f"/v1/models/{quote(probe, safe='')}{suffix}")
            envelope(res, 404)
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/content")):
        reads_like(b.request(method, f"/v1/models/{quote(FT_A, safe='')}{suffix}"), FT_A,
                   b.request(method, f"/v1/models/{quote(FT_UNKNOWN, safe='')}{suffix}"), FT_UNKNOWN)
    assert FT_A not in [m["id"] for m in b.get("/v1/models").json()["data"]]
    assert a.get(f"/v1/models/{quote(FT_A, safe='')}").json()["id"] == FT_A
    assert a.get(f"/v1/models/{quote(CKPT_A, safe='')}").json()["id"] == CKPT_A
    assert envelope(a.delete(f"/v1/models/{quote(CKPT_A, safe='')}"), 400)["code"] == "model_not_deletable"
    res = a.get(f"/v1/models/{quote(FT_A, safe='')}/content")
    assert res.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(res.content)) as tar:
        weights = [m for m in tar.getmembers() if m.name.endswith("model.safetensors")]
        assert tar.extractfile(weights[0]).read() == WEIGHTS


def test_checkpoint_downloads(world):
    b, a = world["b"], world["a"]
    for name in (CKPT_ID_A, "step-1", CKPT_A):
        # A's job, and A's checkpoint under B's own job.
        envelope(b.get(f"/v1/fine_tuning/jobs/{A_JOB}/checkpoints/{quote(name, safe='')}/content"), 404)
        envelope(b.get(f"/v1/fine_tuning/jobs/{world['b_job']}/checkpoints/{quote(name, safe='')}/content"), 404)
    reads_like(b.get(f"/v1/fine_tuning/jobs/{A_JOB}/checkpoints/step-1/content"), A_JOB,
               b.get("/v1/fine_tuning/jobs/ftjob-nope/checkpoints/step-1/content"), "ftjob-nope")
    for probe in path_probes(world):
        envelope(b.get(f"/v1/fine_tuning/jobs/{world['b_job']}/checkpoints/{quote(probe, safe='')}/content"), 404)
    for name in (CKPT_ID_A, "step-1", CKPT_A):
        assert a.get(f"/v1/fine_tuning/jobs/{A_JOB}/checkpoints/{quote(name, safe='')}/content").status_code == 200


# --- files -------------------------------------------------------------------------

def test_file_routes(world):
    b = world["b"]
    for probe in path_probes(world) + [world["a_file"]]:
        for method, suffix in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
            envelope(b.request(method, f"/v1/files/{quote(probe, safe='')}{suffix}"), 404)
    reads_like(b.get(f"/v1/files/{world['a_file']}"), world["a_file"], b.get("/v1/files/file-nope"), "file-nope")
    assert world["a"].get(f"/v1/files/{world['a_file']}/content").status_code == 200


# --- the unsafe setting ------------------------------------------------------------

def test_local_paths_when_the_operator_allows_them(tmp_path):
    data = tmp_path / "data"
    _model_folder(data / "models" / BASE)
    ckpt = data / "jobs" / "ftjob-x" / "checkpoints" / "step-0"
    _model_folder(ckpt)
    (ckpt / "COMPLETE").write_text("{}")
    outside = tmp_path / "operator-models" / "local"
    _model_folder(outside)
    link = tmp_path / "link-to-checkpoint"
    link.symlink_to(ckpt)
    server = start_server(data, env={"RFT_ALLOW_LOCAL_MODEL_PATHS": "true"})
    try:
        with server.http("solo") as http:
            file_id = _upload(http)
            res = http.post("/v1/fine_tuning/jobs", json=_job_body(file_id, model=str(outside)))
            assert res.status_code == 200 and res.json()["model"] == str(outside), res.text
            # Still never the data dir, a checkpoint, or a way into them.
            for probe in (str(ckpt), str(data), str(link), f"{outside}/../local", "~/x", "../x"):
                error = envelope(http.post("/v1/fine_tuning/jobs", json=_job_body(file_id, model=probe)), 400)
                assert error["param"] == "model", probe
    finally:
        server.stop()
    log = (data.parent / f"serve-{server.port}.log").read_text()
    assert "RFT_ALLOW_LOCAL_MODEL_PATHS is on" in log and str(outside) in log
