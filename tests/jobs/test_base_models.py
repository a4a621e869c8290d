"""Base-model resolution (torch-free): names only, paths only when the operator allows
them, and never into the data dir or an rft checkpoint, whoever calls (the API, or the
worker re-resolving a stored job)."""

from __future__ import annotations

import json
import os

import pytest

from graders import GraderError, parse_grader
from graders.names import path_problem
from jobs.base_models import UnknownModel, resolve_base_model


def _model_folder(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    return path


@pytest.fixture
def layout(tmp_path):
    """A data dir with a registered model and a checkpoint, and a model folder outside it."""
    data = tmp_path / "data"
    _model_folder(data / "models" / "base")
    ckpt = _model_folder(data / "jobs" / "ftjob-a" / "checkpoints" / "step-0")
    (ckpt / "COMPLETE").write_text("{}")
    outside = _model_folder(tmp_path / "elsewhere" / "local-model")
    return data, ckpt, outside


def resolve(name, data, *, local=False, hub=True, data_dir=True):
    return resolve_base_model(name, data / "models", allow_local_paths=local, allow_hub=hub,
                              data_dir=data if data_dir else None)


@pytest.mark.parametrize("name, problem", [
    ("tiny", None), ("Qwen/Qwen2.5-0.5B", None), ("ft:tiny:proj:ftjob-1", None),
    ("/abs/path", "absolute"), ("../up", "'.'"), ("./here", "'.'"), (".hidden", "'.'"), ("..", "'.'"),
    ("~", "'~'"), ("~root/x", "'~'"), ("a\x00b", "NUL"), ("a\\b", "backslash"), ("a/../b", "'..'"),
    ("a//b", "empty"), ("a/", "empty"), ("a/b/c", "more than one"),
])
def test_path_problem(name, problem):
    found = path_problem(name)
    assert (found is None) if problem is None else (problem in found)


def test_registered_and_hub_names(layout):
    data, _, _ = layout
    assert resolve("base", data).location == str(data / "models" / "base")
    hub = resolve("org/model", data)
    assert not hub.is_local and hub.location == "org/model"
    with pytest.raises(UnknownModel, match="Hub models are disabled"):
        resolve("org/model", data, hub=False)
    with pytest.raises(UnknownModel, match="Unknown base model 'nope'. Registered models: base"):
        resolve("nope", data)


def test_a_relative_folder_dressed_as_a_hub_id_is_refused(layout, monkeypatch):
    # transformers would load ./jobs/ftjob-a rather than ask the hub.
    data, _, _ = layout
    monkeypatch.chdir(data)
    with pytest.raises(UnknownModel, match="names a folder on this machine"):
        resolve("jobs/ftjob-a", data)


@pytest.mark.parametrize("local", [False, True])
def test_paths_are_refused_alike_whether_or_not_they_exist(layout, local):
    data, ckpt, _ = layout
    names = [str(ckpt), str(data), str(data / "missing"), "../" + ckpt.name, "~", "~/x", "a\x00b",
             f"{ckpt}/../step-0", "x" * 600]
    messages = []
    for name in names:
        with pytest.raises(UnknownModel) as err:
            resolve(name, data, local=local)
        messages.append(str(err.value).replace(name, "<name>").replace(name[:77], "<name>"))
    if not local:
        # Every absolute path reads the same, existing or not.
        assert messages[0] == messages[1] == messages[2]
        assert "Local model paths are disabled" in messages[0]
    else:
        assert all("data directory" in m for m in messages[:3])


def test_local_paths_when_allowed(layout, tmp_path):
    data, ckpt, outside = layout
    with pytest.raises(UnknownModel, match="Local model paths are disabled"):
        resolve(str(outside), data)
    assert resolve(str(outside), data, local=True).location == str(outside)
    # A symlink outside the data dir that leads into it, or to a checkpoint anywhere.
    link = tmp_path / "link"
    link.symlink_to(ckpt)
    with pytest.raises(UnknownModel, match="data directory"):
        resolve(str(link), data, local=True)
    copy = tmp_path / "copied" / "jobs" / "ftjob-b" / "checkpoints" / "step-3"
    _model_folder(copy)
    with pytest.raises(UnknownModel, match="rft checkpoint"):
        resolve(str(copy), data, local=True)


def test_the_worker_recheck_refuses_checkpoints_without_knowing_the_data_dir(layout):
    # The worker resolves a stored job's model again (today without the data dir and
    # with local paths on): a checkpoint folder is still refused.
    data, ckpt, outside = layout
    with pytest.raises(UnknownModel, match="rft checkpoint"):
        resolve(str(ckpt), data, local=True, data_dir=False)
    assert resolve(str(outside), data, local=True, data_dir=False).location == str(outside)
    assert os.path.isdir(ckpt)


JUDGE = {"name": "j", "input": [{"role": "user", "content": "{{sample.output_text}}"}]}
MODEL_GRADERS = [
    {"type": "score_model", **JUDGE},
    {"type": "label_model", **JUDGE, "labels": ["a", "b"], "passing_labels": ["a"]},
    {"type": "reward_model", "name": "rm"},
]


@pytest.mark.parametrize("grader", MODEL_GRADERS, ids=lambda g: g["type"])
@pytest.mark.parametrize("model", ["/etc", "../x", "~", "a\x00b", "a\\b", "a/b/c", "", "m" * 513])
def test_grader_model_fields_refuse_paths(grader, model):
    with pytest.raises(GraderError) as err:
        parse_grader({**grader, "model": model})
    assert err.value.param == "model"
    multi = {"type": "multi", "name": "m", "graders": {"x": {**grader, "model": model}}, "calculate_output": "x"}
    with pytest.raises(GraderError) as err:
        parse_grader(multi)
    assert err.value.param == "graders.x.model"


@pytest.mark.parametrize("grader", MODEL_GRADERS, ids=lambda g: g["type"])
@pytest.mark.parametrize("model", ["judge", "tiny", "ft:tiny:proj:ftjob-1", "org/model"])
def test_grader_model_fields_take_names(grader, model):
    assert parse_grader({**grader, "model": model}).model == model
